"""Replacing a transaction that is not mined: the fee rule, and what is kept of each transaction
sent so that it can be signed again (`Chain.wait_for` does the waiting and the sending).

A transaction priced by web3 at send time (maxFeePerGas = 2 x base fee + tip, or the node's
gasPrice) stays out of every block once the base fee rises past it, as it does when a griefer
fills blocks, and every later transaction of the account waits behind its nonce: a validator's
or provider's answer to a liveness challenge would miss its window. Not mined after
`Chain.replace_after_s`, it is signed again on the same nonce, same call, same gas limit, with
the fees of `bump_fees`; beyond the cap the latest version is only sent again (a node that lost
its pool, a restart, gets it back), never raised further. A version is recorded before it is
sent (`Sent.sending`), so that one whose send gets no answer is still waited for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# +12.5 % a replacement: geth and anvil refuse one under +10 % on both the fee cap and the tip.
BUMP_NUM, BUMP_DEN = 9, 8
DYNAMIC = ("maxFeePerGas", "maxPriorityFeePerGas")
LEGACY = "gasPrice"
REPLACE_AFTER_S = 30.0   # Chain's default: a version not mined for this long is replaced
MAX_FEE_FACTOR = 10      # Chain's default cap: 10 x the first version's fee cap (or gasPrice)
MAX_TRACKED = 4_096      # transactions kept for replacement, per Chain (the oldest dropped beyond)
# A nonce seen used with no receipt for any version of ours, this long (across waits), is taken
# for another transaction's (TxDropped): a load-balanced RPC's nodes may answer the nonce of a
# block whose receipts another node has not indexed yet, for a second or two.
DROP_CONFIRM_S = 3.0


def raised(value: int) -> int:
    """`value` raised by the least a node takes as a replacement (rounded up: the rule is >=)."""
    return -(-value * BUMP_NUM // BUMP_DEN)


def fees_of(tx: Mapping[str, Any]) -> dict[str, int]:
    """The fee fields of a built transaction: EIP-1559's pair, or the legacy gasPrice."""
    if "maxFeePerGas" in tx:
        return {name: int(tx[name]) for name in DYNAMIC}
    return {LEGACY: int(tx[LEGACY])}


def fee_cap(first: Mapping[str, int], factor: int, absolute: int | None) -> int:
    """The most a version may offer per gas (maxFeePerGas, or gasPrice): `factor` times the
    first version's, and never above `absolute` wei if given."""
    cap = factor * first.get("maxFeePerGas", first.get(LEGACY, 0))
    return cap if absolute is None else min(cap, absolute)


def bump_fees(old: Mapping[str, int], *, base_fee: int, tip: int,
              cap: int) -> dict[str, int] | None:
    """The fees of the next version, or None where the least valid raise is over `cap`.

    EIP-1559: the tip at least `raised(old tip)` and the node's suggested `tip`; the fee cap at
    least `raised(old cap)` and 2 x the current `base_fee` + the new tip (the margin web3 gives
    a first send: two full blocks of +12.5 % each way), held at `cap` where that is more. The
    tip never exceeds the fee cap. Legacy: gasPrice at least `raised(old)` and the node's
    current price (`tip`), held at `cap`. Amounts are wei per gas (integers)."""
    if LEGACY in old:
        least = raised(old[LEGACY])
        return None if least > cap else {LEGACY: min(max(least, tip), cap)}
    least_fee, least_tip = raised(old["maxFeePerGas"]), raised(old["maxPriorityFeePerGas"])
    if least_fee > cap:   # (the old tip is at most the old fee cap, so least_tip is too)
        return None
    new_tip = max(least_tip, tip)
    new_fee = min(max(least_fee, 2 * base_fee + new_tip), cap)
    return {"maxFeePerGas": new_fee, "maxPriorityFeePerGas": min(new_tip, new_fee)}


def fee_market(chain, legacy: bool) -> dict[str, int]:
    """`bump_fees`'s market from `chain` (a Chain): the current base fee (the latest block's, as
    web3 prices a first send, or the next block's if more) and the node's suggested tip
    (legacy: its gas price)."""
    eth = chain.w3.eth
    if legacy:
        return {"base_fee": 0, "tip": chain.rpc(lambda: eth.gas_price, what="fees")}
    return {"base_fee": chain.rpc(lambda: max(eth.fee_history(1, "latest")["baseFeePerGas"]),
                                  what="fees"),
            "tip": chain.rpc(lambda: eth.max_priority_fee, what="fees")}


def refusal(message: str) -> str:
    """What a node's refusal of a replacement means: "known" (this very version is in its
    pool already), "mined" (the nonce is used: a version of ours was mined, or is about to be),
    "underpriced" (raise more next time), "funds" (the account cannot pay the higher fee), or
    "other"."""
    text = message.lower()
    if "already known" in text or "already imported" in text:
        return "known"
    if "nonce too low" in text:
        return "mined"
    if "insufficient funds" in text:
        return "funds"
    if "underpriced" in text or "base fee" in text or "fee too low" in text:
        return "underpriced"
    return "other"


@dataclass(eq=False)   # compared and hashed by identity
class Sent:
    """One transaction (one nonce) of this process: every version sent, newest last."""
    what: str                    # the call, for messages
    tx: dict                     # the newest version's unsigned transaction (or the one refused
                                 # as underpriced: the next raise starts above it)
    raw: bytes                   # the newest version sent (not refused), signed, for a resend
    cap: int                     # fee_cap of the first version
    sent_at: float               # time.monotonic() of the last (re)send
    hashes: list[str] = field(default_factory=list)   # recorded before each is sent
    fees: list[dict[str, int]] = field(default_factory=list)   # each hash's fees
    bumping: bool = True         # False: at the cap, out of funds, or a version mined
    used_since: float | None = None   # monotonic time its nonce was first seen used, no receipt
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _before: tuple | None = field(default=None, repr=False)   # (tx, raw) before `sending`

    @property
    def nonce(self) -> int:
        return int(self.tx["nonce"])

    def sending(self, tx: dict, raw: bytes, name: str) -> None:
        """A new version `tx` (signed: `raw`; `name`: its hash, keccak(raw)), recorded BEFORE it
        is sent: a send whose answer is lost (a timeout after the node took it) is still a
        version waited for, and the one sent again. The node's refusal takes it back
        (`refused`)."""
        self._before = (self.tx, self.raw)
        self.tx, self.raw = tx, raw
        self.hashes.append(name)
        self.fees.append(fees_of(tx))

    def accepted(self) -> None:
        """The newest version is in the node's pool."""
        log.warning("%s (nonce %d, %s) not mined: replaced by %s with fees %s (were %s)",
                    self.what, self.nonce, self.hashes[0], self.hashes[-1], self.fees[-1],
                    self.fees[-2])

    def unanswered(self, error: BaseException) -> None:
        """Sending a version (a new one or the newest again) got no answer from the node (a
        timeout, a dropped connection, an HTTP error): it may have taken it, so the version
        stays one waited for; the wait goes on (its own timeout ends it, never this)."""
        log.warning("%s (nonce %d, %s): sending version %s got no answer from the node (%s: "
                    "%s): waiting for it as for every version sent", self.what, self.nonce,
                    self.hashes[0], self.hashes[-1], type(error).__name__, error)

    def replace_failed(self, error: BaseException) -> None:
        """Replacing failed before anything was sent (the fees could not be read): the next
        replacement is due `replace_after_s` later; the wait goes on."""
        log.warning("%s (nonce %d, %s) not replaced now (%s: %s): waiting on", self.what,
                    self.nonce, self.hashes[0], type(error).__name__, error)

    def refused(self, message: str) -> None:
        """The node did not take the newest version (`message`: its answer): unless it has it
        already, the version recorded by `sending` is taken back. Waiting goes on for every
        version sent whatever it said: a caller is never handed a confusing error here; only
        the wait's own timeout (or TxDropped) ends it."""
        kind = refusal(message)
        if kind == "known" or self._before is None:
            return
        tx, name = self.tx, self.hashes.pop()
        self.fees.pop()
        self.tx, self.raw = self._before
        self._before = None
        if kind == "mined":
            self.bumping = False
            log.info("%s (nonce %d): the nonce is used, a version sent is mined or about to "
                     "be: waiting for it", self.what, self.nonce)
        elif kind == "underpriced":   # the next raise starts above this one
            self.tx = tx
            log.info("%s (nonce %d): replacement %s with fees %s refused (%s): raising more "
                     "next time", self.what, self.nonce, name, fees_of(tx), message)
        elif kind == "funds":
            self.bumping = False
            log.warning("%s (nonce %d, %s): the account cannot pay the raised fees %s (%s): "
                        "waiting for the versions sent (%s), not raising them again", self.what,
                        self.nonce, self.hashes[0], fees_of(tx), message, self.fees[-1])
        else:
            log.warning("%s (nonce %d): replacement not accepted by the node: %s", self.what,
                        self.nonce, message)

    def at_cap(self) -> None:
        """The least raise is over the cap: no more raises (said once)."""
        self.bumping = False
        log.warning("%s (nonce %d, %s) not mined and its fees %s are at the cap of %d wei per "
                    "gas: waiting without raising them again", self.what, self.nonce,
                    self.hashes[0], self.fees[-1], self.cap)
