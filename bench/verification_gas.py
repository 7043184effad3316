"""Gas of the on-chain verification protocol, on a fresh local anvil with the contracts that
`tessera devnet up` deploys (default parameters), all in one run.

Measured: post_root (a job's first round, a later round; 2 and 64 workers: one transaction per
round whatever the number of workers); open_challenge (the first one, then a 2-leaf and a
64-leaf round tree, i.e. a proof of 1 and 6 hashes); answer; vote (an ordinary vote and the one
that reaches the quorum); resolve (upheld: slash + jail + split + burn; rejected; no quorum);
claim_reward. Approvals are not counted. In the 64-worker round the challenged worker's leaf
is real and signed; the other 63 leaves stand in for the other workers (the contract never
reads them).

    .venv/bin/python bench/verification_gas.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from eth_account import Account
from eth_utils import keccak
from rich.console import Console
from rich.table import Table

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import DEPLOYER, Devnet, free_port
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.validators import Validators
from tessera.chain.verification import Verification
from tessera.protocol import commitment as cm
from tessera.protocol import messages
from tessera.protocol.wire import BidMessage

RESULTS = Path(__file__).parent / "results" / "verification_gas.json"
TENANT = 5
STAKE = 100 * 10**18
PRICE = 1_000_000
CHECKPOINTS = 51  # H = 100, k = 2


def fresh_accounts(network, count: int) -> list:
    funder = Chain(network, devnet_account(DEPLOYER))
    accounts = [Account.create() for _ in range(count)]
    for account in accounts:
        funder.send(funder.stake_token.functions.transfer(account.address, 1_000 * 10**18))
        funder.w3.eth.wait_for_transaction_receipt(funder.w3.eth.send_transaction(
            {"from": funder.address, "to": account.address, "value": 10**18}))
    return accounts


def lease_job(network, tenant: Market, providers: list) -> tuple[int, list[int]]:
    order_id, _ = tenant.create_order(b"\x02" * 32, "", 1, 0, 2 * PRICE, 3600, len(providers),
                                      2 * PRICE * len(providers))
    expiry = tenant.chain.block_timestamp() + 3600
    leases = []
    for account in providers:
        typed = messages.bid_typed_data(network.chain_id, tenant.address, order_id,
                                        account.address, PRICE, order_id, expiry)
        bid = BidMessage(order_id=order_id, provider=account.address, price_per_gpu_hour=PRICE,
                         nonce=order_id, expiry=expiry, signature=messages.sign(account, typed))
        leases.append(tenant.accept_bid(bid)[0])
    return order_id, leases


def signed_round(network, ver: Verification, providers, order_id, leases, rnd, workers: int):
    """The real providers' signed commitments, padded with stand-in leaves to `workers`."""
    expiry = ver.chain.block_timestamp() + 3600
    signed = []
    for account, lease_id in zip(providers, leases, strict=True):
        c = cm.Commitment(job=order_id, round=rnd, lease_id=lease_id, provider=account.address,
                          result_hash=cm.hex32(keccak(b"r%d %d" % (rnd, lease_id))),
                          checkpoint_root=cm.hex32(keccak(b"c%d %d" % (rnd, lease_id))),
                          checkpoints=CHECKPOINTS, expiry=expiry)
        signed.append(ver.sign_commitment(account, c))
    leaves = [ver.leaf(s.commitment) for s in signed]
    leaves += [keccak(b"stand-in %d %d" % (rnd, i)) for i in range(workers - len(leaves))]
    return signed, cm.round_tree(leaves)


def advance(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


def measure(network) -> dict:
    providers = fresh_accounts(network, 2)
    for i, account in enumerate(providers):
        ProviderRegistry(Chain(network, account)).register(
            STAKE * 5, "cpu-x86_64", 1, 8192, 1000, f"http://127.0.0.1:{21000 + i}", PRICE)
    validators = fresh_accounts(network, 5)
    for account in validators:
        Validators(Chain(network, account)).register(STAKE)
    vals = [Verification(Chain(network, v)) for v in validators]
    for v in vals:  # approvals are not part of the figures
        StakeToken(v.chain).ensure_allowance(v.address, 10**24)
    tenant = Market(Chain(network, devnet_account(TENANT)))
    ver = Verification(tenant.chain)
    order_id, leases = lease_job(network, tenant, providers)
    gas: dict[str, int] = {}

    rounds = {}
    for rnd, workers in enumerate([2, 2, 64, 2]):
        signed, tree = signed_round(network, ver, providers, order_id, leases, rnd, workers)
        rounds[rnd] = (signed, tree)
        receipt = ver.post_root(order_id, rnd, tree)
        label = "first round of a job" if rnd == 0 else "later round"
        gas[f"post_root ({workers} workers, {label})"] = receipt["gasUsed"]

    def challenge(rnd: int, worker: int, by: Verification) -> tuple[int, int]:
        signed, tree = rounds[rnd]
        cid, receipts = by.open_challenge(signed[worker], tree, segment=7, evidence=keccak(b"e"))
        return cid, receipts[-1]["gasUsed"]

    # upheld, on a 2-worker round: votes, the deciding vote, resolve, claim. The first challenge
    # also takes the contract's token balance from zero to non-zero (an ERC-20 storage cost).
    cid, gas["open_challenge (first ever; 2-leaf tree, proof of 1)"] = challenge(1, 1, vals[0])
    gas["answer"] = Verification(Chain(network, providers[1])).answer(cid, keccak(b"o"))["gasUsed"]
    gas["vote"] = vals[1].vote(cid, True)["gasUsed"]
    vals[2].vote(cid, True)
    gas["vote (reaches the quorum)"] = vals[3].vote(cid, True)["gasUsed"]
    gas["resolve: upheld (slash, jail, split, burn)"] = ver.resolve(cid).receipt["gasUsed"]
    gas["claim_reward"] = vals[1].claim_reward(cid)["gasUsed"]

    # rejected on a later 2-worker round, no quorum on the 64-worker round (both with a non-zero
    # round index and token balance, so that the two opens differ only by the proof)
    cid, gas["open_challenge (2-leaf tree, proof of 1)"] = challenge(3, 0, vals[4])
    for v in vals[:3]:
        v.vote(cid, False)
    gas["resolve: rejected (bond to provider)"] = ver.resolve(cid).receipt["gasUsed"]
    cid, gas["open_challenge (64-leaf tree, proof of 6)"] = challenge(2, 0, vals[4])
    vals[0].vote(cid, True)
    advance(ver.chain, ver.params().vote_period)
    gas["resolve: no quorum (bond returned)"] = ver.resolve(cid).receipt["gasUsed"]
    return gas


def main() -> None:
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    devnet = Devnet(home / "devnet")
    network = devnet.up(port=free_port())
    try:
        gas = measure(network)
        params = Verification(Chain(network)).params()
    finally:
        devnet.down()
    table = Table(title="Verification gas on anvil (default parameters; approvals not counted)")
    table.add_column("transaction")
    table.add_column("gas", justify="right")
    for name, used in gas.items():
        table.add_row(name, f"{used:,}")
    console.print(table)
    quorum = 3  # 5 validators, the challenger excluded: ceil(4 x 2/3)
    challenge_total = (gas["open_challenge (first ever; 2-leaf tree, proof of 1)"] + gas["answer"]
                       + (quorum - 1) * gas["vote"] + gas["vote (reaches the quorum)"]
                       + gas["resolve: upheld (slash, jail, split, burn)"] + quorum * gas["claim_reward"])
    console.print(f"one upheld challenge end to end (open, answer, {quorum} votes, resolve, "
                  f"{quorum} claims): {challenge_total:,} gas")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"gas": gas, "upheld_challenge_total": challenge_total,
                                   "params": params.__dict__}, indent=2))
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
