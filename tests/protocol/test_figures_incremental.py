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
from tessera.protocol.liveness import words_of
from tessera.protocol.reliability_book import ReliabilityBook

D0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
PROVIDERS = ["0x" + c * 40 for c in "abcd"]
TENANTS = ["0x" + c * 40 for c in "ef"]
VALIDATORS = ["0x" + c * 40 for c in "12"]
EPOCH = 3_600
REG, MKT, UP = "ProviderRegistry", "Market", "Uptime"
CLAIM_WINDOW = 30_000


@st.composite
def market(draw, chain_valid: bool = False) -> list[EventRecord]:
    """A random but plausible history: registrations, stake moves, offers, orders, leases with
    top-ups, payouts, results and closes by either party, downtime claims with their slash in the
    same transaction, jailings, heartbeats, validators' liveness reports, receipt claims,
    inclusion challenges answered and resolved, outages, probe tallies and verified-pay events;
    some transactions hold several events, blocks hold several transactions, days are crossed.

    `chain_valid`: only what the contracts allow where the compact ReliabilityBook relies on it
    (heartbeats from registered providers, for the current epoch, once; reports, receipt claims
    and challenges within their windows (Uptime.vy); downtime claims on a closed lease within
    CLAIM_WINDOW of its close); otherwise heartbeats, reports and claims also come late, twice
    or naming strangers, challenges resolve at any time, and claims come at any time."""
    n = draw(st.integers(1, 60))
    ts, block, out = D0 - 2 * 86_400 + draw(st.integers(0, 86_400)), 1, []
    leases: dict[int, str] = {}
    closed_at: dict[int, int] = {}
    registered: set[str] = set()
    order: list[str] = []                                # registry index -> provider
    beat: set[tuple[str, int]] = set()
    reports: dict[tuple[str, int], list[int]] = {}      # (validator, epoch) -> words
    challenges: dict[int, tuple[str, int, set[int]]] = {}   # open id -> (validator, epoch, named)
    challenged: set[tuple[str, int, int]] = set()       # (validator, epoch, index) named once
    proven: set[tuple[int, int]] = set()                # (epoch, index) whose beat was shown
    next_lease = 1

    def emit(contract: str, event: str, tx: int, **args) -> None:
        out.append(EventRecord(block, f"0x{block:064x}", ts, f"0x{tx:064x}", len(out), contract,
                               event, args))

    uptime = draw(st.booleans())
    delay, answer = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    rules = uptime and draw(st.integers(0, 3)) > 0     # a heartbeat-only Uptime has no rules
    if uptime:
        emit(UP, "UptimeStarted", 0, registry=PROVIDERS[0], genesis=D0 - 2 * 86_400,
             epoch_length=EPOCH, jail_after=6, jail_period=3_600)
        if rules:
            emit(UP, "LivenessRulesSet", 0, validators=VALIDATORS[0], report_delay=delay,
                 answer_epochs=answer, challenge_bond=10, inclusion_slash=50)
    for i in range(1, n + 1):
        if draw(st.integers(0, 3)) == 0:  # a new block, some time later
            block += 1
            ts += draw(st.sampled_from([1, 60, 3_000, 3_600, 20_000, 90_000]))
        kind = draw(st.integers(0, 21))
        now = (ts - D0 + 2 * 86_400) // EPOCH
        p = draw(st.sampled_from(PROVIDERS))
        t = draw(st.sampled_from(TENANTS))
        amount = draw(st.integers(0, 5_000))
        if kind <= 1:
            emit(REG, "ProviderRegistered", i, provider=p, stake=draw(st.integers(0, 300)),
                 gpu_model=draw(st.sampled_from(["H100", "A100"])), gpu_count=draw(st.integers(0, 4)),
                 gpu_memory_mb=1, benchmark_score=1, endpoint="x", price_floor=1)
            registered.add(p)
            if p not in order:
                order.append(p)
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
                closed_at.setdefault(lid, ts)
                emit(MKT, "LeaseClosed", i, lease_id=lid, closed_by=draw(st.sampled_from([owner, t])),
                     provider_amount=amount, fee=amount // 50, refund=amount // 3)
            elif what == "result":
                emit(MKT, "ResultCommitted", i, lease_id=lid, provider=owner, result_hash="0x11")
            elif chain_valid and ts > closed_at.get(lid, ts) + CLAIM_WINDOW:
                pass              # Market.claim_downtime: "claim window over"
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
            if not chain_valid:
                emit(UP, "Heartbeat", i, provider=p, epoch=max(now - draw(st.integers(0, 2)), 0),
                     block_number=1)
            elif uptime and p in registered and (p, now) not in beat:
                beat.add((p, now))
                emit(UP, "Heartbeat", i, provider=p, epoch=now, block_number=1)
            if draw(st.integers(0, 4)) == 0:
                emit(UP, "OutageReported", i, provider=p, first_epoch=1, last_epoch=3,
                     jailed_until=ts + 600, reporter=t)
        elif kind >= 16:
            liveness(draw, emit, i, kind, now, p, chain_valid, (uptime and rules, delay, answer),
                     order, beat, reports, challenges, (challenged, proven))
        elif kind == 14:
            emit("Probes", "ProbeTally", i, provider=p, answered=draw(st.integers(0, 9)),
                 missed=draw(st.integers(0, 9)))
        else:
            emit("Settlement", "PayReleased", i, lease_id=1, amount=amount, withheld=amount // 7)
            emit("Settlement", "RoundRefunded", i, lease_id=1, refund=amount // 9)
    return out


def liveness(draw, emit, i, kind, now, p, chain_valid, rules, order, beat, reports, challenges,
             named_proven) -> None:
    """One liveness event of `market`: a validator's report (kind 16, 17), a receipt claim (18), or
    a challenge naming a set of a report's providers opened, answered (some of its providers, on
    it; settled when all are) or resolved (19 .. 21); within Uptime.vy's windows when
    `chain_valid`."""
    on, delay, answer = rules
    challenged, proven = named_proven
    v = draw(st.sampled_from(VALIDATORS))
    if not chain_valid:
        epoch = max(now - draw(st.integers(-1, 6)), 0)
        if kind <= 17:
            words = [draw(st.integers(0, 2**6 - 1))] * draw(st.integers(1, 2))
            emit(UP, "LivenessReported", i, validator=v, epoch=epoch, words_hash="0x00", words=words)
        elif kind == 18:
            emit(UP, "BeatClaimed", i, provider=p, epoch=epoch, validator=v)
        elif kind == 19:
            named = [draw(st.integers(0, 2**6 - 1))] * draw(st.integers(1, 2))
            emit(UP, "InclusionsChallenged", i, challenge_id=i, validator=v, epoch=epoch,
                 challenger=TENANTS[0], named_count=1, bond=10, answer_by_epoch=epoch + 3, named=named)
        elif kind == 20:
            emit(UP, "InclusionAnswered", i, challenge_id=i, validator=v, provider=p, epoch=epoch,
                 answered_by=p, to_answerer=5)
        else:
            emit(UP, "ChallengeResolved", i, challenge_id=i, validator=v, epoch=epoch, unanswered=1,
                 slashed=5, to_challenger=1, burned=4, bond_returned=10)
        return
    if not on or not order:
        return
    if kind <= 17:
        epoch = now - draw(st.integers(1, delay))
        if epoch >= 0 and (v, epoch) not in reports:
            named = draw(st.sets(st.integers(0, len(order) - 1)))
            words = reports[(v, epoch)] = words_of(named, len(order)) or [0]
            emit(UP, "LivenessReported", i, validator=v, epoch=epoch, words_hash="0x00", words=words)
    elif kind == 18:
        epoch = now - draw(st.integers(1, delay + 1))
        if epoch >= 0 and p in order and (p, epoch) not in beat:
            beat.add((p, epoch))
            emit(UP, "BeatClaimed", i, provider=p, epoch=epoch, validator=v)
    elif challenges and draw(st.booleans()):        # answer or resolve an open challenge
        cid = draw(st.sampled_from(sorted(challenges)))
        cv, epoch, named = challenges[cid]        # named: not yet answered on this challenge
        unproven = sorted(j for j in named if (epoch, j) not in proven)   # on any challenge
        if now <= epoch + delay + 1 + answer:
            if draw(st.integers(0, 2)) > 0 or not unproven:     # most stay unanswered
                return
            shown = draw(st.lists(st.sampled_from(unproven), min_size=1, unique=True))
            for j in shown:
                proven.add((epoch, j))
                named.discard(j)
                emit(UP, "InclusionAnswered", i, challenge_id=cid, validator=cv, provider=order[j],
                     epoch=epoch, answered_by=order[j], to_answerer=5)
            if not named:                            # every named beat shown here: settled
                del challenges[cid]
                emit(UP, "ChallengeResolved", i, challenge_id=cid, validator=cv, epoch=epoch,
                     unanswered=0, slashed=0, to_challenger=0, burned=0, bond_returned=5)
        elif draw(st.integers(0, 3)) > 0:            # or left unresolved for a while
            del challenges[cid]
            emit(UP, "ChallengeResolved", i, challenge_id=cid, validator=cv, epoch=epoch,
                 unanswered=len(unproven), slashed=50 if unproven else 0, to_challenger=0,
                 burned=0, bond_returned=10)
    else:                                            # challenge inclusions still in their window
        open_ = sorted((cv, ep) for cv, ep in reports if ep < now <= ep + delay + 1)
        if open_:
            cv, epoch = draw(st.sampled_from(open_))
            words = reports[(cv, epoch)]
            free = [j for j in range(len(order)) if j // 256 < len(words)
                    and (words[j // 256] >> (j % 256)) & 1 and (cv, epoch, j) not in challenged]
            if free:
                named = draw(st.sets(st.sampled_from(free), min_size=1))
                challenged.update((cv, epoch, j) for j in named)
                challenges[i] = (cv, epoch, set(named))
                emit(UP, "InclusionsChallenged", i, challenge_id=i, validator=cv, epoch=epoch,
                     challenger=TENANTS[0], named_count=len(named), bond=10,
                     answer_by_epoch=epoch + delay + 1 + answer,
                     named=words_of(named, len(order)))


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
    ({"version": 99}, "version 4"), ([1, 2], "version 4"), ({"version": 4}, "corrupt FigureBook state"),
    ({"version": 3}, "version 4"),       # before set challenges: refused, never misread
])
def test_bad_state_is_refused_by_name(state, words):
    with pytest.raises(ValueError, match=words):
        FigureBook.from_json(state)


SCORE_FIGURES = ("uptime.by_provider.", "reliability.by_provider.")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market(chain_valid=True), st.lists(st.integers(0, 80), max_size=4),
       st.lists(st.integers(0, 10**6), max_size=2))
def test_the_compact_book_gives_the_score_values_of_the_whole_fold(events, cuts, extra):
    """ReliabilityBook (the tenant's index) keeps counts only, yet in any chunking and through its
    JSON state its values are compute_figures' uptime and reliability values."""
    last = events[-1].timestamp if events else D0
    reads = sorted({last, last + 1, last + EPOCH * 5 + 17, last + 3 * 86_400, *(last + x for x in extra)})
    book = ReliabilityBook(CLAIM_WINDOW)
    bounds = sorted({0, len(events), *(min(c, len(events)) for c in cuts)})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        chunk = events[lo:hi]
        book.apply(chunk)
        if chunk:   # a read in between changes nothing, and equals the fold up to there
            assert book.values(chunk[-1].timestamp) == scores(events[:hi], chunk[-1].timestamp)
        if hi < len(events):   # the reader saw blocks up to the next event's time: none before it
            book.advance(events[hi].timestamp)
        book = ReliabilityBook.from_json(json.loads(json.dumps(book.to_json())))
    for t in reads:
        assert book.values(t) == scores(events, t)
    assert book.events == len(events)
    # Only leases whose count can still change are kept: open, or closed within the window.
    for lease in book.evidence.leases.values():
        assert lease.closed_at is None or lease.closed_at + CLAIM_WINDOW >= last


def scores(events: list[EventRecord], as_of: int) -> dict:
    return {k: f.value for k, f in compute_figures(events, as_of).items()
            if k[0].startswith(SCORE_FIGURES)}


def rentals(leases: int, providers: int = 6) -> list[EventRecord]:
    """A long, regular history: providers beat every hour; each hour one lease opens, gets a
    result and closes (some by the provider, a few with a downtime claim and its slash)."""
    out: list[EventRecord] = []
    prov = [f"0x{i + 1:040x}" for i in range(providers)]

    def emit(ts: int, contract: str, event: str, **args) -> None:
        n = len(out)
        out.append(EventRecord(n + 1, f"0x{n + 1:064x}", ts, f"0x{n + 1:064x}", 0, contract, event, args))

    emit(D0, UP, "UptimeStarted", registry="0x1", genesis=D0, epoch_length=EPOCH, jail_after=6,
         jail_period=3_600)
    for p in prov:
        emit(D0, REG, "ProviderRegistered", provider=p, stake=100, gpu_model="H100", gpu_count=1,
             gpu_memory_mb=1, benchmark_score=1, endpoint="x", price_floor=1)
    for i in range(1, leases + 1):
        ts = D0 + i * EPOCH
        p = prov[i % providers]
        for q in prov:
            emit(ts, UP, "Heartbeat", provider=q, epoch=i, block_number=1)
        emit(ts + 1, MKT, "LeaseCreated", lease_id=i, order_id=i, tenant=TENANTS[0], provider=p,
             price_per_gpu_hour=1, gpus=1, budget=10**6, start=ts + 1)
        if i % 5:
            emit(ts + 2, MKT, "ResultCommitted", lease_id=i, provider=p, result_hash="0x11")
        emit(ts + 3, MKT, "LeaseClosed", lease_id=i, closed_by=p if i % 7 == 0 else TENANTS[0],
             provider_amount=1, fee=0, refund=1)
    return out


def test_the_compact_state_does_not_grow_with_history():
    """Size after 2,000 closed leases ~ after 4,000 (state: providers + leases still open to a
    claim), while FigureBook's grows with every lease."""
    history = rentals(4_000)
    half = next(i for i, e in enumerate(history) if e.event == "LeaseClosed" and e.args["lease_id"] == 2_000)
    sizes, full_sizes = [], []
    for upto in (half + 1, len(history)):
        book = ReliabilityBook(CLAIM_WINDOW).apply(history[:upto])
        sizes.append(len(json.dumps(book.to_json())))
        full_sizes.append(len(json.dumps(FigureBook().apply(history[:upto]).to_json())))
        assert book.values(history[upto - 1].timestamp) == scores(history[:upto], history[upto - 1].timestamp)
    # The same up to one lease entry (~90 bytes: 8 or 9 leases are within the window) and digits.
    assert abs(sizes[1] - sizes[0]) <= 120 and sizes[1] < 4_000, sizes
    assert len(book.evidence.leases) <= CLAIM_WINDOW // EPOCH + 1
    assert full_sizes[1] > 1.8 * full_sizes[0]


def test_the_compact_book_refuses_what_the_contracts_forbid():
    history = rentals(3)
    beat = next(e for e in history if e.event == "Heartbeat")
    book = ReliabilityBook(CLAIM_WINDOW).apply(history)
    late = EventRecord(99, "0x" + "9" * 64, history[-1].timestamp, "0x" + "8" * 64, 0, UP, "Heartbeat",
                       {**beat.args})
    with pytest.raises(ValueError, match="one heartbeat per epoch"):
        book.apply([late])
    stranger = EventRecord(99, "0x" + "9" * 64, history[-1].timestamp, "0x" + "8" * 64, 0, UP,
                           "Heartbeat", {**beat.args, "provider": "0x" + "7" * 40})
    with pytest.raises(ValueError, match="not registered"):
        ReliabilityBook(CLAIM_WINDOW).apply(history).apply([stranger])
    with pytest.raises(ValueError, match="reads forward only"):
        book.values(history[-1].timestamp - 1)


@pytest.mark.parametrize("state, words", [
    ({"version": 99}, "version 3"), ([1, 2], "version 3"), ({"version": 3}, "corrupt ReliabilityBook"),
    ({"version": 2}, "version 3"),       # before set challenges: refused (the index is rebuilt)
    ({**ReliabilityBook(5).to_json(), "evidence": FigureBook().evidence.to_json()}, "not in compact mode"),
])
def test_bad_compact_state_is_refused_by_name(state, words):
    with pytest.raises(ValueError, match=words):
        ReliabilityBook.from_json(state)
