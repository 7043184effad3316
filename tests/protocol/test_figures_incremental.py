"""FigureBook, the resumable fold behind compute_figures: applied in chunks, read in between and
carried through its JSON state, it gives exactly the figures of the whole list (no chain)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.protocol.events import EventRecord
from tessera.protocol.figure_book import FigureBook
from tessera.protocol.figures import compare, compute_figures

D0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
PROVIDERS = ["0x" + c * 40 for c in "abcd"]
TENANTS = ["0x" + c * 40 for c in "ef"]
EPOCH = 3_600
REG, MKT, UP = "ProviderRegistry", "Market", "Uptime"


@st.composite
def market(draw) -> list[EventRecord]:
    """A random but plausible history: registrations, stake moves, offers, orders, leases with
    top-ups, payouts, results and closes by either party, downtime claims with their slash in the
    same transaction, jailings, heartbeats, outages, probe tallies and verified-pay events; some
    transactions hold several events, blocks hold several transactions, days are crossed."""
    n = draw(st.integers(1, 60))
    ts, block, out = D0 - 2 * 86_400 + draw(st.integers(0, 86_400)), 1, []
    leases: dict[int, str] = {}
    next_lease = 1

    def emit(contract: str, event: str, tx: int, **args) -> None:
        out.append(EventRecord(block, f"0x{block:064x}", ts, f"0x{tx:064x}", len(out), contract,
                               event, args))

    if draw(st.booleans()):
        emit(UP, "UptimeStarted", 0, registry=PROVIDERS[0], genesis=D0 - 2 * 86_400,
             epoch_length=EPOCH, jail_after=6, jail_period=3_600)
    for i in range(1, n + 1):
        if draw(st.integers(0, 3)) == 0:  # a new block, some time later
            block += 1
            ts += draw(st.sampled_from([1, 60, 3_000, 20_000, 90_000]))
        kind = draw(st.integers(0, 15))
        p = draw(st.sampled_from(PROVIDERS))
        t = draw(st.sampled_from(TENANTS))
        amount = draw(st.integers(0, 5_000))
        if kind <= 1:
            emit(REG, "ProviderRegistered", i, provider=p, stake=draw(st.integers(0, 300)),
                 gpu_model=draw(st.sampled_from(["H100", "A100"])), gpu_count=draw(st.integers(0, 4)),
                 gpu_memory_mb=1, benchmark_score=1, endpoint="x", price_floor=1)
        elif kind == 2:
            event = draw(st.sampled_from(["StakeAdded", "UnbondRequested", "StakeWithdrawn"]))
            emit(REG, event, i, provider=p, amount=draw(st.integers(0, 100)))
        elif kind == 3:
            emit(REG, "OfferUpdated", i, provider=p, gpu_model=draw(st.sampled_from(["H100", "A100"])),
                 gpu_count=draw(st.integers(0, 4)), gpu_memory_mb=1, benchmark_score=1, endpoint="x",
                 price_floor=1)
        elif kind == 4:
            emit(MKT, "OrderCreated", i, order_id=i, tenant=t, deposit=amount)
            if draw(st.booleans()):
                emit(MKT, "OrderCancelled", i, order_id=i, refund=amount // 2)
        elif kind <= 6:
            emit(MKT, "LeaseCreated", i, lease_id=next_lease, order_id=i, tenant=t, provider=p,
                 price_per_gpu_hour=draw(st.integers(1, 10_000)), gpus=draw(st.integers(1, 3)),
                 budget=draw(st.integers(1, 50_000)), start=ts)
            leases[next_lease] = p
            next_lease += 1
        elif kind <= 11 and leases:
            lid = draw(st.sampled_from(sorted(leases)))
            owner = leases[lid]
            what = draw(st.sampled_from(["top", "withdraw", "close", "result", "claim"]))
            if what == "top":
                emit(MKT, "LeaseToppedUp", i, lease_id=lid, amount=amount, budget=amount * 3)
            elif what == "withdraw":
                emit(MKT, "Withdrawn", i, lease_id=lid, provider=owner, amount_to_provider=amount,
                     fee=amount // 50)
            elif what == "close":
                emit(MKT, "LeaseClosed", i, lease_id=lid, closed_by=draw(st.sampled_from([owner, t])),
                     provider_amount=amount, fee=amount // 50, refund=amount // 3)
            elif what == "result":
                emit(MKT, "ResultCommitted", i, lease_id=lid, provider=owner, result_hash="0x11")
            else:  # the Market slashes in the claim's transaction, before its own event
                emit(REG, "Slashed", i, provider=owner, amount=draw(st.integers(0, 50)), recipient=t,
                     slasher=t)
                emit(MKT, "DowntimeClaimed", i, lease_id=lid, tenant=t, provider=owner, epochs=[1, 2],
                     amount=amount, refund=amount, overdrawn=0, stake_slashed=1, claimed_by=t)
        elif kind == 12:
            emit(REG, "Slashed", i, provider=p, amount=draw(st.integers(0, 50)), recipient=t, slasher=t)
            if draw(st.booleans()):
                emit(REG, "Jailed", i, provider=p, until=ts + draw(st.sampled_from([-1, 0, 600, 9_000])),
                     by=t)
        elif kind == 13:
            emit(UP, "Heartbeat", i, provider=p, epoch=max((ts - D0 + 2 * 86_400) // EPOCH
                                                          - draw(st.integers(0, 2)), 0), block_number=1)
            if draw(st.integers(0, 4)) == 0:
                emit(UP, "OutageReported", i, provider=p, first_epoch=1, last_epoch=3,
                     jailed_until=ts + 600, reporter=t)
        elif kind == 14:
            emit("Probes", "ProbeTally", i, provider=p, answered=draw(st.integers(0, 9)),
                 missed=draw(st.integers(0, 9)))
        else:
            emit("Settlement", "PayReleased", i, lease_id=1, amount=amount, withheld=amount // 7)
            emit("Settlement", "RoundRefunded", i, lease_id=1, refund=amount // 9)
    return out


def as_ofs(events: list[EventRecord], extra: list[int]) -> list[int]:
    last = events[-1].timestamp if events else D0
    return sorted({last, last + 1, last + EPOCH * 5 + 17, last + 3 * 86_400, *(last + x for x in extra)})


def same(a, b) -> None:
    assert a == b, compare(a, b)[:5]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market(), st.lists(st.integers(0, 80), max_size=4), st.lists(st.integers(0, 10**6), max_size=2))
def test_chunks_reads_and_json_state_give_the_whole_fold(events, cuts, extra):
    reads = as_ofs(events, extra)
    whole = {t: compute_figures(events, t) for t in reads}
    book = FigureBook()
    bounds = sorted({0, len(events), *(min(c, len(events)) for c in cuts)})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        chunk = events[lo:hi]
        book.apply(chunk)
        if chunk:
            book.figures(chunk[-1].timestamp)          # a read in between changes nothing
        book = FigureBook.from_json(json.loads(json.dumps(book.to_json())))
    for t in reads:
        same(whole[t], book.figures(t))
        scores = {k: f for k, f in whole[t].items() if k[0].startswith(("uptime.", "reliability."))}
        same(scores, book.provider_figures(t))
    # The same book read twice (caches warm) and after a round trip again.
    for t in reversed(reads):
        same(whole[t], book.figures(t))
    assert book.events == len(events)


@settings(max_examples=60, deadline=None)
@given(market())
def test_one_event_at_a_time(events):
    book = FigureBook()
    for i, e in enumerate(events):
        book.apply([e])
        same(compute_figures(events[:i + 1], e.timestamp), book.figures(e.timestamp))


def test_out_of_order_and_repeated_records_are_refused():
    e = [EventRecord(b, f"0x{b:064x}", D0 + b, f"0x{b:064x}", 0, MKT, "OrderCreated",
                     {"order_id": b, "tenant": TENANTS[0], "deposit": 5}) for b in (1, 2, 3)]
    book = FigureBook().apply(e[1:])
    with pytest.raises(ValueError, match="not after the last applied"):
        book.apply(e[:1])
    with pytest.raises(ValueError, match="not after the last applied"):
        book.apply(e[2:])
    with pytest.raises(ValueError, match="two events at block 1 log 0"):
        FigureBook().apply([e[0], e[0]])
    assert book.figures(D0 + 9)[("orders.total.deposits", "all")].value == 10


@pytest.mark.parametrize("state, words", [
    ({"version": 99}, "version 1"), ([1, 2], "version 1"), ({"version": 1}, "corrupt FigureBook state"),
])
def test_bad_state_is_refused_by_name(state, words):
    with pytest.raises(ValueError, match=words):
        FigureBook.from_json(state)
