"""The web explorer (`tessera explorer serve`) over a database indexed from a real anvil devnet.

The app is served by uvicorn in a background thread; pages are checked in Debian's Chromium through
Playwright (no downloaded browser: scripts/setup.sh installs /usr/bin/chromium). A provider whose
GPU model and endpoint carry HTML must show them as text.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import free_port
from tessera.explorer.db import make_engine
from tessera.explorer.figures import ALL
from tessera.explorer.indexer import Indexer, database_figures
from tessera.explorer.simulate import TUSD
from tessera.explorer.web import create_app
from tessera.protocol import messages

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
XSS_MODEL = "<script>window.__xss=1</script>H100"
XSS_ENDPOINT = 'http://127.0.0.1:7999/"><img src=x onerror="window.__xss2=1">'


def _keys(figures, name: str) -> list[str]:
    return sorted(key for n, key in figures if n == name)


@pytest.fixture(scope="module")
def served(market_run, tmp_path_factory):
    """The seeded market over more days, a provider with HTML in its offer and a lease on it, served."""
    _, _, network, work = market_run
    for _ in range(3):   # the seeded market fits in one UTC day: spread payouts over a few more
        work.round(4, 86_400)
    t = work.now + 1
    p = next(p for p in work.providers.values() if work.fits(p, "", 1, t))
    work.send(p.address, work.registry, "update_offer", XSS_MODEL, p.gpus, 81920, 1000, XSS_ENDPOINT,
              p.floor)
    work.mine()
    tenant = work.tenants[0]
    work.send(tenant, work.market, "create_order", b"\x01" * 32, "", 1, 0, 5 * TUSD, 3600, 1, 5 * TUSD)
    order = work._logs(work.mine(), work.market, "OrderCreated")[0]
    nonce = next(work.nonce_counter)
    typed = messages.bid_typed_data(work.chain_id, work.market.address, order["order_id"], p.address,
                                    5 * TUSD, nonce, 2**40)
    signature = messages.sign(devnet_account(p.index), typed)
    work.send(tenant, work.market, "accept_bid", order["order_id"], p.address, 5 * TUSD, nonce, 2**40,
              bytes.fromhex(signature[2:]))
    lease = work._logs(work.mine(), work.market, "LeaseCreated")[0]
    work.mine(60)
    # Heartbeats from that provider in 7 of 10 epochs, for the uptime chart.
    uptime = Chain(network).contract("Uptime")
    genesis, length = uptime.functions.genesis().call(), uptime.functions.epoch_length().call()
    beats = []
    for i in range(10):
        latest = work.w3.eth.get_block("latest")
        epoch = (work.now + length - genesis) // length      # the epoch of the block mine() makes
        if i % 3 != 2:
            work.send(p.address, uptime, "heartbeat", epoch, latest["number"], latest["hash"])
            beats.append(epoch)
        work.mine(length)

    url = f"sqlite:///{tmp_path_factory.mktemp('web')}/explorer.db"
    engine = make_engine(url)
    Indexer(Chain(network), engine, confirmations=0).sync()
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=free_port(),
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.config.port}"
    try:
        yield {"base": base, "engine": engine, "url": url, "xss_provider": p.address,
               "xss_lease": lease["lease_id"], "beats": beats}
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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


def _figure_dicts(node):
    """Every figure object ({name, key, value, txs}) anywhere in a JSON document."""
    if isinstance(node, dict):
        if set(node) == {"name", "key", "value", "txs"}:
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
        want = (str(expected.value), list(expected.txs)) if expected else ("0", [])
        assert (f["value"], f["txs"]) == want, f"{f['name']}[{f['key']}]"
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

        providers = client.get("/api/providers").json()
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
    assert page.locator("#value").inner_text() == str(expected.value)
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



REL = "reliability.by_provider"


def _pct_bps(value: int | str) -> str:
    return f"{int(value) / 100:.2f}%"


def test_api_serves_uptime_reliability_and_recent_epochs(served):
    figures, _ = database_figures(served["engine"])
    address, beats = served["xss_provider"], served["beats"]
    with httpx.Client(base_url=served["base"], timeout=30) as client:
        overview = client.get("/api/overview").json()
        scores = overview["provider_scores"]
        assert [s["address"] for s in scores] == _keys(figures, f"{REL}.bps")
        assert len(scores) == len(_keys(figures, "stake.by_provider.active"))
        _assert_figures_match(scores, figures)
        detail = client.get(f"/api/providers/{address}").json()
        assert _assert_figures_match(detail["reliability"], figures) == 10
        assert detail["uptime"]["heartbeats"]["value"] == str(len(beats))
        assert detail["uptime"]["bps"] == {
            "name": "uptime.by_provider.bps", "key": address,
            "value": str(figures[("uptime.by_provider.bps", address)].value),
            "txs": list(figures[("uptime.by_provider.bps", address)].txs)}
        strip = detail["recent_epochs"]
        owed = figures[("uptime.by_provider.epochs", address)].value
        assert strip["last_owed"] - strip["first_owed"] + 1 == owed
        assert len(strip["epochs"]) == min(owed, 120)
        last, shown_count = strip["last_owed"], len(strip["epochs"])
        assert [ep["epoch"] for ep in strip["epochs"]] == list(range(last - shown_count + 1, last + 1))
        shown = {ep["epoch"]: ep["heartbeat_tx"] for ep in strip["epochs"] if ep["heartbeat_tx"]}
        assert sorted(shown) == beats
        assert set(shown.values()) <= set(figures[("uptime.by_provider.heartbeats", address)].txs)


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
    assert page.locator("#value").inner_text() == str(first.value)
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
    owed = figures[("uptime.by_provider.epochs", address)].value
    assert chart.locator("rect.epoch").count() == min(owed, 120)
    assert chart.locator("rect.beat").count() == len(beats)
    assert chart.locator("rect.missed").count() == min(owed, 120) - len(beats)
    assert all(chart.locator("rect.beat").nth(i).bounding_box()["width"] > 0 for i in range(len(beats)))
    assert [int(x) for x in chart.locator("rect.beat").evaluate_all(
        "els => els.map(el => el.dataset.epoch)")] == beats
    # A heartbeat cell leads to its transaction, which holds that epoch's Heartbeat event.
    chart.locator("a").first.click()
    page.wait_for_url("**/tx/0x*")
    events = page.locator("table.events").inner_text()
    assert "Heartbeat" in events and f'"epoch": {beats[0]}' in events
    # A part of the score leads to the transactions behind it.
    page.goto(f"{base}/providers/{address}")
    page.locator("table.score-parts tr", has_text="uptime (smoothed)").locator("a.fig").click()
    page.wait_for_url("**/figure?*")
    up = figures[(f"{REL}.uptime_bps", address)]
    assert page.locator("#value").inner_text() == str(up.value)
    assert page.locator("table.txs a.tx").count() == len(up.txs) == len(beats) + 1   # + registration
