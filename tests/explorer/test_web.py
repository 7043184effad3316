"""The web explorer (`tessera explorer serve`) over a database indexed from a real anvil devnet.

The app is served by uvicorn in a background thread; pages are checked in Debian's Chromium through
Playwright (no downloaded browser: scripts/setup.sh installs /usr/bin/chromium). A provider whose
GPU model and endpoint carry HTML must show them as text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.support.uvicorn_server import serve
from web3 import Web3

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import free_port
from tessera.explorer import db
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer, database_figures, stored_records
from tessera.explorer.simulate import TUSD
from tessera.explorer.web import create_app
from tessera.explorer.web.charts import bar_chart, line_chart, nice_ticks
from tessera.explorer.web.models import FigureOut
from tessera.protocol import messages
from tessera.protocol.figures import ALL
from tessera.protocol.holdings import holdings
from tessera.protocol.liveness import sign_beat, words_of
from tessera.protocol.money import format_amount, show_amount

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
XSS_MODEL = "<script>window.__xss=1</script>H100"
XSS_ENDPOINT = 'http://127.0.0.1:7999/"><img src=x onerror="window.__xss2=1">'


def _keys(figures, name: str) -> list[str]:
    return sorted(key for n, key in figures if n == name)


@pytest.fixture(scope="module")
def web_chain(market_run):
    """The seeded market over more days, a provider with HTML in its offer and a lease on it,
    its liveness over 10 epochs by every kind of evidence, probes, an outage and a downtime claim
    (once per module: both backends index it)."""
    _, _, network, work = market_run
    for _ in range(3):   # the seeded market fits in one UTC day: spread payouts over a few more
        work.round(4, 86_400)
    t = work.now + 1
    p = next(p for p in work.providers.values() if work.fits(p, "", 1, t))
    work.send(p.address, work.registry, "update_offer", XSS_MODEL, p.gpus, 81920, 1000, XSS_ENDPOINT,
              p.floor)
    work.mine()
    tenant = work.tenants[0]
    work.send(tenant, work.market, "create_order", b"\x01" * 32, "", 1, 0, 5 * TUSD, 3600, 1, 5 * TUSD, False)
    order = work._logs(work.mine(), work.market, "OrderCreated")[0]
    nonce = next(work.nonce_counter)
    typed = messages.bid_typed_data(work.chain_id, work.market.address, order["order_id"], p.address,
                                    5 * TUSD, nonce, 2**40)
    signature = messages.sign(devnet_account(p.index), typed)
    work.send(tenant, work.market, "accept_bid", order["order_id"], p.address, 5 * TUSD, nonce, 2**40,
              bytes.fromhex(signature[2:]))
    lease = work._logs(work.mine(), work.market, "LeaseCreated")[0]
    work.mine(60)
    liveness = liveness_over_ten_epochs(work, network, p)
    # Three more epochs, so that the last missed one is final (downtime claims wait for it).
    for _ in range(3):
        work.mine(liveness["epoch_length"])
    facts = probes_outage_and_downtime(work, network, p, lease, liveness)
    return network, {"xss_provider": p.address, "xss_lease": lease["lease_id"], **liveness, **facts}


def liveness_over_ten_epochs(work, network, p) -> dict:
    """Provider `p`'s liveness in 10 epochs, by every kind of evidence (docs/uptime.md): a
    heartbeat in 7 (i % 3 != 2); in the other three, a validator (devnet account 1, the treasury,
    in no other role here) reports it in the next epoch and is challenged (a set challenge naming
    it), the provider shows its beat (i = 2: up by report; challenge 1, answered), reports it and
    is challenged, unanswered, then resolved (i = 5: revoked, the validator slashed; challenge 2),
    or nothing (i = 8: down)."""
    chain = Chain(network)
    uptime, validators = chain.uptime, chain.validators
    validator = devnet_account(1).address
    work.send(validator, work.stake, "approve", validators.address, 200 * 10**18)
    work.send(validator, validators, "register", 200 * 10**18)   # 150 left after the slash
    work.send(work.deployer, work.stake, "approve", uptime.address, 10**24)   # challenge bonds
    work.mine()
    registry = chain.contract("ProviderRegistry")
    words = words_of([registry.functions.index_of(p.address).call()],
                     registry.functions.provider_count().call())
    genesis, length = uptime.functions.genesis().call(), uptime.functions.epoch_length().call()
    beats, epochs, report_txs = [], [], []
    for i in range(10):
        latest = work.w3.eth.get_block("latest")
        epoch = (work.now + length - genesis) // length      # the epoch of the block mine() makes
        epochs.append(epoch)
        if i % 3 != 2:
            work.send(p.address, uptime, "heartbeat", epoch, latest["number"], latest["hash"])
            beats.append(epoch)
        elif i in (2, 5):
            work.send(work.deployer, uptime, "open_epoch")          # beats sign the epoch's seed
        if i in (3, 6):                                            # the report, the epoch after
            work.send(validator, uptime, "report_liveness", epochs[i - 1], words)
        if i in (4, 7):                                            # within report_delay + 1
            work.send(work.deployer, uptime, "challenge_inclusions", validator, epochs[i - 2], words,
                      words)
        if i == 5:                                                 # the beat of epochs[2], in time
            seed = uptime.functions.seed(epochs[2]).call()
            beat = sign_beat(devnet_account(p.index), work.chain_id, uptime.address, epochs[2], seed)
            work.send(p.address, uptime, "answer_challenge", 1, [p.address], [bytes.fromhex(beat[2:])])
        if i == 9:                                                 # past the answer time
            work.send(work.deployer, uptime, "resolve_challenge", 2)
        receipts = work.mine(length)
        report_txs += [r["transactionHash"] for r in receipts
                       if Web3.to_checksum_address(r["from"]) == validator]
    return {"beats": beats, "epochs": epochs, "reported": epochs[2], "revoked": epochs[5],
            "down": epochs[8], "liveness_reports": report_txs, "validator": validator,
            "epoch_length": length}


@pytest.fixture(scope="module")
def served(web_chain, explorer_module_db):
    """`web_chain` indexed into a fresh database (SQLite, then PostgreSQL) and served by uvicorn."""
    network, facts = web_chain
    url = explorer_module_db("web")
    engine = make_engine(url)
    Indexer(Chain(network), engine, confirmations=0).sync()
    with serve(create_app(engine), start_timeout=30) as base:
        yield {"base": base, "engine": engine, "url": url, "uptime": network.contracts["Uptime"], **facts}
    engine.dispose()


def probes_outage_and_downtime(work, network, p, lease, liveness: dict) -> dict:
    """Real transactions for the liveness figures: the validator posts one probe report per ended
    epoch of the ten, (1 answered) for provider `p` where it beat and (1 missed) elsewhere, and
    (1 missed) for a silent provider `q`; anyone reports q's outage of `jail_after` final epochs;
    the tenant claims p's down epochs of its lease (revoked, and with no evidence) as downtime.
    The reports' roots are placeholders: the explorer counts tallies as posted, never leaves."""
    chain = Chain(network)
    uptime, probes = chain.uptime, chain.probes
    validator, epochs, beats = liveness["validator"], liveness["epochs"], liveness["beats"]
    q = next(x.address for x in work.providers.values() if x.address != p.address)
    ended = epochs[:-1]
    for epoch in ended:
        answered = int(epoch in beats)
        tallies = sorted([(p.address, answered, 1 - answered), (q, 0, 1)], key=lambda t: int(t[0], 16))
        work.send(validator, probes, "report", epoch, Web3.keccak(text=f"root {epoch}"), 2, tallies)
    genesis, length = uptime.functions.genesis().call(), uptime.functions.epoch_length().call()
    jail_after = uptime.functions.jail_after().call()
    lag = uptime.functions.report_delay().call() + 1 + uptime.functions.answer_epochs().call()
    # The last stretch of final epochs as the block starts (final: more than `lag` epochs ago).
    first = (work.now + 1 - genesis) // length - lag - jail_after
    work.send(work.deployer, uptime, "report_outage", q, first)
    missed = [liveness["revoked"], liveness["down"]]
    work.send(work.tenants[0], work.market, "claim_downtime", lease["lease_id"], missed)
    receipts = work.mine()
    by_sender = {}
    for r in receipts:
        by_sender.setdefault(Web3.to_checksum_address(r["from"]), []).append(r["transactionHash"])
    return {"report_txs": sorted(by_sender[validator]), "answered": len(set(ended) & set(beats)),
            "missed": len(set(ended) - set(beats)), "reports": len(ended), "silent": q,
            "outage_tx": by_sender[work.deployer][0], "outage": (first, first + jail_after - 1),
            "downtime_tx": by_sender[Web3.to_checksum_address(work.tenants[0])][0],
            "downtime_epochs": missed}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium; "
                    "Playwright must not download its own browser)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run scripts/setup.sh", pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


from tessera.explorer.web.outputs import TXS_INLINE  # noqa: E402


def _figure_dicts(node):
    """Every figure object ({name, key, value, txs, tx_count}) anywhere in a JSON document."""
    if isinstance(node, dict):
        if set(node) == {"name", "key", "value", "unit", "decimals", "txs", "tx_count"}:
            yield node
        else:
            for value in node.values():
                yield from _figure_dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _figure_dicts(value)


def _assert_figures_match(document, figures) -> int:
    count = 0
    for f in _figure_dicts(document):
        expected = figures.get((f["name"], f["key"]))
        txs = list(expected.txs) if expected else []
        want = (str(expected.value) if expected else "0", txs[:TXS_INLINE])
        assert (f["value"], f["txs"]) == want, f"{f['name']}[{f['key']}]"
        assert f["tx_count"] == len(txs)
        count += 1
    return count


def test_api_answers_the_figures_of_the_database(served):
    figures, cursor = database_figures(served["engine"])
    with httpx.Client(base_url=served["base"], timeout=30) as client:
        overview = client.get("/api/overview").json()
        assert overview["block"] == cursor.last_block and overview["as_of"] == cursor.last_timestamp
        assert _assert_figures_match(overview, figures) > 30
        assert [r["key"] for r in overview["revenue_by_day"]] == _keys(figures, "revenue.by_day.tenant_paid")
        assert ([r["key"] for r in overview["utilization_by_day"]]
                == _keys(figures, "utilization.by_day.registered_gpu_seconds"))
        assert [r["model"] for r in overview["prices"]] == _keys(figures, "price.by_model.count")
        assert XSS_MODEL in [r["model"] for r in overview["prices"]]
        total = figures[("revenue.total.tenant_paid", ALL)].value
        assert overview["revenue"]["tenant_paid"]["value"] == str(total)
        assert int(overview["leases"]["active"]["value"]) >= 1

        listed = client.get("/api/providers").json()
        providers = listed["providers"]
        assert (listed["page"], listed["pages"], listed["total"]) == (1, 1, len(providers))
        assert {p["address"] for p in providers} == set(_keys(figures, "stake.by_provider.active"))
        _assert_figures_match(providers, figures)
        address = served["xss_provider"]
        detail = client.get(f"/api/providers/{address.lower()}").json()
        assert detail["address"] == address and detail["gpu_model"] == XSS_MODEL
        assert detail["endpoint"] == XSS_ENDPOINT
        _assert_figures_match(detail, figures)
        assert served["xss_lease"] in [lease["lease_id"] for lease in detail["lease_list"]]

        lease = client.get(f"/api/leases/{served['xss_lease']}").json()
        assert lease["gpu_model"] == XSS_MODEL and lease["status"] == "active"
        assert lease["events"][0]["event"] == "LeaseCreated"
        assert lease["events"][0]["tx_hash"] == lease["created_tx"]
        tx = client.get(f"/api/tx/{lease['created_tx']}").json()
        assert "LeaseCreated" in [ev["event"] for ev in tx["events"]]

        for path, words in (("/api/providers/0x000000000000000000000000000000000000dEaD", "no provider"),
                            ("/api/providers/not-an-address", "not an address"),
                            ("/api/leases/999999", "no lease 999999"),
                            ("/api/leases/" + "9" * 23, "no lease"),  # past SQLite's integers
                            ("/api/tx/0x" + "ab" * 32, "no indexed event")):
            reply = client.get(path)
            assert reply.status_code == 404 and words in reply.json()["detail"], path
        reply = client.get("/providers/0x000000000000000000000000000000000000dEaD")
        assert reply.status_code == 404 and "no provider" in reply.text and "<html" in reply.text


def test_openapi_lists_the_endpoints_and_pages_load_nothing_external(served):
    with httpx.Client(base_url=served["base"], timeout=30) as client:
        schema = client.get("/openapi.json").json()
        assert {"/api/overview", "/api/providers", "/api/providers/{address}", "/api/leases/{lease_id}",
                "/api/tx/{tx_hash}"} <= set(schema["paths"])
        assert "404" in schema["paths"]["/api/leases/{lease_id}"]["get"]["responses"]
        assert "FigureOut" in schema["components"]["schemas"]
        html = client.get("/")
        assert "script-src 'none'" in html.headers["content-security-policy"]
        for needle in ("<script", "<link", "src=\"http", "cdn"):
            assert needle not in html.text.lower().replace(XSS_MODEL.lower(), ""), needle


def test_overview_charts_and_links_in_a_browser(served, page):
    figures, _ = database_figures(served["engine"])
    days = _keys(figures, "revenue.by_day.tenant_paid")
    util_days = _keys(figures, "utilization.by_day.registered_gpu_seconds")
    base = served["base"]
    page.goto(base + "/")
    assert page.title().startswith("Overview")

    revenue = page.locator("svg#revenue-chart")
    box = revenue.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    bars = revenue.locator("rect.bar")
    assert bars.count() == len(days) >= 2
    heights = [bars.nth(i).bounding_box()["height"] for i in range(bars.count())]
    assert all(h >= 0 for h in heights) and sum(h > 0 for h in heights) >= 2
    assert page.eval_on_selector("svg#revenue-chart rect.bar", "el => el.getBBox().width") > 0
    util = page.locator("svg#utilization-chart")
    assert util.locator("circle.point").count() == len(util_days)
    assert util.locator("polyline.line").bounding_box()["width"] > 0

    # A provider link leads to that provider's page.
    link = page.locator("table.providers a.provider").first
    address = link.inner_text()
    link.click()
    page.wait_for_url(f"**/providers/{address}")
    assert page.locator("#address").inner_text() == address

    # A figure links to its transactions, and a transaction to the page listing its events.
    page.goto(base + "/")
    page.locator("table.revenue a.fig").first.click()
    page.wait_for_url("**/figure?*")
    expected = figures[("revenue.by_day.tenant_paid", days[0])]
    assert page.locator("#value").get_attribute("data-value") == str(expected.value)
    tx_links = page.locator("table.txs a.tx")
    assert tx_links.count() == len(expected.txs)
    tx = tx_links.first.inner_text()
    assert tx == expected.txs[0]
    tx_links.first.click()
    page.wait_for_url(f"**/tx/{tx}")
    assert tx in page.locator("h1").inner_text()
    events = page.locator("table.events tbody tr")
    assert events.count() >= 1
    assert {"Withdrawn", "LeaseClosed"} & set(page.locator("table.events").inner_text().split())


def test_onchain_strings_are_shown_as_text(served, page):
    base, address = served["base"], served["xss_provider"]
    for path in ("/", f"/providers/{address}", f"/leases/{served['xss_lease']}", "/providers"):
        page.goto(base + path)
        assert page.locator("script").count() == 0, path
        assert page.locator("img").count() == 0, path
        assert page.evaluate("window.__xss === undefined && window.__xss2 === undefined"), path
        assert XSS_MODEL in page.locator("main").inner_text(), path
    page.goto(f"{base}/providers/{address}")
    assert page.locator("#gpu-model").inner_text() == XSS_MODEL
    assert page.locator("#endpoint").inner_text() == XSS_ENDPOINT


def test_serve_command_serves_the_api(served):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tessera.explorer.cli", "explorer", "serve",
                             "--database", served["url"], "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/overview", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "explorer serve did not start"
                time.sleep(0.2)
        assert reply.status_code == 200 and int(reply.json()["leases"]["total"]["value"]) > 40
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    said = proc.stdout.read().decode()
    # The figures are built before it listens: no visitor waits for the whole history.
    built = re.search(r"figures as of block ([\d,]+) in [\d.]+ s", said)
    assert built and said.index(built.group(0)) < said.index("explorer: http://"), said
    assert int(built.group(1).replace(",", "")) == reply.json()["block"]



REL = "reliability.by_provider"


def _pct_bps(value: int | str) -> str:
    return f"{int(value) / 100:.2f}%"


def test_api_serves_uptime_reliability_and_recent_epochs(served):
    figures, _ = database_figures(served["engine"])
    address, beats = served["xss_provider"], served["beats"]
    with httpx.Client(base_url=served["base"], timeout=30) as client:
        scores = client.get("/api/providers").json()["providers"]
        assert sorted(s["address"] for s in scores) == _keys(figures, f"{REL}.bps")
        assert len(scores) == len(_keys(figures, "stake.by_provider.active"))
        _assert_figures_match(scores, figures)
        detail = client.get(f"/api/providers/{address}").json()
        assert _assert_figures_match(detail["reliability"], figures) == 10
        assert _assert_figures_match(detail["uptime"], figures) == 8
        u = {part: int(f["value"]) for part, f in detail["uptime"].items()}
        # Up by 7 heartbeats and 1 validator's report; 1 report revoked (down); none claimed.
        assert (u["heartbeats"], u["reported"], u["claimed"], u["revoked"]) == (len(beats), 1, 0, 1)
        assert u["up"] == len(beats) + 1 and u["bps"] == u["up"] * 10_000 // u["epochs"]
        assert detail["uptime"]["bps"] == {
            "name": "uptime.by_provider.bps", "key": address,
            "value": str(figures[("uptime.by_provider.bps", address)].value), "unit": "bps", "decimals": 0,
            "txs": list(figures[("uptime.by_provider.bps", address)].txs[:TXS_INLINE]),
            "tx_count": len(figures[("uptime.by_provider.bps", address)].txs)}
        strip = detail["recent_epochs"]
        last, shown_count = strip["last_epoch"], len(strip["epochs"])
        assert shown_count == min(last - strip["first_epoch"] + 1, 120)
        assert [ep["epoch"] for ep in strip["epochs"]] == list(range(last - shown_count + 1, last + 1))
        states = {ep["epoch"]: ep for ep in strip["epochs"]}
        by_state = lambda state: sorted(ep for ep, x in states.items() if x["state"] == state)  # noqa: E731
        assert by_state("heartbeat") == beats
        assert by_state("report") == [served["reported"]] and by_state("revoked") == [served["revoked"]]
        assert served["down"] in by_state("down") and by_state("claim") == []
        # Not final (the last report_delay + 1 + answer_epochs ended epochs and the running one)
        # and no heartbeat yet: pending.
        assert by_state("pending") == [ep for ep in range(strip["final_through"] + 1, last + 1)
                                       if ep not in beats]
        assert len(by_state("pending")) == u["pending"]
        assert [states[ep]["up"] for ep in (beats[0], served["reported"], served["down"], last)] == \
            [True, True, False, None]
        heartbeat_txs = set(figures[("uptime.by_provider.heartbeats", address)].txs)
        assert {states[ep]["tx"] for ep in beats} <= heartbeat_txs
        assert states[served["reported"]]["tx"] in figures[("uptime.by_provider.reported", address)].txs
        assert states[served["revoked"]]["tx"] in figures[("uptime.by_provider.revoked", address)].txs
        assert states[served["down"]]["tx"] is None


def test_uptime_and_reliability_pages_in_a_browser(served, page):
    figures, _ = database_figures(served["engine"])
    base, address, beats = served["base"], served["xss_provider"], served["beats"]

    # The overview's per-provider table: one row per provider, the score links to its figure.
    page.goto(base + "/")
    rows = page.locator("table.reliability tbody tr")
    providers = _keys(figures, f"{REL}.bps")
    assert rows.count() == len(providers)
    for i in range(rows.count()):
        row_address = rows.nth(i).locator("a.provider").inner_text()
        expected = _pct_bps(figures[(f"{REL}.bps", row_address)].value)
        assert rows.nth(i).locator(".score a.fig").inner_text() == expected
    rows.first.locator(".score a.fig").click()
    page.wait_for_url("**/figure?*")
    first = figures[(f"{REL}.bps", providers[0])]
    assert page.locator("#value").get_attribute("data-value") == str(first.value)
    assert page.locator("table.txs a.tx").count() == len(first.txs) > 0

    # The provider page: uptime, the epoch chart, the reliability parts.
    page.goto(f"{base}/providers/{address}")
    uptime_bps = figures[("uptime.by_provider.bps", address)].value
    assert page.locator("#uptime").inner_text() == _pct_bps(uptime_bps)
    assert page.locator("#reliability").inner_text() == _pct_bps(figures[(f"{REL}.bps", address)].value)
    assert page.locator("table.score-parts tbody tr").count() == 5
    chart = page.locator("svg#uptime-chart")
    box = chart.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 40
    cells = chart.locator("rect.epoch")
    assert cells.count() == 120          # registered days ago: the last 120 epochs
    assert chart.locator("rect.up.heartbeat").count() == len(beats)
    assert chart.locator("rect.up.report").count() == 1 and chart.locator("rect.down.revoked").count() == 1
    assert chart.locator("rect.pending").count() == figures[("uptime.by_provider.pending", address)].value
    assert chart.locator("rect.up").count() + chart.locator("rect.down").count() + \
        chart.locator("rect.pending").count() == 120
    assert all(chart.locator("rect.heartbeat").nth(i).bounding_box()["width"] > 0 for i in range(len(beats)))
    assert [int(x) for x in chart.locator("rect.heartbeat").evaluate_all(
        "els => els.map(el => el.dataset.epoch)")] == beats
    assert "by validators' report" in page.locator("div.chart:has(svg#uptime-chart) h3").inner_text()
    assert page.locator("#up").inner_text() == str(len(beats) + 1)
    # A heartbeat cell leads to its transaction, which holds that epoch's Heartbeat event.
    chart.locator("a").first.click()
    page.wait_for_url("**/tx/0x*")
    events = page.locator("table.events").inner_text()
    assert "Heartbeat" in events and f"epoch: {beats[0]}" in events
    # A part of the score leads to the transactions behind it.
    page.goto(f"{base}/providers/{address}")
    page.locator("table.score-parts tr", has_text="uptime (smoothed)").locator("a.fig").click()
    page.wait_for_url("**/figure?*")
    up = figures[(f"{REL}.uptime_bps", address)]
    assert page.locator("#value").get_attribute("data-value") == str(up.value)
    # Its heartbeats, the validator's report and the registration.
    assert page.locator("table.txs a.tx").count() == len(up.txs) == len(beats) + 2
    # The report's cell leads to the validator's LivenessReported, naming the provider.
    page.goto(f"{base}/providers/{address}")
    page.locator(f'svg#uptime-chart a:has(rect[data-epoch="{served["reported"]}"])').click()
    page.wait_for_url("**/tx/0x*")
    events = page.locator("table.events").inner_text()
    assert "LivenessReported" in events and "1 providers named" in events


def test_liveness_challenges_reports_and_the_validator_slash(served, page):
    """The challenges of the reports naming the provider, on its page and its validator's: one
    answered by the provider's own beat (the answer fee to it, the rest of the bond back to the
    challenger, the report stands), one unanswered (revoked, the validator slashed); the validator's liveness
    reports; its slash, explained by the unanswered challenge; and the Uptime contract's stake
    tokens, from the real Transfer logs, all paid out (the audit's holding)."""
    figures, _ = database_figures(served["engine"])
    base, p, v = served["base"], served["xss_provider"], served["validator"]
    with httpx.Client(base_url=base, timeout=30) as client:
        c, answered = client.get(f"/api/providers/{p}").json()["liveness_challenges"]   # newest first
        assert (c["challenge_id"], c["validator"], c["epoch"], c["status"], c["named_count"],
                c["answered"], c["unanswered"]) == (2, v, str(served["revoked"]), "resolved", 1, 0, 1)
        [named] = c["named"]
        assert (named["provider"], named["answered_by"], named["shown_on_challenge"]) == (p, None, None)
        assert c["slashed_base_units"] != "0" and c["token"] == "TSTK" and c["decimals"] == 18
        assert int(c["to_challenger_base_units"]) + int(c["burned_base_units"]) == \
            int(c["slashed_base_units"])
        assert c["bond_returned_base_units"] == c["bond_base_units"] and c["paid_base_units"] == "0"
        assert c["opened_tx"] in figures[("uptime.by_provider.revoked", p)].txs  # revoked unanswered
        # The answered one: the provider showed its own beat alone in the second half and was
        # paid that answer's gas (an own answer: more than the answer fee, challenge_bond / 512,
        # at most 16 of them); the rest back to the challenger, settled in the answer's own
        # transaction; the report stands. Nothing goes to the validator.
        assert (answered["challenge_id"], answered["epoch"], answered["status"], answered["answered"],
                answered["unanswered"], answered["slashed_base_units"]) == (
            1, str(served["reported"]), "answered", 1, 0, "0")
        [shown] = answered["named"]
        bond = int(answered["bond_base_units"])
        fee, paid = bond * 625 // 10_000 // 32, int(shown["to_answerer_base_units"])   # one bond
        assert (shown["provider"], shown["answered_by"]) == (p, p) and fee < paid <= 16 * fee
        assert (answered["paid_base_units"], answered["bond_returned_base_units"]) == (
            str(paid), str(bond - paid))
        assert "to_validator_base_units" not in answered
        assert shown["answered_tx"] == answered["resolved_tx"]
        assert figures[("uptime.by_provider.reported", p)].value == 1
        validator = client.get(f"/api/validators/{v}").json()
        reports = validator["liveness_reports"]
        assert [r["epoch"] for r in reports] == [served["revoked"], served["reported"]]   # newest first
        assert sorted(r["tx_hash"] for r in reports) == sorted(served["liveness_reports"])
        assert [r["providers_named"] for r in reports] == [1, 1]
        assert validator["liveness_challenges"] == [c, answered]
        [slash] = [x for x in validator["slash_list"] if x["cause"] == "liveness"]
        assert (slash["cause_ref"], slash["tx_hash"], slash["amount_base_units"], slash["recipient"]) == \
            ("2", c["resolved_tx"], c["slashed_base_units"], served["uptime"])  # shares it out
        assert client.get(f"/api/providers/{served['silent']}").json()["liveness_challenges"] == []
    with Session(served["engine"]) as session:
        [held] = [h for h in holdings(stored_records(session), {"Uptime": served["uptime"]})
                  if h.token == "StakeToken"]
    assert held.transfers == 7 and held.held == 0   # 2 bonds, 1 fee, 1 rest back, slash in, burn, payout
    assert held.surplus == 0 and held.claims == []
    page.goto(f"{base}/providers/{p}")
    rows = page.locator("table.liveness-challenges tbody tr")
    assert rows.count() == 2 and "validator slashed" in rows.nth(0).inner_text()
    assert "1 of 1 beats never shown" in rows.nth(0).inner_text() and "TSTK" in rows.nth(0).inner_text()
    answered_row = rows.nth(1).inner_text()
    assert "beat shown by" in answered_row and "back to the challenger" in answered_row
    assert "to the validator" not in page.locator("table.liveness-challenges").inner_text()
    page.goto(f"{base}/validators/{v}")
    assert page.locator("table.liveness-reports tbody tr").count() == 2
    assert f"{p}: beat not shown" in page.locator("table.liveness-challenges").inner_text()
    assert "liveness inclusion challenge 2 left unanswered" in page.locator("table.slashes").inner_text()


def _liveness(scores: list[dict], address: str) -> dict:
    return next(s["liveness"] for s in scores if s["address"] == address)


def test_api_serves_probes_outages_and_downtime(served):
    figures, _ = database_figures(served["engine"])
    p, q = served["xss_provider"], served["silent"]
    first, last = served["outage"]
    with httpx.Client(base_url=served["base"], timeout=30) as client:
        overview = client.get("/api/overview").json()
        scores = client.get("/api/providers").json()["providers"]
        mine = _liveness(scores, p)
        assert (mine["probes_answered"]["value"], mine["probes_missed"]["value"]) == \
            (str(served["answered"]), str(served["missed"]))
        assert mine["probes_answered"]["txs"] == mine["probes_missed"]["txs"] == served["report_txs"]
        assert mine["downtime_epochs"]["value"] == str(len(served["downtime_epochs"]))
        assert mine["downtime_epochs"]["txs"] == [served["downtime_tx"]]
        assert mine["outages"]["value"] == "0" and mine["outages"]["txs"] == []
        silent = _liveness(scores, q)
        assert silent["probes_missed"]["value"] == str(served["reports"])
        assert silent["outages"] == {"name": "outages.by_provider.count", "key": q, "value": "1",
                                     "unit": "count", "decimals": 0, "txs": [served["outage_tx"]],
                                     "tx_count": 1}
        assert silent["outage_epochs"]["value"] == str(last - first + 1)
        assert overview["downtime"]["epochs"]["txs"] == [served["downtime_tx"]]
        assert overview["downtime"]["forfeited"]["value"] == mine["downtime_forfeited"]["value"] != "0"
        _assert_figures_match(overview["downtime"], figures)

        providers = {x["address"]: x for x in client.get("/api/providers").json()["providers"]}
        assert providers[q]["liveness"] == silent and providers[p]["liveness"] == mine
        detail = client.get(f"/api/providers/{q}").json()
        [report] = detail["outage_reports"]
        assert (report["first_epoch"], report["last_epoch"], report["tx_hash"]) == \
            (first, last, served["outage_tx"])
        assert report["reporter"] == devnet_account(0).address
        assert report["jailed_until"] == detail["jailed_until"] > 0
        assert client.get(f"/api/providers/{p}").json()["outage_reports"] == []


def _open_figure_then_tx(page, link, figure, expected_tx: str | None = None) -> str:
    """Click a figure link; the figure page shows its value and its txs; open one of them."""
    link.click()
    page.wait_for_url("**/figure?*")
    assert page.locator("#value").get_attribute("data-value") == str(figure.value)
    txs = page.locator("table.txs a.tx")
    assert sorted(txs.nth(i).inner_text() for i in range(txs.count())) == list(figure.txs)
    tx = expected_tx or figure.txs[0]
    page.locator("table.txs a.tx", has_text=tx).click()
    page.wait_for_url(f"**/tx/{tx}")
    return page.locator("table.events").inner_text()


def test_probes_outages_and_downtime_in_a_browser(served, page):
    figures, _ = database_figures(served["engine"])
    base, p, q = served["base"], served["xss_provider"], served["silent"]
    first, last = served["outage"]

    # The overview's per-provider table: probes, outages and downtime, each linking to its txs.
    page.goto(base + "/")
    row = page.locator("table.reliability tbody tr", has_text=p)
    assert row.locator(".probes").inner_text() == f"{served['answered']} / {served['missed']}"
    assert row.locator(".outages").inner_text() == "0 (0 epochs)"
    events = _open_figure_then_tx(page, row.locator(".probes a.fig").first,
                                  figures[("probes.by_provider.answered", p)])
    assert "ProbeTally" in events and "ProbeReport" in events

    page.goto(base + "/")
    row = page.locator("table.reliability tbody tr", has_text=q)
    assert row.locator(".outages").inner_text() == f"1 ({last - first + 1} epochs)"
    assert row.locator(".probes").inner_text() == f"0 / {served['reports']}"
    events = _open_figure_then_tx(page, row.locator(".outages a.fig").first,
                                  figures[("outages.by_provider.count", q)], served["outage_tx"])
    assert "OutageReported" in events and "Jailed" in events

    # The silent provider's page lists the outage report, linking to its transaction.
    page.goto(f"{base}/providers/{q}")
    reports = page.locator("table.outage-reports tbody tr")
    assert reports.count() == 1
    cells = reports.first.locator("td")
    assert (cells.nth(0).inner_text(), cells.nth(1).inner_text()) == (str(first), str(last))
    assert cells.nth(3).inner_text() == devnet_account(0).address
    reports.first.locator("a.tx").click()
    page.wait_for_url(f"**/tx/{served['outage_tx']}")
    assert f"first_epoch: {first}" in page.locator("table.events").inner_text()

    # The probed provider's page: downtime claimed on its lease, linking to the claim.
    page.goto(f"{base}/providers/{p}")
    downtime = page.locator("main .downtime")
    epochs = figures[("downtime.by_provider.epochs", p)]
    assert downtime.inner_text().startswith(f"{len(served['downtime_epochs'])} epochs, ")
    assert page.locator("table.outage-reports tbody tr").inner_text() == "none"
    events = _open_figure_then_tx(page, downtime.locator("a.fig").first, epochs, served["downtime_tx"])
    assert "DowntimeClaimed" in events


def test_stats_prints_probes_outages_and_downtime(served, monkeypatch):
    from rich.console import Console

    from tessera.explorer import cli

    figures, cursor = database_figures(served["engine"])
    out = Console(record=True, width=250)
    monkeypatch.setattr(cli, "console", out)
    cli.render(figures, cursor.last_block, cursor.last_timestamp)
    text = out.export_text()
    table = text[text.index("Probes, outages and downtime"):]
    table = table[:table.index("└")]
    rows = {cells[0]: cells[1:] for line in table.splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 7}
    p, q = served["xss_provider"], served["silent"]
    first, last = served["outage"]
    forfeited = figures[("downtime.by_provider.forfeited", p)].value
    assert rows[p][:5] == [str(served["answered"]), str(served["missed"]), "0", "0",
                           str(len(served["downtime_epochs"]))]
    assert rows[p][5] == cli._money(forfeited)
    assert rows[q][:4] == ["0", str(served["reports"]), "1", str(last - first + 1)]
    assert sorted(rows) == _keys(figures, f"{REL}.bps")              # one row per provider


# -- lists, time left, units, charts (issue 12) ------------------------------------------------------
UNIX_TIME = re.compile(r"\b1[0-9]{9}\b")       # a Unix time of 2001..2286 written out
RAW_BASE_UNITS = re.compile(r"\b[0-9]{13,}\b")  # base units of an 18-decimal token (>= 0.00001 TSTK)


def _visible(html: str) -> str:
    """The text of a page's <main> (tags, hence tooltips and data attributes, removed)."""
    return re.sub(r"<[^>]+>", " ", html.split("<main>", 1)[1])


def test_lists_paging_time_left_and_junk_ids(served):
    figures, cursor = database_figures(served["engine"])
    total = figures[("leases.total.count", ALL)].value
    with httpx.Client(base_url=served["base"], timeout=30) as client:
        leases = client.get("/api/leases").json()
        ids = [x["lease_id"] for x in leases["leases"]]
        assert (leases["total"], leases["page"], leases["pages"]) == (total, 1, -(-total // 50))
        assert ids == sorted(ids, reverse=True)[:50] and ids[0] == total
        assert leases["leases"][0]["token"] == "TUSD" and leases["leases"][0]["decimals"] == 6
        assert client.get("/api/challenges").json() == {"page": 1, "pages": 1, "total": 0, "challenges": []}
        validators = client.get("/api/validators").json()
        assert [v["address"] for v in validators] == [devnet_account(1).address]
        # 200 staked, 50 slashed for an unanswered liveness challenge
        assert (validators[0]["stake_base_units"], validators[0]["slashed_base_units"]) == \
            (str(150 * 10**18), str(50 * 10**18))
        assert validators[0]["token"] == "TSTK" and validators[0]["slashes"] == 1

        # The open lease: time left until its budget runs out, on the API and the page.
        lease = client.get(f"/api/leases/{served['xss_lease']}").json()
        assert lease["status"] == "active"
        assert lease["time_left_s"] == lease["exhausts_at"] - cursor.last_timestamp > 0
        assert lease["ledger"]["adds_up"] and int(lease["ledger"]["escrow_base_units"]) > 0
        html = client.get(f"/leases/{served['xss_lease']}").text
        assert 'id="time-left"' in html and "the budget runs out at" in html
        assert 'id="adds-up"' in html and "adds up to the budget" in html

        for path in ("/leases/abc", "/leases/-1", "/leases/" + "9" * 30, "/leases?page=0", "/leases?page=x",
                     "/leases?page=999", "/challenges?page=2", "/challenges/1", "/validators/nope",
                     f"/validators/{served['xss_provider']}", "/providers/0x12", "/tx/0x12", "/figure",
                     "/figure?name=nope", "/api/leases?page=0", "/api/leases?page=999", "/api/challenges/1",
                     "/api/validators/0x" + "0" * 40, "/api/figure?name=nope", "/nope"):
            reply = client.get(path)
            assert 400 <= reply.status_code < 500, (path, reply.status_code)


def test_list_pages_page_newest_first(served):
    """Seven leases a page: each page holds the next older seven, linked both ways."""
    figures, _ = database_figures(served["engine"])
    total = figures[("leases.total.count", ALL)].value
    with serve(create_app(served["engine"], page_size=7)) as base, httpx.Client(base_url=base) as client:
        pages = -(-total // 7)
        seen = []
        for n in range(1, pages + 1):
            reply = client.get(f"/api/leases?page={n}").json()
            assert reply["pages"] == pages
            seen += [x["lease_id"] for x in reply["leases"]]
            html = client.get(f"/leases?page={n}").text
            assert ('class="older"' in html) == (n < pages) and ('class="newer"' in html) == (n > 1)
        assert seen == list(range(total, 0, -1))
        assert client.get(f"/leases?page={pages + 1}").status_code == 404


def test_providers_page_in_registration_order(served):
    """Anyone may register, so the providers list is paged too (two a page here): the pages
    hold every provider once, in registration order, with their scores beside them; the
    overview shows the first page and links to the rest."""
    with Session(served["engine"]) as s:
        order = list(s.scalars(select(db.Provider.address).order_by(db.Provider.registered_at,
                                                                    db.Provider.address)))
    assert len(order) > 2
    with serve(create_app(served["engine"], page_size=2)) as base, httpx.Client(base_url=base) as client:
        pages = -(-len(order) // 2)
        seen = []
        for n in range(1, pages + 1):
            reply = client.get(f"/api/providers?page={n}").json()
            assert (reply["page"], reply["pages"], reply["total"]) == (n, pages, len(order))
            seen += [x["address"] for x in reply["providers"]]
            html = client.get(f"/providers?page={n}").text
            assert "oldest first" in html
            assert ('class="next"' in html) == (n < pages) and ('class="previous"' in html) == (n > 1)
            for x in reply["providers"]:     # both tables: offers, then the scores
                assert html.count(f'href="/providers/{x["address"]}"') == 2
        assert seen == order
        home = client.get("/").text
        assert f"The first 2 of {len(order)}" in home and "href='/providers?page=2'" in home
        for path in (f"/providers?page={pages + 1}", f"/api/providers?page={pages + 1}"):
            assert client.get(path).status_code == 404
        for path in ("/providers?page=0", "/api/providers?page=x"):
            assert client.get(path).status_code == 422


def test_amounts_and_times_are_for_people(served):
    """No page shows a Unix time or raw base units; amounts carry their token, exact in the tooltip."""
    address = served["xss_provider"]
    with httpx.Client(base_url=served["base"], timeout=30) as client:
        detail = client.get(f"/api/providers/{address}").json()
        slashed = next(p for p in client.get("/api/providers").json()["providers"]
                       if p["stake_slashed"]["value"] != "0")
        slash = client.get(f"/api/providers/{slashed['address']}").json()["slashes"][0]
        paths = ["/", "/providers", f"/providers/{address}", f"/providers/{slashed['address']}", "/leases",
                 f"/leases/{served['xss_lease']}", "/validators", f"/validators/{devnet_account(1).address}",
                 f"/tx/{slash['tx_hash']}", f"/tx/{served['outage_tx']}", f"/tx/{served['downtime_tx']}",
                 "/figure?name=stake.total.active&key=all", "/figure?name=revenue.total.tenant_paid&key=all",
                 f"/figure?name=uptime.by_provider.epochs&key={address}"]
        for path in paths:
            html = client.get(path).text
            text = _visible(html)
            assert not UNIX_TIME.search(text), (path, UNIX_TIME.search(text))
            assert not RAW_BASE_UNITS.search(text), (path, RAW_BASE_UNITS.search(text))
            assert "block time" not in text, path
        amount = int(slash["amount_base_units"])
        html = client.get(f"/tx/{slash['tx_hash']}").text
        assert (f'title="{format_amount(amount, 18, "TSTK")}" data-base-units="{amount}">'
                f'{show_amount(amount, 18, "TSTK")}<') in html
        stake = client.get("/figure?name=stake.total.active&key=all").text
        assert 'data-value="' in stake and " TSTK" in _visible(stake)
        assert detail["gpu_memory_mb"] == 81920 and detail["is_cpu"] is False
        assert "GPU memory" in client.get(f"/providers/{address}").text


def test_nice_ticks_are_distinct_and_cover_the_top():
    for top in (0.01, 0.0125, 0.019, 0.000334, 0.15, 1, 3.7, 99.9, 123_456, 10**6, 1e-6, 0):
        ticks, decimals = nice_ticks(top)
        labels = [f"{t:,.{decimals}f}" for t in ticks]
        assert len(set(labels)) == len(labels) >= 2, (top, labels)
        assert ticks[0] == 0 and ticks[-1] >= top * (1 - 1e-9) and len(ticks) <= 6, (top, ticks)


def test_charts_read_with_one_day_or_a_hundred():
    f = FigureOut(name="revenue.by_day.tenant_paid", key="2026-01-01", value="12500", unit="TUSD", decimals=6,
                  txs=[], tx_count=0)
    for n in (1, 2, 100):
        items = [(f"2026-01-{i % 28 + 1:02d}", 0.0125 * (i + 1) / n, f"{i} TUSD", f) for i in range(n)]
        for svg in (bar_chart("b", "bars", items), line_chart("u", "line", items)):
            ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', svg)
            assert len(ticks) == len(set(ticks)) >= 2, (n, ticks)
            assert svg.count("<title>") == n
            labels = re.findall(r'<text class="label"[^>]*>([^<]*)</text>', svg)
            assert len(labels) == (n if n <= 14 else 0)           # values written on few bars or points
            assert len(re.findall(r'<text x=[^>]*>\d\d-\d\d</text>', svg)) <= 8   # x labels stay legible
    one = line_chart("u", "line", [("2026-01-01", 0.034, "3.4%", f)])
    assert ">3.4%</text>" in one and "polyline" not in one


def test_new_pages_show_onchain_strings_as_text(served, page):
    base = served["base"]
    for path in ("/leases", "/validators", "/challenges", f"/tx/{served['downtime_tx']}"):
        page.goto(base + path)
        assert page.locator("script").count() == 0 and page.locator("img").count() == 0, path
        assert page.evaluate("window.__xss === undefined && window.__xss2 === undefined"), path
    page.goto(base + "/")
    ticks = page.locator("svg#revenue-chart text.tick").evaluate_all("els => els.map(el => el.textContent)")
    assert len(ticks) == len(set(ticks)) >= 2
    page.locator("header a", has_text="validators").click()
    page.wait_for_url("**/validators")
    page.locator("table.validators a.validator").first.click()
    page.wait_for_url(f"**/validators/{devnet_account(1).address}")
    assert page.locator("#address").inner_text() == devnet_account(1).address
