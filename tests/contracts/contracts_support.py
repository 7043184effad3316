"""Shared helpers for the contract tests: constants, test keys, EIP-712 bid signing, System."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import boa
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from tessera.protocol.money import PAYMENT_DECIMALS, STAKE_DECIMALS

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = ROOT / "src" / "tessera" / "contracts"
CONTRACT_NAMES = ("PaymentToken", "StakeToken", "ProviderRegistry", "Market", "Uptime",
                  "Validators", "Probes", "Verification", "Settlement", "HardwareReports",
                  "Timelock", "AgentBudget", "BridgeOutbox", "BridgeInbox", "TokenBridge",
                  "HyperlaneDispatcher", "ForgerySlasher", "BridgeOrders")

USD = 10**PAYMENT_DECIMALS
TSTK = 10**STAKE_DECIMALS
MIN_STAKE = 100 * TSTK
UNBONDING_PERIOD = 3600
FEE_BPS = 250
HOUR = 3600
EPOCH = 60              # Uptime epoch (seconds)
JAIL_AFTER = 5          # consecutive missed epochs that can be reported
JAIL_PERIOD = 2 * HOUR  # seconds jailed per reported outage
DOWNTIME_SLASH = TSTK   # stake slashed (and burned) per claimed epoch
CLAIM_WINDOW = HOUR     # seconds after a close during which downtime can still be claimed
REPORT_DELAY = 1        # epochs after an epoch in which its liveness reports are accepted
ANSWER_EPOCHS = 1       # epochs a late inclusion challenge has to be answered
CHALLENGE_BOND = 10 * TSTK
INCLUSION_SLASH = 50 * TSTK
# An epoch's liveness is final (is_up stops presuming it up) this many epochs after it ends.
SETTLE_EPOCHS = REPORT_DELAY + 1 + ANSWER_EPOCHS


def snekmate_search_root() -> Path:
    """The site-packages folder that holds the `snekmate` package (a namespace package)."""
    spec = importlib.util.find_spec("snekmate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("snekmate is not installed")
    return Path(list(spec.submodule_search_locations)[0]).parent


def uptime_args(registry: str, validators: str, epoch: int = EPOCH, jail_after: int = JAIL_AFTER,
                jail_period: int = JAIL_PERIOD) -> tuple:
    """Uptime's constructor arguments with the test liveness rules."""
    return (registry, validators, epoch, jail_after, jail_period, REPORT_DELAY, ANSWER_EPOCHS,
            CHALLENGE_BOND, INCLUSION_SLASH)


def key_account(i: int) -> LocalAccount:
    """Deterministic test key number `i` (test-only keys, never funded anywhere real)."""
    return Account.from_key((0x7E55E7A000 + i).to_bytes(32, "big"))


# -- EIP-712 helpers (the same typed data as tessera.protocol.messages) ----------------

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
BID_TYPE = [
    {"name": "orderId", "type": "uint256"},
    {"name": "provider", "type": "address"},
    {"name": "pricePerGpuHour", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
]


def bid_typed_data(chain_id, market, order_id, provider, price, nonce, expiry) -> dict:
    return {
        "types": {"EIP712Domain": DOMAIN_TYPE, "Bid": BID_TYPE},
        "primaryType": "Bid",
        "domain": {"name": "TesseraMarket", "version": "1", "chainId": chain_id,
                   "verifyingContract": str(market)},
        "message": {"orderId": order_id, "provider": str(provider), "pricePerGpuHour": price,
                    "nonce": nonce, "expiry": expiry},
    }


def sign_typed(account: LocalAccount, typed: dict):
    return account.sign_typed_data(full_message=typed)


def typed_digest(typed: dict) -> bytes:
    from eth_utils import keccak

    s = encode_typed_data(full_message=typed)
    return keccak(b"\x19" + s.version + s.header + s.body)


@dataclass
class System:
    owner: str
    treasury: str
    slasher: str
    outsider: LocalAccount
    tenant: LocalAccount
    tenant2: LocalAccount
    providers: list[LocalAccount]
    usd: object
    stake: object
    registry: object
    market: object
    uptime: object = None
    settlement: object = None   # deployed by the verified tests (test_market_verified)
    validators: object = None   # Uptime's: who posts liveness reports, who is slashed

    @property
    def chain_id(self) -> int:
        return boa.env.evm.patch.chain_id

    def sign_bid(self, signer: LocalAccount, order_id: int, price: int, nonce: int = 0,
                 expiry: int | None = None, provider: str | None = None,
                 chain_id: int | None = None, market: str | None = None) -> bytes:
        expiry = boa.env.timestamp + HOUR if expiry is None else expiry
        typed = bid_typed_data(chain_id or self.chain_id, market or self.market.address, order_id,
                               provider or signer.address, price, nonce, expiry)
        return bytes(sign_typed(signer, typed).signature)

    def create_order(self, tenant: LocalAccount | None = None, *, gpu_model="", min_gpus=1,
                     min_mem=0, max_price=2 * USD, duration=10 * HOUR, nodes=1,
                     deposit=None, spec_hash=b"\x11" * 32, verified=False) -> int:
        tenant = tenant or self.tenant
        if deposit is None:
            deposit = max_price * min_gpus * nodes * duration // HOUR
        with boa.env.prank(tenant.address):
            return self.market.create_order(spec_hash, gpu_model, min_gpus, min_mem, max_price,
                                            duration, nodes, deposit, verified)

    def accept(self, order_id: int, provider: LocalAccount, price: int, nonce: int = 0,
               tenant: LocalAccount | None = None, expiry: int | None = None) -> int:
        expiry = boa.env.timestamp + HOUR if expiry is None else expiry
        sig = self.sign_bid(provider, order_id, price, nonce, expiry)
        with boa.env.prank((tenant or self.tenant).address):
            return self.market.accept_bid(order_id, provider.address, price, nonce, expiry, sig)

    def held(self) -> int:
        """What the market should hold, computed from its order and lease records."""
        total = 0
        for oid in range(1, self.market.next_order_id()):
            o = self.market.orders(oid)
            if o.open:
                total += o.deposit - o.allocated
        for lid in range(1, self.market.next_lease_id()):
            lease = self.market.leases(lid)
            if self.market.verified(lease.order_id):  # open or closed: docs/verification.md
                total += (lease.budget - lease.paid - lease.downtime_refunded
                          - self.settlement.releases(lid).refunded)
            elif lease.closed_at == 0:
                total += lease.budget - lease.paid - lease.downtime_refunded
        return total




HISTORY = 256  # blocks BLOCKHASH answers for


def set_history() -> None:
    """Give the last 256 blocks distinct, known hashes (py-evm's default history is zeros)."""
    from eth_utils import keccak

    number = boa.env.evm.patch.block_number
    boa.env.evm.patch.prev_hashes = [keccak(b"block %d" % (number - 1 - i)) for i in range(HISTORY)]


def recent(depth: int = 1) -> tuple[int, bytes]:
    """A block `depth` back and its hash (after `set_history`)."""
    from eth_utils import keccak

    set_history()
    number = boa.env.evm.patch.block_number - depth
    return number, keccak(b"block %d" % number)


def heartbeat(uptime, who: str, epoch: int | None = None, depth: int = 1,
              block_hash: bytes | None = None) -> None:
    """`who` sends its Uptime heartbeat for `epoch` (default: the current one)."""
    number, good = recent(depth)
    with boa.env.prank(who):
        uptime.heartbeat(uptime.current_epoch() if epoch is None else epoch, number,
                         good if block_hash is None else block_hash)


def events(contract, name: str) -> list:
    """Decoded events called `name` from the last transaction (call right after it)."""
    return [e for e in contract.get_logs() if type(e).__name__ == name]


# -- EIP-2612 permits (test_tokens, test_market) --------------------------------------
PERMIT_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


def _domain(token) -> dict:
    return {"name": "Tessera USD", "version": "1", "chainId": boa.env.evm.patch.chain_id,
            "verifyingContract": token.address}


def _typed(token, primary: str, fields: list, message: dict) -> dict:
    return {"types": {"EIP712Domain": DOMAIN_TYPE, primary: fields}, "primaryType": primary,
            "domain": _domain(token), "message": message}


def _vrs(account, typed):
    sig = account.sign_typed_data(full_message=typed)
    return sig.v, sig.r.to_bytes(32, "big"), sig.s.to_bytes(32, "big")


# -- Verification deployments (test_verification, test_market_verified) ---------------
WINDOW = HOUR
VOTE_PERIOD = HOUR
BOND = 10 * TSTK
SLASH = 100 * TSTK
CHALLENGER_BPS, TENANT_BPS = 2_500, 5_000
VOTER_REWARD = 6 * TSTK
QUORUM_BPS = 6_667
JAIL = 7 * 24 * HOUR
CHECKPOINTS = 51  # H = 100 inner steps, k = 2
OPEN, UPHELD, REJECTED, EXPIRED = 1, 2, 3, 4

VALIDATORS = [key_account(60 + i) for i in range(5)]
LATE_VALIDATOR = key_account(70)


def deployer(n: int) -> str:
    """A dedicated deployer per use, so that every address this file deploys to always holds
    the same contract: titanoboa keeps storage traces per address across its rollbacks and
    decodes them with the current contract's layout when it describes a revert."""
    return key_account(80 + n).address


def deploy_verification(system, partials, vals, by: int = 0, **overrides):
    args = dict(market_=system.market.address, registry_=system.registry.address,
                validators_=vals.address, challenge_window_=WINDOW, vote_period_=VOTE_PERIOD,
                min_bond_=BOND, slash_amount_=SLASH, challenger_bps_=CHALLENGER_BPS,
                tenant_bps_=TENANT_BPS, voter_reward_=VOTER_REWARD, quorum_bps_=QUORUM_BPS,
                jail_period_=JAIL)
    args.update(overrides)
    with boa.env.prank(deployer(by)):
        ver = partials["Verification"].deploy(*args.values())
    if hasattr(vals, "set_slasher"):  # a real Validators: Verification locks voters' stake
        with boa.env.prank(vals.owner()):
            vals.set_slasher(ver.address, True)
    # Votes weigh stake at the block before a challenge opens: start a new block (same time),
    # so that validators registered so far have weight.
    boa.env.evm.patch.block_number += 1
    return ver
