"""Checks on on-chain challenges shared by the end-to-end tests where validators vote."""

from __future__ import annotations

from tessera.chain.verification import Outcome, Verification
from tessera.validator.challenges import CLAIMED


def decided_and_claimed(ver: Verification, challenge_id: int, validators, outcome: Outcome):
    """False while the challenge is open; once decided, it must be `outcome`, and the answer is
    whether every one of `validators` has claimed its reward."""
    record = ver.challenge(challenge_id)
    if record.status == Outcome.OPEN:
        return False
    assert record.status == outcome
    return all(ver.chain.call(ver.contract.functions.votes(challenge_id, v.address)) == CLAIMED
               for v in validators)
