"""The Verification wrappers against a real anvil with the contracts `tessera devnet up` deploys:
a two-worker job posts a round root, a validator challenges one commitment, and each outcome
(upheld, rejected, no quorum) moves exactly the tokens the contract's event says."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils import keccak

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import DEPLOYER
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.verification import Outcome, Verification
from tessera.errors import ChainError, TxRefused
from tessera.protocol import commitment as cm
from tessera.protocol import messages
from tessera.protocol.wire import BidMessage

TENANT = 5
VALIDATOR_COUNT = 5
STAKE = 100 * 10**18
PRICE = 1_000_000


@pytest.fixture(scope="module")
def network(tmp_path_factory, private_devnet):
    with private_devnet(tmp_path_factory.mktemp("verification")) as (_, network):
        yield network


def fresh_accounts(network, count: int) -> list:
    """New keys, given gas money and stake tokens by the devnet deployer (the minter)."""
    funder = Chain(network, devnet_account(DEPLOYER))
    accounts = [Account.create() for _ in range(count)]
    for account in accounts:
        funder.send(funder.stake_token.functions.transfer(account.address, 1_000 * 10**18))
        funder.w3.eth.wait_for_transaction_receipt(funder.w3.eth.send_transaction(
            {"from": funder.address, "to": account.address, "value": 10**18}))
    return accounts


def lease_job(network, tenant: Market, providers: list) -> tuple[int, list[int]]:
    """A two-node order and one lease per provider, accepted from real signed bids."""
    order_id, _ = tenant.create_order(b"\x01" * 32, "", 1, 0, 2 * PRICE, 3600, len(providers),
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


@pytest.fixture(scope="module")
def scene(network):
    validators = fresh_accounts(network, VALIDATOR_COUNT)
    for account in validators:
        chain = Chain(network, account)
        StakeToken(chain).ensure_allowance(chain.validators.address, STAKE)
        chain.send(chain.validators.functions.register(STAKE))
    tenant = Market(Chain(network, devnet_account(TENANT)))
    return validators, tenant


@pytest.fixture
def providers(network):
    """Two newly registered providers per test (a test may slash and jail one)."""
    accounts = fresh_accounts(network, 2)
    for i, account in enumerate(accounts):
        ProviderRegistry(Chain(network, account)).register(
            STAKE * 3, "cpu-x86_64", 1, 8192, 1000, f"http://127.0.0.1:{20000 + i}", PRICE)
    return accounts


def advance(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


def post_round(network, tenant: Market, providers, order_id, leases, rnd=0):
    ver = Verification(tenant.chain)
    now = tenant.chain.block_timestamp()
    signed = []
    for account, lease_id in zip(providers, leases, strict=True):
        c = cm.Commitment(job=order_id, round=rnd, lease_id=lease_id, provider=account.address,
                          result_hash=cm.hex32(keccak(b"result %d" % lease_id)),
                          checkpoint_root=cm.hex32(keccak(b"checkpoints %d" % lease_id)),
                          checkpoints=51, expiry=now + 3600)
        signed.append(Verification(Chain(network, account)).sign_commitment(account, c))
    tree = ver.round_tree(signed)
    ver.post_root(order_id, rnd, tree)
    return signed, tree


def stake_balance(chain: Chain, address: str) -> int:
    return chain.call(chain.stake_token.functions.balanceOf(address))


def test_upheld_on_anvil(network, scene, providers):
    validators, tenant = scene
    order_id, leases = lease_job(network, tenant, providers)
    signed, tree = post_round(network, tenant, providers, order_id, leases)
    ver = Verification(tenant.chain)
    assert ver.round(order_id, 0).tree == tree.tree_hash and not ver.round_finalized(order_id, 0)
    params = ver.params()
    assert params == Verification(Chain(network)).params()  # readable without an account

    challenger = Verification(Chain(network, validators[0]))
    cid, receipts = challenger.open_challenge(signed[1], tree, segment=4, evidence=keccak(b"report"))
    assert len(receipts) == 2  # approval + challenge
    record = challenger.challenge(cid)
    # 2/3 of the stake of the four validators who are not the challenger: three votes
    quorum = (4 * STAKE * params.quorum_bps + 9_999) // 10_000
    assert (record.provider, record.quorum, record.status) == \
        (providers[1].address, quorum, Outcome.OPEN)

    answered = Verification(Chain(network, providers[1])).answer(cid, keccak(b"opening"))
    assert answered["status"] == 1
    for account in validators[1:4]:
        Verification(Chain(network, account)).vote(cid, guilty=True)
    assert ver.verdict(cid) == Outcome.UPHELD
    with pytest.raises(TxRefused, match="already decided"):
        Verification(Chain(network, validators[4])).vote(cid, guilty=False)

    chain = tenant.chain
    before = {a: stake_balance(chain, a) for a in (validators[0].address, tenant.chain.address)}
    supply = chain.call(chain.stake_token.functions.totalSupply())
    stake_before = ProviderRegistry(chain).provider_record(providers[1].address)["stake"]
    result = Verification(Chain(network, devnet_account(9))).resolve(cid)  # anyone resolves
    assert result.outcome == Outcome.UPHELD and result.slashed == params.slash_amount
    assert result.slashed == result.to_challenger + result.to_tenant + result.to_voters + result.burned
    assert stake_balance(chain, validators[0].address) == \
        before[validators[0].address] + params.min_bond + result.to_challenger
    assert stake_balance(chain, tenant.chain.address) == before[tenant.chain.address] + result.to_tenant
    assert chain.call(chain.stake_token.functions.totalSupply()) == supply - result.burned
    record = ProviderRegistry(chain).provider_record(providers[1].address)
    assert record["stake"] == stake_before - params.slash_amount
    assert record["jailed_until"] > chain.block_timestamp()
    assert ver.proven(order_id, 0, leases[1]) and not ver.proven(order_id, 0, leases[0])
    assert ver.cheated(leases[1]) and not ver.cheated(leases[0])   # the lease, any round

    voter = Verification(Chain(network, validators[2]))
    got = stake_balance(chain, validators[2].address)
    voter.claim_reward(cid)
    assert stake_balance(chain, validators[2].address) == got + result.to_voters // 3
    with pytest.raises(TxRefused, match="reward already claimed"):
        voter.claim_reward(cid)
    advance(chain, params.challenge_window)
    assert ver.round_finalized(order_id, 0)


def test_rejected_and_expired_on_anvil(network, scene, providers):
    validators, tenant = scene
    order_id, leases = lease_job(network, tenant, providers)
    signed, tree = post_round(network, tenant, providers, order_id, leases)
    chain = tenant.chain
    params = Verification(chain).params()

    # the tenant challenges worker 0: all five validators are eligible, quorum 4
    cid, _ = Verification(chain).open_challenge(signed[0], tree, segment=0, evidence=keccak(b"r"))
    for account in validators[:4]:
        Verification(Chain(network, account)).vote(cid, guilty=False)
    provider_before = stake_balance(chain, providers[0].address)
    result = Verification(chain).resolve(cid)
    assert result.outcome == Outcome.REJECTED and result.slashed == 0
    assert result.bond_to_provider + result.to_voters == params.min_bond
    assert stake_balance(chain, providers[0].address) == provider_before + result.bond_to_provider

    # a validator challenges worker 1, only two vote: no quorum by the deadline, bond back
    challenger = Verification(Chain(network, validators[4]))
    cid, _ = challenger.open_challenge(signed[1], tree, segment=1, evidence=keccak(b"r2"))
    for account in validators[:2]:
        Verification(Chain(network, account)).vote(cid, guilty=True)
    with pytest.raises(TxRefused, match="not decided yet"):
        challenger.resolve(cid)
    advance(chain, params.vote_period)
    before = stake_balance(chain, validators[4].address)
    result = challenger.resolve(cid)
    assert result.outcome == Outcome.EXPIRED and result.bond_returned == params.min_bond
    assert stake_balance(chain, validators[4].address) == before + params.min_bond
    # the window has passed too: no more challenges, and the round is final
    with pytest.raises(TxRefused, match="challenge window closed"):
        challenger.open_challenge(signed[0], tree, segment=0, evidence=keccak(b"late"))
    assert Verification(chain).round_finalized(order_id, 0)


def test_wrapper_refuses_bad_input_before_sending(network, scene, providers):
    validators, tenant = scene
    order_id, leases = lease_job(network, tenant, providers)
    signed, tree = post_round(network, tenant, providers, order_id, leases)
    ver = Verification(tenant.chain)
    swapped = cm.SignedCommitment(commitment=signed[0].commitment, signature=signed[1].signature)
    with pytest.raises(ChainError, match="not by its provider"):
        ver.round_tree([swapped, signed[1]])
    other = cm.Commitment(**{**signed[0].commitment.model_dump(), "round": 5})
    with pytest.raises(ValueError, match="not in this round's tree"):
        ver.open_challenge(ver.sign_commitment(providers[0], other), tree, 0, keccak(b"x"))
    with pytest.raises(TxRefused, match="caller is not the job's tenant"):
        Verification(Chain(network, validators[0])).post_root(order_id, 1, tree)
    with pytest.raises(TxRefused, match="round already posted or skipped"):
        ver.post_root(order_id, 0, tree)


def test_the_spot_check_randomness_of_a_posted_round_is_its_roots_block(network, scene, providers):
    """What `tessera job resume` draws from for a round whose root was posted before the
    restart: the block that holds that root, not the latest one (which a restarted tenant
    could pick by choosing when to restart)."""
    _, tenant = scene
    order_id, leases = lease_job(network, tenant, providers)
    ver = Verification(tenant.chain)
    post_round(network, tenant, providers, order_id, leases, rnd=0)
    [posted] = tenant.chain.events("Verification", "RootPosted", 0,
                                   argument_filters={"job": order_id, "round_index": 0})
    advance(tenant.chain, 5)   # later blocks
    assert ver.root_block_hash(order_id, 0) == bytes(posted["blockHash"])
    assert ver.root_block_hash(order_id, 0) != bytes(tenant.chain.w3.eth.get_block("latest")["hash"])
    with pytest.raises(ChainError, match="no root of round 1"):
        ver.root_block_hash(order_id, 1)
