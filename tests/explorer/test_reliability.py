"""Reliability score: the formula, its evidence from events, and indexer/audit/tenant agreement on a
seeded randomized market on a real anvil (with heartbeats, results, closes by either party and
slashes)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from tessera.chain.client import Chain
from tessera.explorer.audit import audit
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer, database_figures
from tessera.explorer.simulate import TSTK, Workload
from tessera.protocol.events import EventRecord
from tessera.protocol.figures import compute_figures
from tessera.protocol.reliability import (
    BPS,
    NEW_PROVIDER_BPS,
    PRIOR_BPS,
    TENURE_FULL_SECONDS,
    Inputs,
    evidence,
    score,
)
from tessera.tenant.bidding import bid_reliability, reliability_text

REL = "reliability.by_provider"
D0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
DAY = 86_400
ALICE, BOB, TENANT = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
_log = itertools.count()


# -- the formula --------------------------------------------------------------------------------
def test_a_new_provider_gets_the_prior_neither_top_nor_bottom():
    new = score(Inputs())
    assert new.bps == NEW_PROVIDER_BPS == 4_000
    assert (new.uptime_bps, new.completion_bps, new.tenure_bps, new.penalty_bps) == (
        PRIOR_BPS, PRIOR_BPS, 0, 0)
    proven = score(Inputs(up=2_000, epochs=2_000, finished=30, age_seconds=TENURE_FULL_SECONDS))
    faulty = score(Inputs(up=500, epochs=2_000, finished=5, failed=10, slashes=1,
                          age_seconds=TENURE_FULL_SECONDS))
    assert faulty.bps < new.bps < proven.bps
    assert proven.bps >= 9_500
    # A few epochs or leases of evidence move a new provider only part of the way.
    assert 4_000 < score(Inputs(up=3, epochs=3, finished=1, age_seconds=3_600)).bps < 5_000


def test_failures_slashes_and_jailings_lower_the_score():
    base = Inputs(up=900, epochs=1_000, finished=20, age_seconds=30 * DAY)
    worse = [Inputs(**{**base.__dict__, **change}) for change in (
        {"failed": 3}, {"slashes": 1}, {"jails": 1}, {"up": 600}, {"finished": 10},
        {"age_seconds": DAY})]
    for inputs in worse:
        assert score(inputs).bps < score(base).bps, inputs
    assert score(Inputs(**{**base.__dict__, "slashes": 1})).bps < score(
        Inputs(**{**base.__dict__, "jails": 1})).bps  # a slash weighs more than a jailing
    assert score(Inputs(**{**base.__dict__, "slashes": 10})).bps == 0   # floored, never negative


@pytest.mark.parametrize("bad, words", [
    ({"failed": -1}, "failed must be a non-negative integer"),
    ({"age_seconds": 1.5}, "age_seconds must be a non-negative integer"),
    ({"slashes": True}, "slashes must be a non-negative integer"),
    ({"up": 5, "epochs": 4}, "up (5) exceeds epochs owed (4)"),
])
def test_bad_inputs_are_refused_by_name(bad, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Inputs(**bad)


counts = st.integers(0, 10**6)


@st.composite
def inputs(draw):
    epochs = draw(counts)
    return Inputs(up=draw(st.integers(0, epochs)), epochs=epochs, finished=draw(counts),
                  failed=draw(counts), slashes=draw(st.integers(0, 50)), jails=draw(st.integers(0, 50)),
                  age_seconds=draw(st.integers(0, 10 * TENURE_FULL_SECONDS)))


@settings(max_examples=400, deadline=None)
@given(inputs())
def test_score_is_an_integer_within_bounds(i):
    s = score(i)
    for part in (s.uptime_bps, s.completion_bps, s.tenure_bps, s.bps):
        assert type(part) is int and 0 <= part <= BPS
    assert s.bps <= max(s.uptime_bps, s.completion_bps, s.tenure_bps)


# change -> (the inputs after it, +1 if the score may only rise, -1 if it may only fall)
CHANGES = {
    "one more epoch owed, up": (lambda i: {"up": i.up + 1, "epochs": i.epochs + 1}, +1),
    "one more epoch owed, missed": (lambda i: {"epochs": i.epochs + 1}, -1),
    "one more finished lease": (lambda i: {"finished": i.finished + 1}, +1),
    "one more failed lease": (lambda i: {"failed": i.failed + 1}, -1),
    "one more slash": (lambda i: {"slashes": i.slashes + 1}, -1),
    "one more jailing": (lambda i: {"jails": i.jails + 1}, -1),
    "a day older": (lambda i: {"age_seconds": i.age_seconds + DAY}, +1),
}


@settings(max_examples=400, deadline=None)
@given(inputs(), st.sampled_from(sorted(CHANGES)))
def test_score_moves_the_right_way_with_each_input(i, change):
    update, direction = CHANGES[change]
    before, after = score(i).bps, score(Inputs(**{**i.__dict__, **update(i)})).bps
    assert (after - before) * direction >= 0, (change, before, after)


# -- evidence from events ----------------------------------------------------------------------
def ev(event: str, ts: int, contract: str = "Market", tx: str | None = None, **args) -> EventRecord:
    n = next(_log)
    return EventRecord(block_number=n, block_hash=f"0x{n:064x}", timestamp=ts,
                       tx_hash=tx or f"0x{n:064x}", log_index=0, contract=contract, event=event, args=args)


def registered(provider: str, ts: int) -> EventRecord:
    return ev("ProviderRegistered", ts, "ProviderRegistry", provider=provider, stake=100, gpu_model="H100",
              gpu_count=1, gpu_memory_mb=1, benchmark_score=1, endpoint="x", price_floor=1)


def lease(lease_id: int, provider: str, ts: int) -> EventRecord:
    return ev("LeaseCreated", ts, lease_id=lease_id, order_id=lease_id, tenant=TENANT, provider=provider,
              price_per_gpu_hour=3600, gpus=1, budget=3600 * 10, start=ts)


def closed(lease_id: int, by: str, ts: int) -> EventRecord:
    return ev("LeaseClosed", ts, lease_id=lease_id, closed_by=by, provider_amount=0, fee=0, refund=0)


def result(lease_id: int, provider: str, ts: int) -> EventRecord:
    return ev("ResultCommitted", ts, lease_id=lease_id, provider=provider, result_hash="0x" + "11" * 32)


def test_lease_outcomes_slashes_and_jailings_from_events():
    t = D0
    e = [registered(ALICE, t), registered(BOB, t)]
    e += [lease(i, ALICE, t + i) for i in range(1, 8)] + [lease(9, BOB, t + 9)]
    done = result(1, ALICE, t + 100)
    e += [done, closed(1, ALICE, t + 101)]                      # result, then the provider closes
    walked = closed(2, ALICE, t + 102)
    e += [walked, result(2, ALICE, t + 103)]                     # closed first: a late result changes nothing
    e += [closed(3, TENANT, t + 104), result(3, ALICE, t + 105)]  # the tenant stopped: undecided
    # lease 4 stays open; lease 5 finished but later had downtime claimed: failed
    e += [result(5, ALICE, t + 106)]
    claim_tx = "0x" + "dd" * 32
    slash_in_claim = ev("Slashed", t + 107, "ProviderRegistry", tx=claim_tx, provider=ALICE, amount=5,
                        recipient=TENANT, slasher="0x" + "e" * 40)
    claim = ev("DowntimeClaimed", t + 107, tx=claim_tx, lease_id=5, tenant=TENANT, provider=ALICE,
               epochs=[3, 4], amount=10, refund=10, overdrawn=0, stake_slashed=5, claimed_by=TENANT)
    e += [slash_in_claim, claim]
    fraud = ev("Slashed", t + 108, "ProviderRegistry", provider=ALICE, amount=7, recipient=TENANT,
               slasher="0x" + "f" * 40)
    jail = ev("Jailed", t + 200, "ProviderRegistry", provider=ALICE, until=t + 5_000, by=TENANT)
    extend = ev("Jailed", t + 300, "ProviderRegistry", provider=ALICE, until=t + 9_000, by=TENANT)
    release = ev("Jailed", t + 400, "ProviderRegistry", provider=ALICE, until=0, by=TENANT)
    again = ev("Jailed", t + 500, "ProviderRegistry", provider=ALICE, until=t + 600, by=TENANT)
    e += [fraud, jail, extend, release, again, result(9, BOB, t + 501)]
    e.append(ev("Slashed", t + 502, "ProviderRegistry", provider="0x" + "9" * 40, amount=1,
                recipient=TENANT, slasher=TENANT))   # not a registered provider: ignored

    found = evidence(e)
    alice, bob = found[ALICE], found[BOB]
    assert alice.finished == {1: {done.tx_hash}}
    assert alice.failed == {2: {walked.tx_hash}, 5: {claim_tx}}
    assert alice.slashes == [fraud.tx_hash]
    assert alice.jails == [jail.tx_hash, again.tx_hash]
    assert list(bob.finished) == [9] and not bob.failed and not bob.slashes

    as_of = t + 2 * DAY
    figs = compute_figures(e, as_of)
    v = {k: f.value for k, f in figs.items() if k[0].startswith(REL)}
    assert (v[(f"{REL}.finished", ALICE)], v[(f"{REL}.failed", ALICE)], v[(f"{REL}.slashes", ALICE)],
            v[(f"{REL}.jails", ALICE)], v[(f"{REL}.age_seconds", ALICE)]) == (1, 2, 1, 2, 2 * DAY)
    expected = score(Inputs(finished=1, failed=2, slashes=1, jails=2, age_seconds=2 * DAY))
    assert v[(f"{REL}.bps", ALICE)] == expected.bps
    assert v[(f"{REL}.penalty_bps", ALICE)] == expected.penalty_bps == 2_500 + 2 * 1_000
    assert figs[(f"{REL}.failed", ALICE)].txs == tuple(sorted({walked.tx_hash, claim_tx}))
    assert figs[(f"{REL}.penalty_bps", ALICE)].txs == tuple(sorted({fraud.tx_hash, jail.tx_hash,
                                                                    again.tx_hash}))
    assert set(figs[(f"{REL}.bps", ALICE)].txs) >= {done.tx_hash, walked.tx_hash, fraud.tx_hash,
                                                     e[0].tx_hash}
    assert v[(f"{REL}.bps", BOB)] > v[(f"{REL}.bps", ALICE)]


def test_uptime_part_uses_the_uptime_figures():
    genesis, length = D0, 600
    e = [ev("UptimeStarted", D0, "Uptime", registry="0x" + "1" * 40, genesis=genesis, epoch_length=length,
            jail_after=6, jail_period=3_600),
         registered(ALICE, D0 + 10), registered(BOB, D0 + 10)]
    beats = [ev("Heartbeat", D0 + ep * length + 5, "Uptime", provider=ALICE, epoch=ep, block_number=1)
             for ep in range(0, 40) if ep % 4]          # 30 of the 40 epochs owed
    figs = compute_figures(e + beats, as_of=D0 + 40 * length)
    # A heartbeat-only Uptime (no LivenessRulesSet): an epoch is final once it has ended.
    assert figs[("uptime.by_provider.heartbeats", ALICE)].value == 30
    assert figs[("uptime.by_provider.up", ALICE)].value == 30
    assert figs[("uptime.by_provider.epochs", ALICE)].value == 40
    up = figs[(f"{REL}.uptime_bps", ALICE)]
    assert up.value == (30 * BPS + PRIOR_BPS * 24) // (40 + 24)
    assert set(up.txs) == {b.tx_hash for b in beats} | {e[1].tx_hash}
    assert figs[(f"{REL}.uptime_bps", BOB)].value == (0 + PRIOR_BPS * 24) // (40 + 24)
    # Without the Uptime contract's logs the uptime part stays at the prior.
    assert compute_figures(e[1:], as_of=D0 + 40 * length)[(f"{REL}.uptime_bps", ALICE)].value == PRIOR_BPS


# -- on a real chain ----------------------------------------------------------------------------
EPOCH = 600


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, private_devnet):
    """A seeded market over 10-minute uptime epochs: leases, results, closes by either party,
    slashes, jailings, and heartbeats that each provider sends in a different share of epochs."""
    home = tmp_path_factory.mktemp("reliability")
    with private_devnet(home, epoch_length=EPOCH) as (devnet, network):
        work = Workload(network, seed=11)
        work.run(leases=24, orders_per_round=8, advance=(600, 6_000))
        chain = Chain(network)
        uptime = chain.contract("Uptime")
        genesis = uptime.functions.genesis().call()
        rng = random.Random(5)
        share = {address: rng.choice((0.0, 0.3, 0.7, 1.0)) for address in work.providers}
        for i in range(14):
            latest = work.w3.eth.get_block("latest")
            epoch = (work.now + EPOCH - genesis) // EPOCH          # the epoch of the next block
            for address in work.providers:
                if rng.random() < share[address]:
                    work.send(address, uptime, "heartbeat", epoch, latest["number"], latest["hash"])
            work.mine(EPOCH)
            if i % 5 == 4:
                work.round(4, EPOCH)
        provider = next(iter(work.providers.values()))
        work.send(work.deployer, work.registry, "slash", provider.address, 5 * TSTK, work.deployer)
        work.mine()
        # Last (the workload's model of `earned` ignores downtime): the tenant claims one final
        # epoch in which an open lease's provider was not up; the Market slashes in that tx.
        lag = uptime.functions.report_delay().call() + 1 + uptime.functions.answer_epochs().call()
        final = (work.now + 1 - genesis) // EPOCH - lag      # epochs before it are final
        claim = next((lease, ep) for lease in work.leases.values() if not lease.closed
                     for ep in range(-(-(lease.start - genesis) // EPOCH), final)
                     if lease.earned(genesis + ep * EPOCH) < lease.budget
                     and not uptime.functions.is_up(lease.provider, ep).call())
        work.send(claim[0].tenant, work.market, "claim_downtime", claim[0].lease_id, [claim[1]])
        work.mine()
        yield home, devnet, network, work, claim[0].lease_id


def test_indexer_audit_and_tenant_agree_on_reliability(scored_run, explorer_db_url):
    _, _, network, work, claimed = scored_run
    chain = Chain(network)
    engine = make_engine(explorer_db_url)
    Indexer(chain, engine, confirmations=0, batch_blocks=6).sync()
    report = audit(chain, engine)
    assert report.agrees, report.problems
    figures, cursor = database_figures(engine)
    mine = {k: f for k, f in figures.items() if k[0].startswith(REL)}
    from_chain = {k: f for k, f in report.chain_figures.items() if k[0].startswith(REL)}
    assert mine == from_chain and len(mine) == 10 * len(work.providers)
    assert {a for n, a in mine if n == f"{REL}.bps"} == set(work.providers)

    v = {k: f.value for k, f in figures.items()}
    for a in work.providers:
        assert v[("uptime.by_provider.up", a)] == v[("uptime.by_provider.heartbeats", a)]
        parts = Inputs(up=v[("uptime.by_provider.up", a)],
                       epochs=v[("uptime.by_provider.epochs", a)], finished=v[(f"{REL}.finished", a)],
                       failed=v[(f"{REL}.failed", a)], slashes=v[(f"{REL}.slashes", a)],
                       jails=v[(f"{REL}.jails", a)], age_seconds=v[(f"{REL}.age_seconds", a)])
        assert score(parts).bps == v[(f"{REL}.bps", a)]
        assert 0 <= v[(f"{REL}.bps", a)] <= BPS
    total = lambda part: sum(v[(f"{REL}.{part}", a)] for a in work.providers)  # noqa: E731
    # The run has the variety the score is about.
    assert total("finished") > 0 and total("failed") > 0 and total("slashes") > 0
    heartbeats = {v[("uptime.by_provider.heartbeats", a)] for a in work.providers}
    assert 0 in heartbeats and max(heartbeats) >= 10 and len(heartbeats) >= 3
    assert len({v[(f"{REL}.bps", a)] for a in work.providers}) >= 3
    if not explorer_db_url.startswith("sqlite"):
        return  # the rest reads only the chain: checked once, with the SQLite variant

    # Independent of the events: the contract's lease records agree with each outcome
    # (fields 8, 9, 10: closed_at, result_hash, downtime).
    market = chain.market
    records = report_records(chain, cursor)
    found = evidence(records)
    for ev_ in found.values():
        for lease_id in ev_.finished:
            assert market.functions.leases(lease_id).call()[9] != b"\0" * 32
        for lease_id in ev_.failed:
            lease = market.functions.leases(lease_id).call()
            assert lease[8] != 0 or lease[10] > 0
    # The downtime claim failed its lease, and its slash is not counted as a slash.
    claim_txs = {r.tx_hash for r in records if r.event == "DowntimeClaimed"}
    assert len(claim_txs) == 1 and found[work.leases[claimed].provider].failed[claimed] == claim_txs
    slashes = [r for r in records if r.event == "Slashed"]
    assert any(r.tx_hash in claim_txs for r in slashes)
    assert total("slashes") == sum(r.tx_hash not in claim_txs for r in slashes)

    # The tenant's bid table reads the same scores straight from the chain's logs.
    assert chain.block_number() == cursor.last_block
    scores = bid_reliability(chain, Console(quiet=True))
    for (name, a), f in mine.items():
        assert scores[a.lower()][name.removeprefix(f"{REL}.")] == f.value
    text = reliability_text(scores[next(iter(work.providers)).lower()])
    assert text.endswith("slashes)") and "% (uptime " in text
    assert reliability_text(None) == "?"


def report_records(chain: Chain, cursor) -> list[EventRecord]:
    from tessera.chain.events import EventReader

    return EventReader(chain).events(cursor.first_block, cursor.last_block)


def test_stats_prints_uptime_and_reliability(scored_run, explorer_db_url, monkeypatch):
    from tessera.explorer import cli

    _, _, network, work, _ = scored_run
    engine = make_engine(explorer_db_url)
    Indexer(Chain(network), engine, confirmations=0).sync()
    figures, cursor = database_figures(engine)
    out = Console(record=True, width=250)
    monkeypatch.setattr(cli, "console", out)
    cli.render(figures, cursor.last_block, cursor.last_timestamp)
    text = out.export_text()
    assert "Uptime and reliability" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines()
            if line.count("│") > 5 and line.split("│")[1].strip() in work.providers}
    assert set(rows) == set(work.providers)
    for a, line in rows.items():
        bps = figures[(f"{REL}.bps", a)].value
        assert line.rstrip(" │").endswith(f"{bps:,} ({bps / 100:.2f}%)"), line
