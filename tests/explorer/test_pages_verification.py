"""The explorer's verification side: round roots, challenges, votes, verdicts, slashes with their
causes, Settlement's releases and refunds, validators and hardware reports, on the verified scenario
(`verified_market_run`: tessera.explorer.simulate_verified) indexed from a real anvil devnet, and
each lease's money adding up to its budget as the contracts hold it.

One browser test follows the cheater as a newcomer would: lease list -> its lease -> the challenge
-> the provider's slash. The derive rules are also checked on hand-made events (no chain).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.explorer.test_web import browser, page, serve  # noqa: F401  (fixtures reused)
from tests.support.explorer import dump
from web3 import Web3

from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.chain.settlement import Settlement
from tessera.chain.validators import Validators
from tessera.chain.verification import Outcome, Verification
from tessera.explorer import db
from tessera.explorer.db import make_engine
from tessera.explorer.derive import apply_event, event_keys
from tessera.explorer.indexer import Indexer
from tessera.explorer.web import create_app
from tessera.protocol.events import EventRecord, args_json
from tessera.protocol.money import format_amount, show_amount

VERDICT = {Outcome.UPHELD: "upheld", Outcome.REJECTED: "rejected", Outcome.EXPIRED: "expired"}
UNIX_TIME = re.compile(r"\b1[0-9]{9}\b")       # a Unix time of 2001..2286 written out
RAW_STAKE = re.compile(r"\b[0-9]{16,}\b")       # base units of an 18-decimal token


@pytest.fixture(scope="module")
def verified(verified_market_run, explorer_module_db):
    """The verified scenario indexed into a fresh database (SQLite, then PostgreSQL) and served."""
    _home, _devnet, network, _work, scenario = verified_market_run
    engine = make_engine(explorer_module_db("verified"))
    chain = Chain(network)
    Indexer(chain, engine, confirmations=0, batch_blocks=7).sync()
    with serve(create_app(engine)) as base:
        yield {"base": base, "engine": engine, "chain": chain, "s": scenario}
    engine.dispose()


def test_every_event_is_indexed_and_named_by_its_lease(verified):
    chain, engine = verified["chain"], verified["engine"]
    records = EventReader(chain).events(chain.network.deploy_block, chain.block_number())
    with Session(engine) as session:
        rows = session.execute(select(db.Event.tx_hash, db.Event.log_index, db.Event.lease_id)).all()
        challenges = {c.challenge_id: c.lease_id for c in session.scalars(select(db.Challenge))}
    assert {(tx, log) for tx, log, _ in rows} == {(r.tx_hash, r.log_index) for r in records}
    lease_of = {(tx, log): lease for tx, log, lease in rows}
    for r in records:        # a lease's events are one indexed query: every event that names one
        expected = r.args.get("lease_id", challenges.get(r.args.get("challenge_id"))
                              if r.contract == "Verification" else None)
        assert lease_of[(r.tx_hash, r.log_index)] == expected, (r.contract, r.event)


def test_challenges_votes_and_slashes_match_the_contracts(verified):
    chain, s = verified["chain"], verified["s"]
    ver, registry, validators = Verification(chain), ProviderRegistry(chain), Validators(chain)
    with httpx.Client(base_url=verified["base"], timeout=30) as client:
        listed = client.get("/api/challenges").json()
        assert [c["challenge_id"] for c in listed["challenges"]] == sorted(s.challenges, reverse=True)
        for cid in s.challenges:
            record, got = ver.challenge(cid), client.get(f"/api/challenges/{cid}").json()
            assert got["status"] == VERDICT[record.status]
            votes = (got["guilty_votes"], got["innocent_votes"])
            assert votes == (record.guilty_votes, record.innocent_votes)
            assert got["guilty_stake_base_units"] == str(record.guilty_stake)
            assert got["innocent_stake_base_units"] == str(record.innocent_stake)
            assert (got["lease_id"], got["provider"]) == (record.lease_id, record.provider)
            assert got["token"] == "TSTK"
            assert len(got["votes"]) == record.guilty_votes + record.innocent_votes
        upheld = client.get(f"/api/challenges/{s.upheld}").json()
        [slash] = upheld["slashes"]
        assert (slash["address"], slash["cause"]) == (s.cheater, "challenge")
        assert slash["cause_ref"] == str(s.upheld)
        assert int(slash["amount_base_units"]) == int(upheld["slashed_base_units"]) > 0
        assert {e["event"] for e in upheld["events"]} >= {
            "ChallengeOpened", "Voted", "ChallengeResolved", "RewardClaimed"}
        assert "Slashed" in {e["event"] for e in upheld["verdict_events"]}

        # Every slash of the scenario says why: a verdict, hardware reports, or a slasher's own call.
        cheater = client.get(f"/api/providers/{s.cheater}").json()
        assert [(x["cause"], x["cause_ref"]) for x in cheater["slashes"]] == [("challenge", str(s.upheld))]
        slashed_total = registry.provider_record(s.cheater)["slashed_total"]
        assert int(cheater["slashes"][0]["amount_base_units"]) == slashed_total
        hw = client.get(f"/api/providers/{s.hw_slashed}").json()
        assert [(x["cause"], x["cause_ref"]) for x in hw["slashes"]] == [
            ("hardware", f"{s.hw_slashed}/{s.hw_epoch}")]
        assert [c["status"] for c in hw["hardware_cases"]] == ["slashed"]
        cleared = client.get(f"/api/providers/{s.hw_cleared}").json()
        assert cleared["slashes"] == [] and [c["status"] for c in cleared["hardware_cases"]] == ["cleared"]
        assert client.get(f"/api/providers/{s.accused}").json()["slashes"] == []

        listed = {v["address"]: v for v in client.get("/api/validators").json()}
        assert set(listed) == set(s.validators)
        for address, v in listed.items():
            record = validators.record(address)
            got = (int(v["stake_base_units"]), int(v["unbonding_base_units"]), int(v["slashed_base_units"]))
            assert got == (record["stake"], record["unbonding"], record["slashed_total"]), address
            assert v["endpoint"] == record["endpoint"]
        slashed = [a for a, v in listed.items() if v["slashes"]]
        assert len(slashed) == 1
        detail = client.get(f"/api/validators/{slashed[0]}").json()
        assert [x["cause"] for x in detail["slash_list"]] == ["direct"]


def test_every_lease_adds_up_to_its_budget_as_the_contracts_hold_it(verified):
    chain, s = verified["chain"], verified["s"]
    market, settlement = Market(chain), Settlement(chain)
    with httpx.Client(base_url=verified["base"], timeout=30) as client:
        for lid in s.leases:
            lease, release = market.lease(lid), settlement.releases(lid)
            got = client.get(f"/api/leases/{lid}").json()
            ledger = {k: int(v) for k, v in got["ledger"].items() if k.endswith("_base_units")}
            assert got["ledger"]["adds_up"] and ledger["unaccounted_base_units"] == 0, lid
            assert ledger["budget_base_units"] == lease.budget == int(got["budget_base_units"])
            assert ledger["provider_paid_base_units"] + ledger["fees_base_units"] == lease.paid
            assert ledger["downtime_refunded_base_units"] == lease.downtime_refunded
            assert ledger["refunded_base_units"] + ledger["round_refunded_base_units"] == release.refunded
            still_held = lease.budget - lease.paid - lease.downtime_refunded - release.refunded
            assert ledger["held_base_units"] + ledger["escrow_base_units"] == still_held
            parts = [v for k, v in ledger.items() if k not in ("budget_base_units", "unaccounted_base_units")]
            assert sum(parts) == lease.budget
            assert got["verified"] and got["status"] == "closed" and got["time_left_s"] is None

        # The cheater's lease (issue 11): every round refunded, the proven one not forfeited, the
        # others forfeited (a cheat proven in another round), then the time after the last root.
        cheat = client.get(f"/api/leases/{s.cheater_lease}").json()
        assert [r["round_index"] for r in cheat["rounds"]] == [str(i) for i in range(s.rounds)]
        assert [(r["settlement"], r["forfeited"]) for r in cheat["rounds"]] == [
            ("refunded", i != s.bad_round) for i in range(s.rounds)]
        assert cheat["rounds"][s.bad_round]["challenge_ids"] == [s.upheld]
        refunds = [x for x in cheat["settlements"] if x["kind"] == "refund"]
        assert [(x["round_index"], x["forfeited"], x["after_last_root"]) for x in refunds] == [
            (str(i), i != s.bad_round, i == s.rounds) for i in range(s.rounds + 1)]
        assert sum(int(x["refund_base_units"]) for x in refunds) == \
            int(cheat["ledger"]["round_refunded_base_units"]) > 0
        assert {x["amount_base_units"] for x in cheat["settlements"] if x["kind"] == "release"} == {"0"}
        assert not any(x["forfeited"] or x["after_last_root"] for x in cheat["settlements"]
                       if x["kind"] == "release")
        [challenge] = cheat["challenges"]
        assert challenge["challenge_id"] == s.upheld and challenge["status"] == "upheld"
        assert {v["validator"] for v in challenge["votes"]} <= set(s.validators)
        assert {e["contract"] for e in cheat["events"]} >= {"Market", "Settlement", "Verification"}
        assert all(e["arg_units"].get("amount") in (None, "TUSD", "TSTK") for e in cheat["events"])
        partner = client.get(f"/api/leases/{s.partner_lease}").json()
        assert {r["settlement"] for r in partner["rounds"]} == {"released"} and partner["challenges"] == []
        assert not any(r["forfeited"] for r in partner["rounds"])


def test_pages_show_people_numbers_and_junk_is_4xx(verified):
    s = verified["s"]
    with httpx.Client(base_url=verified["base"], timeout=30) as client:
        for path in ("/leases", f"/leases/{s.cheater_lease}", "/challenges", f"/challenges/{s.upheld}",
                     "/validators", f"/validators/{s.validators[0]}", f"/providers/{s.cheater}",
                     f"/providers/{s.hw_slashed}", "/figure?name=slashes.total.amount&key=all"):
            reply = client.get(path)
            assert reply.status_code == 200, path
            text = re.sub(r"<[^>]+>", " ", reply.text.split("<main>")[1])
            assert not UNIX_TIME.search(text), (path, UNIX_TIME.search(text).group())
            assert not RAW_STAKE.search(text), (path, RAW_STAKE.search(text).group())
            assert "block time" not in text and ("TSTK" in text or "TUSD" in text), path
        for path in ("/challenges/0", "/challenges/999", "/challenges/-1", "/challenges/x",
                     "/challenges?page=0", "/challenges?page=2", "/api/challenges/999",
                     "/api/challenges?page=x", "/validators/0xnope",
                     "/validators/0x000000000000000000000000000000000000dEaD", "/api/validators/12",
                     f"/challenges/{2**64}", "/leases?page=-3", "/api/leases?page=99"):
            reply = client.get(path)
            assert 400 <= reply.status_code < 500, (path, reply.status_code)


def test_follow_the_cheater_in_a_browser(verified, page):  # noqa: F811
    chain, s, base = verified["chain"], verified["s"], verified["base"]
    lease, release = Market(chain).lease(s.cheater_lease), Settlement(chain).releases(s.cheater_lease)
    page.goto(base + "/")
    page.locator("header a", has_text="leases").click()
    page.wait_for_url("**/leases")
    page.locator("table.lease-list a.lease", has_text=f"#{s.cheater_lease}").first.click()
    page.wait_for_url(f"**/leases/{s.cheater_lease}")

    # Money: every part as the contracts hold it, adding up to the budget.
    def part(name: str) -> int:
        return int(page.locator(f"table.ledger [data-part={name}] .amt").get_attribute("data-base-units"))
    budget = page.locator("table.ledger tr", has_text="budget").first.locator(".amt")
    assert int(budget.get_attribute("data-base-units")) == lease.budget
    assert budget.inner_text() == show_amount(lease.budget, 6, "TUSD")
    assert budget.get_attribute("title") == format_amount(lease.budget, 6, "TUSD")
    assert part("provider_paid") + part("fees") == lease.paid
    assert part("refunded") + part("round_refunded") == release.refunded and part("round_refunded") > 0
    assert part("provider_paid") == 0 and release.proven == part("round_refunded")
    forfeited = page.locator("table.ledger .forfeited .amt")
    assert 0 < int(forfeited.get_attribute("data-base-units")) < part("round_refunded")
    assert page.locator("#adds-up").inner_text() == "adds up to the budget"

    # Rounds: every one refunded (a cheat proven for the lease: none of its pay is released), the
    # bad one as proven, the others as forfeited; the challenge with its votes and verdict.
    rows = page.locator("table.rounds tbody tr")
    assert rows.count() == s.rounds
    assert [rows.nth(i).locator(".settled").inner_text() for i in range(s.rounds)] == ["refunded"] * s.rounds
    assert [rows.nth(i).locator(".why").inner_text() for i in range(s.rounds)] == [
        "(proven to cheat)" if i == s.bad_round else "(forfeited: a cheat proven in another round)"
        for i in range(s.rounds)]
    settled = page.locator("table.settlements tbody tr").all_inner_texts()
    assert sum("proven to cheat" in row for row in settled) == 1
    assert sum("forfeited (a cheat proven in another round)" in row for row in settled) == s.rounds
    assert sum("the time after the last root forfeited" in row for row in settled) == 1
    record = Verification(chain).challenge(s.upheld)
    votes = page.locator("table.votes").first.locator("tbody tr")
    assert votes.count() == record.guilty_votes + record.innocent_votes
    assert sorted(votes.locator(".vote").all_inner_texts()) == \
        sorted(["guilty"] * record.guilty_votes + ["innocent"] * record.innocent_votes)
    assert "RoundRefunded" in page.locator("table.events").inner_text()

    # The challenge: verdict, votes, the slash, the provider.
    rows.nth(s.bad_round).locator("a.challenge").click()
    page.wait_for_url(f"**/challenges/{s.upheld}")
    assert page.locator(".verdict").first.inner_text() == "guilty (upheld)"
    assert page.locator("table.votes tbody tr").count() == record.guilty_votes + record.innocent_votes
    slashed = ProviderRegistry(chain).provider_record(s.cheater)["slashed_total"]
    slash_row = page.locator("table.slashes tbody tr")
    assert slash_row.count() == 1
    assert int(slash_row.locator(".amt").get_attribute("data-base-units")) == slashed
    page.locator("main table a.provider", has_text=s.cheater).first.click()
    page.wait_for_url(f"**/providers/{s.cheater}")

    # The provider page says why it was slashed, and links back to the verdict.
    cause = page.locator("table.slashes tbody tr .cause")
    assert cause.inner_text() == f"verdict of challenge #{s.upheld}"
    assert page.locator("#slashed a.fig").inner_text() == show_amount(slashed, 18, "TSTK")
    cause.locator("a").click()
    page.wait_for_url(f"**/challenges/{s.upheld}")


def test_rollback_rebuilds_the_derived_tables(verified, tmp_path):
    """Rebuilding the derived tables from the stored events (what a reorg rollback does) gives the
    rows indexing gave, and rolling back to a middle block gives what indexing up to it gave."""
    chain, engine, s = verified["chain"], verified["engine"], verified["s"]
    derived = {t.__tablename__ for t in db.DERIVED}

    def tables(e) -> dict:
        return {name: rows for name, rows in dump(e).items() if name in derived}

    before = tables(engine)
    assert all(before[t.__tablename__] for t in (db.Round, db.Challenge, db.Vote, db.Settlement, db.Validator,
                                                  db.HardwareCase, db.HardwareEntry, db.Slash, db.Order))
    middle = (s.first_block + s.last_block) // 2
    copy = make_engine(f"sqlite:///{tmp_path}/copy.db")
    Indexer(chain, copy, confirmations=chain.block_number() - middle, batch_blocks=5).sync()
    indexer = Indexer(chain, engine, confirmations=0)
    with Session(engine) as session, session.begin():
        cursor = session.get(db.Cursor, 1)
        indexer._rollback(session, cursor, cursor.last_block, cursor.last_hash, cursor.last_timestamp)
    assert tables(engine) == before
    with Session(engine) as session, session.begin():
        cursor = session.get(db.Cursor, 1)
        indexer._rollback(session, cursor, middle, None, None)
    assert tables(engine) == tables(copy)
    indexer.sync()          # back to the head for the other tests of the module
    assert tables(engine) == before


# -- derive rules on hand-made events (no chain) -----------------------------------------------------
A, B, V, CHALLENGER = (Web3.to_checksum_address("0x" + c * 40) for c in "abcd")


def _record(n: int, contract: str, event: str, tx: str, **args) -> EventRecord:
    return EventRecord(block_number=n, block_hash="0x" + f"{n:064x}", timestamp=1_800_000_000 + 60 * n,
                       tx_hash=tx, log_index=n, contract=contract, event=event, args=args)


def _index(engine, records: list[EventRecord]) -> None:
    with Session(engine) as session, session.begin():
        session.add(db.Cursor(id=1, chain_id=1, market=A, registry_address=A, first_block=0,
                              last_block=records[-1].block_number, last_hash=records[-1].block_hash,
                              last_timestamp=records[-1].timestamp))
        for r in records:
            lease_id, provider = event_keys(session, r)
            session.add(db.Event(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                                 tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract, event=r.event,
                                 args=args_json(r.args), lease_id=lease_id, provider=provider))
            apply_event(session, r)


def test_slash_causes_either_order_and_cpu_words(tmp_path):
    tx = ["0x" + f"{i:064x}" for i in range(10)]
    registered = dict(stake=200 * 10**18, gpu_count=1, gpu_memory_mb=64_000, benchmark_score=1,
                      endpoint="http://x", price_floor=10**6)
    records = [
        _record(1, "ProviderRegistry", "ProviderRegistered", tx[1], provider=A, gpu_model="cpu-x86_64",
                **registered),
        _record(2, "ProviderRegistry", "ProviderRegistered", tx[2], provider=B, gpu_model="H100",
                **registered),
        # The verdict's slash comes before the verdict in its transaction ...
        _record(3, "ProviderRegistry", "Slashed", tx[3], provider=A, amount=10**20, recipient=V, slasher=V),
        _record(4, "Verification", "ChallengeResolved", tx[3], challenge_id=7, outcome=2, slashed=10**20,
                to_challenger=0, to_tenant=0, to_voters=0, burned=10**20, bond_to_provider=0,
                bond_returned=0),
        # ... a downtime claim's after it; a slash alone is the slasher's own.
        _record(5, "Market", "DowntimeClaimed", tx[5], lease_id=3, tenant=CHALLENGER, provider=B, epochs=[1],
                amount=5, refund=5, overdrawn=0, stake_slashed=10**18, claimed_by=CHALLENGER),
        _record(6, "ProviderRegistry", "Slashed", tx[5], provider=B, amount=10**18, recipient=CHALLENGER,
                slasher=A),
        _record(7, "ProviderRegistry", "Slashed", tx[7], provider=B, amount=1, recipient=V, slasher=V),
    ]
    engine = make_engine(f"sqlite:///{tmp_path}/hand.db")
    _index(engine, records)
    with Session(engine) as session:
        slashes = session.scalars(select(db.Slash).order_by(db.Slash.id))
        causes = [(x.address, x.cause, x.cause_ref) for x in slashes]
        providers = {p.address: p for p in session.scalars(select(db.Provider))}
    assert causes == [(A, "challenge", "7"), (B, "downtime", "3"), (B, "direct", None)]
    assert providers[B].slashed == 10**18 + 1
    with serve(create_app(engine)) as base, httpx.Client(base_url=base, timeout=30) as client:
        cpu = client.get(f"/providers/{A}").text
        assert ">memory<" in cpu and "GPU memory" not in cpu and ">CPU model<" in cpu
        assert "verdict of" in cpu and 'href="/challenges/7"' in cpu
        gpu = client.get(f"/providers/{B}").text
        assert ">GPU memory<" in gpu and "downtime claimed on lease" in gpu and "direct slash by" in gpu
        assert client.get(f"/api/providers/{A}").json()["is_cpu"] is True
        tx_page = client.get(f"/tx/{tx[3]}").text
        assert "100.00 TSTK" in tx_page and 'title="100.00 TSTK"' in tx_page and str(10**20) not in \
            re.sub(r'data-base-units="\d+"', "", tx_page)


# -- lists anyone can grow are paged (H12): a provider's commit_result spam, a 9,000-event tx -------
T, SPAMMER = (Web3.to_checksum_address("0x" + c * 40) for c in "ef")
COMMITS, SPAM_LOGS, WITHDRAWALS, TOP_UPS = 4_500, 9_000, 60, 30   # the attack's sizes (/tmp/attack)
PAGE_MS, PAGE_BYTES = 300, 200_000          # generous bounds for a loaded machine


def _bloat_records() -> tuple[list[EventRecord], str]:
    """A lease whose provider committed a result 4,500 times (the contract allows it), with its
    top-ups and withdrawals spread among them, and an outsider's transaction of 9,000 zero-value
    token transfers. Returns the records in chain order and the spam transaction's hash."""
    t0, recs, n = 1_800_000_000, [], 0

    def add(block: int, contract: str, event: str, tx: str, log: int, **args) -> None:
        recs.append(EventRecord(block_number=block, block_hash="0x" + f"{block:064x}",
                                timestamp=t0 + 12 * block, tx_hash=tx, log_index=log, contract=contract,
                                event=event, args=args))

    def tx() -> str:
        nonlocal n
        n += 1
        return "0x" + f"{n:064x}"

    add(1, "ProviderRegistry", "ProviderRegistered", tx(), 0, provider=A, gpu_model="H100",
        stake=200 * 10**18, gpu_count=1, gpu_memory_mb=80_000, benchmark_score=1, endpoint="http://a",
        price_floor=10**6)
    add(2, "Market", "OrderCreated", tx(), 0, order_id=1, tenant=T, spec_hash="0x" + "00" * 32, gpu_model="",
        min_gpus=1, min_gpu_memory_mb=0, max_price_per_gpu_hour=10**6, duration=3600, nodes=1,
        deposit=10**9, verified=False)
    add(3, "Market", "LeaseCreated", tx(), 0, lease_id=1, order_id=1, tenant=T, provider=A,
        price_per_gpu_hour=10**6, gpus=1, budget=10**8, start=t0 + 36, fee_bps=100)
    block = 4
    for i in range(COMMITS):
        if i % 100 == 0:
            block += 1
        add(block, "Market", "ResultCommitted", tx(), i % 100, lease_id=1, provider=A,
            result_hash="0x" + f"{i:064x}")
        if i % (COMMITS // WITHDRAWALS) == 7:
            add(block, "Market", "Withdrawn", tx(), 100 + i % 100, lease_id=1, provider=A,
                amount_to_provider=990, fee=10)
        if i % (COMMITS // TOP_UPS) == 11:
            add(block, "Market", "LeaseToppedUp", tx(), 200 + i % 100, lease_id=1, tenant=T, amount=10**6,
                budget=0)
    spam = tx()
    for i in range(SPAM_LOGS):
        add(block + 1, "PaymentToken", "Transfer", spam, i, sender=SPAMMER, receiver=SPAMMER, value=0)
    budget = 10**8
    for r in recs:                       # each top-up's budget as the Market logs it
        if r.event == "LeaseToppedUp":
            budget += r.args["amount"]
            r.args["budget"] = budget
    return sorted(recs, key=lambda r: (r.block_number, r.log_index)), spam


@pytest.fixture(scope="module")
def bloated(explorer_module_db):
    """`_bloat_records` indexed (as the indexer writes events: `derive.event_columns`) and served."""
    from tessera.explorer.derive import event_columns

    records, spam = _bloat_records()
    engine = make_engine(explorer_module_db("bloated"))
    with Session(engine) as session, session.begin():
        last = records[-1]
        session.add(db.Cursor(id=1, chain_id=1, market=A, registry_address=A, first_block=0,
                              last_block=last.block_number, last_hash=last.block_hash,
                              last_timestamp=last.timestamp))
        for r in records:
            session.add(db.Event(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                                 tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract, event=r.event,
                                 args=args_json(r.args), **event_columns(session, r)))
            apply_event(session, r)
    with serve(create_app(engine)) as base:
        yield {"base": base, "engine": engine, "records": records, "spam": spam}
    engine.dispose()


def _timed(client: httpx.Client, path: str, tries: int = 5) -> tuple[httpx.Response, float]:
    """The reply and the median of `tries` answer times in ms (the first, cold, one included)."""
    times, reply = [], None
    for _ in range(tries):
        start = time.perf_counter()
        reply = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
    return reply, sorted(times)[len(times) // 2]


def test_spammed_lease_and_tx_pages_are_paged_fast_and_add_up(bloated, request):
    records, spam, base = bloated["records"], bloated["spam"], bloated["base"]
    lease_events = [r for r in records if r.args.get("lease_id") == 1]
    pages = -(-len(lease_events) // 50)
    timings = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, path in (("lease", "/leases/1"), ("lease-last-page", f"/leases/1?page={pages}"),
                           ("lease-api", "/api/leases/1"), ("tx", f"/tx/{spam}"),
                           ("tx-last-page", f"/tx/{spam}?page={SPAM_LOGS // 50}"),
                           ("tx-api", f"/api/tx/{spam}"),
                           ("provider", f"/providers/{A}"), ("provider-api", f"/api/providers/{A}"),
                           ("figure", "/figure?name=revenue.total.tenant_paid&key=all")):
            reply, ms = _timed(client, path)
            assert reply.status_code == 200, (path, reply.status_code)
            assert len(reply.content) < PAGE_BYTES, (path, len(reply.content))
            assert ms < PAGE_MS, (path, ms)
            timings[name] = (round(ms, 1), len(reply.content))
        print(f"\n[{request.node.callspec.id}] page ms (median of 5), bytes:", timings)

        html = client.get("/leases/1").text
        assert html.count('<span class="event">') == 50
        assert 'class="next" href="/leases/1?page=2"' in html and f"of {len(lease_events):,}" in html
        assert "adds up to the budget" in html        # every money event counted, whatever the page
        budget = 10**8 + TOP_UPS * 10**6
        assert f'data-base-units="{budget}"' in html
        assert 'class="next" href="/leases/1?payments=2#payments"' in html     # 60 payouts: two pages

        # Every event of the lease, once, in chain order, through the API's pages.
        seen, page_no = [], 1
        while True:
            got = client.get(f"/api/leases/1?page={page_no}").json()
            assert len(got["events"]) <= 50 and got["events_paging"]["total"] == len(lease_events)
            assert got["ledger"]["adds_up"] and got["ledger"]["budget_base_units"] == str(budget)
            seen += [(ev["block_number"], ev["log_index"]) for ev in got["events"]]
            if page_no == got["events_paging"]["pages"]:
                break
            page_no += 1
        assert seen == [(r.block_number, r.log_index) for r in lease_events]

        seen = []
        for n in range(1, SPAM_LOGS // 50 + 1):
            got = client.get(f"/api/tx/{spam}?page={n}").json()
            assert got["paging"] == {"page": n, "pages": SPAM_LOGS // 50, "total": SPAM_LOGS, "size": 50}
            seen += [ev["log_index"] for ev in got["events"]]
        assert seen == list(range(SPAM_LOGS))
        tx_html = client.get(f"/tx/{spam}?page=2").text
        assert 'class="previous"' in tx_html and 'class="next"' in tx_html
        assert "9,000 indexed events" in tx_html

        figure = client.get("/api/figure?name=revenue.total.tenant_paid&key=all&page=2").json()
        assert figure["txs_paging"] == {"page": 2, "pages": 2, "total": WITHDRAWALS, "size": 50}
        assert len(figure["figure"]["txs"]) == WITHDRAWALS - 50
        overview = client.get("/api/overview").json()
        assert overview["revenue"]["tenant_paid"]["tx_count"] == WITHDRAWALS
        provider = client.get(f"/api/providers/{A}?payments=2").json()
        assert provider["payments_paging"]["total"] == WITHDRAWALS and len(provider["payments"]) == 10

        for path in ("/leases/1?page=0", "/leases/1?page=x", "/leases/1?page=-2", f"/leases/1?page={10**12}",
                     f"/leases/1?page={pages + 1}", "/api/leases/1?page=999", f"/tx/{spam}?page=181",
                     f"/tx/{spam}?page=1.5",
                     f"/api/tx/{spam}?page=", f"/providers/{A}?payments=3", f"/providers/{A}?leases=0",
                     "/figure?name=revenue.total.tenant_paid&key=all&page=3", "/api/figure?name=x&page=1"):
            reply = client.get(path)
            assert 400 <= reply.status_code < 500, (path, reply.status_code)


def test_every_list_pages_with_a_small_page_size(verified):
    """Two rows a page on the verified scenario: every vote, challenge event and lease event is
    reached through the next links, none twice."""
    s, engine = verified["s"], verified["engine"]
    with serve(create_app(engine, page_size=2)) as base, httpx.Client(base_url=base, timeout=30) as client:
        got = client.get(f"/api/challenges/{s.upheld}").json()
        votes, events = got["votes_paging"]["total"], got["events_paging"]["total"]
        assert votes == got["guilty_votes"] + got["innocent_votes"] > 2 and events > 2
        seen_votes, seen_events = [], []
        for n in range(1, got["votes_paging"]["pages"] + 1):
            page = client.get(f"/api/challenges/{s.upheld}?votes={n}").json()
            seen_votes += [v["validator"] for v in page["votes"]]
        for n in range(1, got["events_paging"]["pages"] + 1):
            seen_events += [(e["tx_hash"], e["log_index"])
                            for e in client.get(f"/api/challenges/{s.upheld}?page={n}").json()["events"]]
        assert len(set(seen_votes)) == len(seen_votes) == votes
        assert len(set(seen_events)) == len(seen_events) == events
        assert "Slashed" in {e["event"] for e in got["verdict_events"]}
        html = client.get(f"/challenges/{s.upheld}").text
        assert f'href="/challenges/{s.upheld}?votes=2#votes"' in html and 'href="/challenges/' in html
        lease = client.get(f"/leases/{s.cheater_lease}").text
        assert "adds up to the budget" in lease and f'href="/leases/{s.cheater_lease}?page=2"' in lease


def test_a_figure_inside_a_larger_answer_lists_its_first_transactions_and_counts_all():
    """revenue.total.tenant_paid has a transaction per payment: the overview must not grow with
    history, so a figure inline lists the first TXS_INLINE and counts them all."""
    from tessera.explorer.web.outputs import TXS_INLINE, figure_out
    from tessera.protocol.figures import Figure

    txs = tuple(sorted("0x" + f"{i:064x}" for i in range(TXS_INLINE * 3)))
    out = figure_out(Figure("revenue.total.tenant_paid", "all", 7, txs))
    assert out.tx_count == len(txs) and out.txs == list(txs[:TXS_INLINE])
    assert figure_out(Figure("revenue.total.tenant_paid", "all", 7, txs[:3])).txs == list(txs[:3])
