"""Why each slash happened, when one transaction holds several (hand-made events, no chain).

Anyone may call `Market.claim_downtime` or `Verification.resolve`, so a contract can make two
slashes in one transaction; each must be blamed on its own cause (an outsider found lease #1's
downtime shown as the reason for another provider's slash)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.explorer import db
from tessera.explorer.db import make_engine
from tessera.explorer.derive import apply_event, event_columns
from tessera.protocol.events import EventRecord, args_json

A, B, TENANT = (Web3.to_checksum_address("0x" + c * 40) for c in "abc")
TX = ["0x" + f"{i:064x}" for i in range(10)]
REGISTERED = dict(stake=200 * 10**18, gpu_count=1, gpu_memory_mb=64_000, benchmark_score=1,
                  endpoint="http://x", price_floor=10**6)


def _record(n: int, log: int, contract: str, event: str, tx: str, **args) -> EventRecord:
    return EventRecord(block_number=n, block_hash="0x" + f"{n:064x}", timestamp=1_800_000_000 + 60 * n,
                       tx_hash=tx, log_index=log, contract=contract, event=event, args=args)


def _claim(n, log, tx, lease, provider, stake):
    return [_record(n, log, "ProviderRegistry", "Slashed", tx, provider=provider, amount=stake,
                    recipient=TENANT, slasher=A),
            _record(n, log + 1, "Market", "DowntimeClaimed", tx, lease_id=lease, tenant=TENANT,
                    provider=provider, epochs=[1], amount=5, refund=5, overdrawn=0,
                    stake_slashed=stake, claimed_by=TENANT)]


def test_each_slash_of_a_transaction_gets_its_own_cause(tmp_path):
    records = [_record(1, 0, "ProviderRegistry", "ProviderRegistered", TX[1], provider=A, gpu_model="H100",
                       **REGISTERED),
               _record(1, 1, "ProviderRegistry", "ProviderRegistered", TX[1], provider=B, gpu_model="H100",
                       **REGISTERED),
               # two providers' downtime claimed in one transaction (lease 1 of A, lease 2 of B) ...
               *_claim(2, 0, TX[2], 1, A, 10**18), *_claim(2, 2, TX[2], 2, B, 2 * 10**18),
               # ... and two leases of one provider in another, then a slash with no cause.
               *_claim(3, 0, TX[3], 3, B, 3 * 10**18), *_claim(3, 2, TX[3], 4, B, 4 * 10**18),
               _record(3, 4, "ProviderRegistry", "Slashed", TX[3], provider=A, amount=5, recipient=TENANT,
                       slasher=TENANT)]
    engine = make_engine(f"sqlite:///{tmp_path}/causes.db")
    with Session(engine) as session, session.begin():
        for r in records:
            session.add(db.Event(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                                 tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract,
                                 event=r.event, args=args_json(r.args), **event_columns(session, r)))
            apply_event(session, r)
    with Session(engine) as session:
        rows = session.scalars(select(db.Slash).order_by(db.Slash.block_number, db.Slash.log_index))
        causes = [(s.address, s.amount, s.cause, s.cause_ref) for s in rows]
    assert causes == [(A, 10**18, "downtime", "1"), (B, 2 * 10**18, "downtime", "2"),
                      (B, 3 * 10**18, "downtime", "3"), (B, 4 * 10**18, "downtime", "4"),
                      (A, 5, "direct", None)]
