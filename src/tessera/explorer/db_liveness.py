"""The explorer's tables of Uptime's inclusion challenges (derive_liveness.py writes them).

A challenge (`Uptime.challenge_inclusions`) names a set of a validator's reported providers by
registry index (its `named` bitmap, like a report's words), so the registry's order is kept too:
- `RegistryIndex`: one row per `ProviderRegistered`, its registry index (its place among them in
  chain order, as `ProviderRegistry.index_of` says); a per-event row;
- `LivenessChallenge`: one entity row per challenge, from `InclusionsChallenged` through its
  answers (`InclusionAnswered`: the count and the bond paid) to `ChallengeResolved`;
- `LivenessNamed`: one row per provider a challenge names (index and address), written once by
  its `InclusionsChallenged` (a per-event row); who answered for it is its `InclusionAnswered`
  event (indexed by provider), read raw.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tessera.explorer.db_base import Base, BigAmount


class RegistryIndex(Base):
    """A provider's registry index: the bit liveness reports and challenges give it."""

    __tablename__ = "explorer_registry_indices"
    registry_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    provider: Mapped[str] = mapped_column(String(42), unique=True)
    tx_hash: Mapped[str] = mapped_column(String(66), index=True)     # a rollback deletes by it


class LivenessChallenge(Base):
    """An Uptime inclusion challenge of a validator's liveness report and its outcome: open,
    answered (every named beat shown, here or on another challenge of the epoch) or resolved
    (`unanswered` beats not shown: the validator slashed, the challenger's share to it, the
    remainder of the slash burned). Either way the bond less the answer fees paid goes back to the
    challenger (`bond_returned`)."""

    __tablename__ = "explorer_liveness_challenges"
    __table_args__ = (Index("ix_liveness_challenge_validator", "validator", "challenge_id"),)
    challenge_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    validator: Mapped[str] = mapped_column(String(42))
    epoch: Mapped[int] = mapped_column(BigAmount)
    challenger: Mapped[str] = mapped_column(String(42))
    named_count: Mapped[int] = mapped_column(BigAmount)
    bond: Mapped[int] = mapped_column(BigAmount)
    answer_by_epoch: Mapped[int] = mapped_column(BigAmount)
    status: Mapped[str] = mapped_column(String(10))        # open | answered | resolved
    opened_at: Mapped[int] = mapped_column(BigInteger)
    opened_tx: Mapped[str] = mapped_column(String(66))
    answered: Mapped[int] = mapped_column(BigAmount, default=0)       # beats shown on it
    paid: Mapped[int] = mapped_column(BigAmount, default=0)           # of the bond, to answerers
    unanswered: Mapped[int] = mapped_column(BigAmount, default=0)     # at the resolution
    slashed: Mapped[int] = mapped_column(BigAmount, default=0)
    to_challenger: Mapped[int] = mapped_column(BigAmount, default=0)  # the slash's share
    burned: Mapped[int] = mapped_column(BigAmount, default=0)
    bond_returned: Mapped[int] = mapped_column(BigAmount, default=0)  # bond - paid, to the challenger
    resolved_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class LivenessNamed(Base):
    """A provider a challenge names: its registry index and address (None: an index the
    database never saw registered)."""

    __tablename__ = "explorer_liveness_named"
    __table_args__ = (Index("ix_liveness_named_provider", "provider", "challenge_id"),)
    challenge_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    registry_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    provider: Mapped[str | None] = mapped_column(String(42), nullable=True)
    tx_hash: Mapped[str] = mapped_column(String(66), index=True)     # a rollback deletes by it
