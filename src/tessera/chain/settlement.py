"""Settlement.vy: a verified lease's pay, released round by round as its job's rounds become
final in Verification (docs/verification.md). The escrow stays in the Market."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from tessera.chain.client import tx_hash
from tessera.chain.contract import ContractWrapper
from tessera.chain.verification import Verification
from tessera.errors import TxRefused


@dataclass(frozen=True)
class Release:
    """A verified lease's release state (`Settlement.releases`; all zero before its first)."""
    next_round: int   # the next round of the job to walk (0: from the job's first round)
    until: int        # pay for [start, until) is released (0: nothing yet)
    proven: int       # gross pay withheld: rounds proven to cheat, and every round (and the
                      # time after the last root) walked once a cheat is proven for the lease
    refunded: int     # sent back to the tenant besides downtime (withheld pay, the close)


@dataclass(frozen=True)
class PayRelease:
    """One `release` transaction, from its PayReleased event."""
    from_round: int
    to_round: int
    released_until: int
    amount: int     # gross pay newly payable to the provider
    withheld: int   # gross pay of the rounds walked that are proven or forfeited
    refund: int     # the part of it sent back to the tenant now
    tx: str


# What each refusal of Settlement.release means, for whoever reads the error.
RELEASE_REFUSALS = {
    "settlement: round not final": "a round in the range is inside its challenge window or has a "
                                   "challenge open (Verification.round_finalized is false); "
                                   "retry later",
    "settlement: round not posted": "the job has fewer round roots on chain than asked for",
    "settlement: nothing to release": "every posted final round and all time older than the "
                                      "release delay are released already",
    "settlement: too many rounds at once": "at most MAX_RELEASE_ROUNDS rounds per transaction",
    "settlement: lease not verified": "the lease's order is not verified: its pay streams by time",
    "settlement: unknown lease": "no such lease",
}


class Settlement(ContractWrapper):
    """Releasing verified leases' pay, with refusals in words. Anyone may release."""

    NAME = "Settlement"

    @cached_property
    def max_release_rounds(self) -> int:
        """Rounds one `release` transaction may walk (Settlement.MAX_RELEASE_ROUNDS)."""
        return self._call("MAX_RELEASE_ROUNDS")

    def release_delay(self) -> int:
        """Seconds (challenge window + root grace) after which pay for time that no round root
        covers is released anyway."""
        return self._call("release_delay")

    def releases(self, lease_id: int) -> Release:
        return Release(**self._struct("releases", lease_id))

    def final_rounds(self, lease_id: int, job: int) -> tuple[int, int]:
        """(start, end): the run of final rounds from the lease's next round (or the job's first
        round) to release, at most MAX_RELEASE_ROUNDS of them; `end` is the `up_to_round` that
        `release` accepts."""
        verification = Verification(self.chain)
        start = max(self.releases(lease_id).next_round, verification.first_round(job))
        posted = verification.rounds_posted(job)
        end = start
        while end < min(posted, start + self.max_release_rounds) and \
                verification.round_finalized(job, end):
            end += 1
        return start, end

    def release(self, lease_id: int, job: int, up_to_round: int | None = None) -> PayRelease:
        """Release a verified lease's pay for its job's final rounds before `up_to_round` (by
        default: as far as they are final) and, past the last posted root, for time older than
        the release delay. Refusals are explained (RELEASE_REFUSALS)."""
        if up_to_round is None:
            up_to_round = self.final_rounds(lease_id, job)[1]
        try:
            receipt = self._send("release", lease_id, up_to_round)
        except TxRefused as exc:
            reason = next((f"{r} ({why})" for r, why in RELEASE_REFUSALS.items() if r in str(exc)),
                          None)
            if reason is None:
                raise
            raise TxRefused(f"release of lease {lease_id} up to round {up_to_round} refused: "
                            f"{reason}") from None
        args = self._event(receipt, "PayReleased")
        return PayRelease(args["from_round"], args["to_round"], args["released_until"],
                          args["amount"], args["withheld"], args["refund"], tx_hash(receipt))

    def release_ready(self, lease_id: int, job: int) -> PayRelease | None:
        """`release` as far as possible; None when there is nothing to release, so a provider
        can call it before every withdrawal of a verified lease (`job`: the lease's order)."""
        for attempt in range(2):
            try:
                return self.release(lease_id, job)
            except TxRefused as exc:
                if "settlement: nothing to release" in str(exc):
                    return None
                if attempt or "reverted on chain" not in str(exc):
                    raise
                # mined and reverted: another release of the lease (its provider's sweep,
                # anyone's: release is open to all) went first in the same block; release
                # what it left, if anything (the demo met this race, issue 11)
        return None
