"""The explorer at scale, on SQLite and on PostgreSQL: index throughput, audit time, page times
and the tenant's bid-time reliability, over a market of many providers with hourly heartbeats.

    .venv/bin/python bench/indexer.py                 # 1,000 providers, >= 1,000,000 events
    .venv/bin/python bench/indexer.py --quick         # 50 providers, >= 20,000 events

1. Generate (once): a fresh anvil, every contract deployed with an hourly uptime epoch, and the
   market of bench/indexer_market.py grown until it emitted `--events` logs; anvil's state is
   dumped to `--state` (default under ~/.cache/tessera-bench/) with network.json and
   generation.json beside it. A later run with the same configuration loads it instead.
2. Load the state into a new anvil; then for each backend (`--backends`, default both):
   index everything (`Indexer.sync`, events_per_s), `tessera audit` (audit_s, must agree), the
   explorer app in process (FastAPI TestClient) timing every page kind, HTML and JSON, over a
   sample of ids (page_ms_p95 over all of them, warm; the first request, which builds the
   figures, is reported apart as first_page_ms), and `tenant.bidding.bid_reliability`
   called twice (bid_reliability_ms: first and second call).
3. Write bench/results/indexer.json (indexer_quick.json for --quick; `config` says which). A run
   of one backend keeps the other backend's row from an earlier run of the same configuration,
   so the two can run in separate sessions (`--backends sqlite`, then `--backends postgresql`).

PostgreSQL is a throwaway cluster (tests/support/postgres.py: initdb and pg_ctl into a temporary
directory, durability off as in the tests).
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from fastapi.testclient import TestClient  # noqa: E402
from indexer_market import Anvil, deploy, generate, open_network, write_json  # noqa: E402
from rich.console import Console  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from tessera.chain.client import Chain  # noqa: E402
from tessera.chain.devnet import free_port  # noqa: E402
from tessera.explorer import db  # noqa: E402
from tessera.explorer.audit import audit  # noqa: E402
from tessera.explorer.indexer import Indexer  # noqa: E402
from tessera.explorer.web import create_app  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = Path(os.environ.get("TESSERA_BENCH_CACHE") or Path.home() / ".cache" / "tessera-bench")
say = Console(width=150).print


# -- the chain --------------------------------------------------------------------------------
def ensure_state(state: Path, providers: int, events: int, seed: int) -> dict:
    """Generate the market into `state` unless it is there; the generation summary."""
    summary_file = state.parent / "generation.json"
    if state.exists() and summary_file.exists():
        return json.loads(summary_file.read_text())
    state.parent.mkdir(parents=True, exist_ok=True)
    partial = state.with_name(state.name + ".partial")
    anvil = Anvil(free_port(), state.parent / "anvil-generate.log", dump_state=partial)
    started = time.perf_counter()
    try:
        network = deploy(anvil.url, state.parent / "network.json")

        def progress(done: int, elapsed: float, summary: dict) -> None:
            rate = done / elapsed
            say(f"generate: {done:,} events in {elapsed:,.0f} s ({rate:,.0f} events/s), "
                f"{summary['blocks_mined']:,} blocks, {summary['heartbeats']:,} heartbeats, "
                f"{summary['leases']:,} leases, {summary['chain_days']} chain days; "
                f"about {max(events - done, 0) / rate / 60:,.1f} min to {events:,}")

        # The stop test counts receipt logs, a little above what the chain's logs hold
        # (about 0.1 % in --quick): aim 0.5 % higher so that the indexed count reaches `events`.
        summary = generate(network, providers, events + events // 200, seed, progress)
    finally:
        stopped = time.perf_counter()
        anvil.stop()            # writes the --dump-state file
    summary["dump_s"] = round(time.perf_counter() - stopped, 1)
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    partial.rename(state)
    summary["state_bytes"] = state.stat().st_size
    write_json(summary_file, summary)
    return summary


# -- one backend ------------------------------------------------------------------------------
def engine_for(backend: str, workdir: Path, cluster_box: list):
    if backend == "sqlite":
        return db.make_engine(f"sqlite:///{workdir / 'explorer.db'}")
    from tests.support.postgres import Cluster, why_unavailable
    problem = why_unavailable()
    if problem:
        raise SystemExit(f"postgresql: {problem}")
    cluster = Cluster().start()
    cluster_box.append(cluster)
    return db.make_engine(cluster.url(cluster.create_database("bench")))


def index(chain: Chain, engine, batch_blocks: int) -> dict:
    started = time.perf_counter()
    last = [started]

    def progress(report) -> None:
        now = time.perf_counter()
        if now - last[0] > 15:
            last[0] = now
            say(f"  index: {report.events:,} events to block {report.to_block:,} "
                f"({report.events / (now - started):,.0f} events/s)")

    report = Indexer(chain, engine, confirmations=0, batch_blocks=batch_blocks).sync(progress=progress)
    seconds = time.perf_counter() - started
    return {"events": report.events, "blocks": report.to_block, "batches": report.batches,
            "batch_blocks": batch_blocks, "index_s": round(seconds, 2),
            "events_per_s": round(report.events / seconds, 1)}


def run_audit(chain: Chain, engine) -> dict:
    started = time.perf_counter()
    result = audit(chain, engine)
    seconds = time.perf_counter() - started
    if not result.agrees:
        say(f"  [red]audit disagrees[/]: {result.problems[:5]}")
    return {"audit_s": round(seconds, 2), "audit_chain_read_s": round(result.chain_seconds, 2),
            "audit_agrees": result.agrees, "audit_problems": len(result.problems),
            "audit_events": result.events}


def page_paths(engine, client: TestClient, rng: random.Random, samples: int) -> dict[str, list[str]]:
    """{page kind: paths}: every kind of page, HTML and its JSON twin, over sampled ids."""
    with Session(engine) as s:
        providers = list(s.scalars(select(db.Provider.address)))
        leases = list(s.scalars(select(db.Lease.lease_id)))
        challenges = list(s.scalars(select(db.Challenge.challenge_id)))
        validators = list(s.scalars(select(db.Validator.address)))
        top = s.scalar(select(func.max(db.Event.id))) or 0
        txs = []
        for _ in range(samples * 4):
            if len(txs) >= samples:
                break
            tx = s.scalar(select(db.Event.tx_hash).where(db.Event.id >= rng.randint(1, top))
                          .order_by(db.Event.id).limit(1))
            if tx and tx not in txs:
                txs.append(tx)
    # The overview's figures and the first page of providers' (uptime, reliability, income...).
    figures = [client.get("/api/overview").json(), client.get("/api/providers").json()]
    # Figures with transactions: a zero that nothing booked is drawn with a link too, but
    # /figure answers 404 for it (it is in no snapshot).
    names = sorted({(f["name"], f["key"]) for f in _figures_in(figures) if f.get("txs")})

    def pick(items: list) -> list:
        return rng.sample(items, min(samples, len(items)))

    lease_pages = max(1, -(-len(leases) // 50))
    pages = sorted({1, lease_pages, *(rng.randint(1, lease_pages) for _ in range(samples - 2))})
    provider_pages = max(1, -(-len(providers) // 50))
    listed = sorted({1, provider_pages, rng.randint(1, provider_pages)})
    kinds: dict[str, list[str]] = {
        "overview": ["/"], "providers": [f"/providers?page={n}" for n in listed],
        "leases": [f"/leases?page={n}" for n in pages],
        "challenges": ["/challenges"], "validators": ["/validators"], "agents": ["/agents"],
        "provider": [f"/providers/{a}" for a in pick(providers)],
        "lease": [f"/leases/{i}" for i in pick(leases)],
        "challenge": [f"/challenges/{i}" for i in pick(challenges)],
        "validator": [f"/validators/{a}" for a in pick(validators)],
        "tx": [f"/tx/{h}" for h in txs],
        "figure": [f"/figure?{urlencode({'name': n, 'key': k})}" for n, k in pick(names)],
    }
    api = {f"api_{kind}": [("/api/overview" if p == "/" else "/api" + p) for p in paths]
           for kind, paths in kinds.items()}
    return {k: v for k, v in {**kinds, **api}.items() if v}


def _figures_in(node) -> list[dict]:
    """Every {"name", "key", ...} figure object anywhere in an /api/overview answer."""
    if isinstance(node, dict):
        if "name" in node and "key" in node:
            return [node]
        return [f for v in node.values() for f in _figures_in(v)]
    if isinstance(node, list):
        return [f for v in node for f in _figures_in(v)]
    return []


def pages(engine, samples: int, seed: int) -> dict:
    client = TestClient(create_app(engine), raise_server_exceptions=False)
    started = time.perf_counter()
    first = client.get("/")
    first_ms = (time.perf_counter() - started) * 1000
    if first.status_code != 200:
        raise SystemExit(f"/ answered {first.status_code}: {first.text[:300]}")
    paths = page_paths(engine, client, random.Random(seed), samples)
    kinds, every, errors = {}, [], []
    for kind, todo in paths.items():
        times = []
        for path in todo:
            started = time.perf_counter()
            reply = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            if reply.status_code != 200:
                errors.append(f"{path} -> {reply.status_code}")
        every += times
        kinds[kind] = {"n": len(times), "p50_ms": round(statistics.median(times), 1),
                       "p95_ms": round(_p95(times), 1), "max_ms": round(max(times), 1)}
        say(f"  {kind:16} n={len(times):3} p50 {kinds[kind]['p50_ms']:8.1f} ms  "
            f"p95 {kinds[kind]['p95_ms']:8.1f} ms  max {kinds[kind]['max_ms']:8.1f} ms")
    if errors:
        say(f"  [red]{len(errors)} pages did not answer 200[/]: {errors[:5]}")
    slowest = max(kinds, key=lambda k: kinds[k]["p95_ms"])
    return {"first_page_ms": round(first_ms, 1), "page_ms_p95": round(_p95(every), 1),
            "page_ms_max": round(max(every), 1), "slowest_kind": slowest, "requests": len(every),
            "page_errors": errors, "pages": kinds}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def bid_reliability_ms(chain: Chain, engine, url: str) -> dict:
    """Time `tenant.bidding.bid_reliability` twice. It is being moved onto an index: extra
    parameters it may grow (engine, database url) are filled when their names say so."""
    from tessera.tenant.bidding import bid_reliability

    params = inspect.signature(bid_reliability).parameters
    extra = {}
    for name in list(params)[2:]:
        if "engine" in name:
            extra[name] = engine
        elif "database" in name or name.endswith("url"):
            extra[name] = url
    out, times, scored = io.StringIO(), [], 0
    for _ in range(2):
        started = time.perf_counter()
        scores = bid_reliability(chain, Console(file=out), **extra)
        times.append(round((time.perf_counter() - started) * 1000, 1))
        scored = len(scores)
    return {"bid_reliability_ms": times, "bid_reliability_providers": scored,
            "bid_reliability_args": sorted(extra), "bid_reliability_said": out.getvalue()[-300:]}


def measure(backend: str, chain: Chain, args, workdir: Path) -> dict:
    say(f"[bold]{backend}[/]")
    clusters: list = []
    engine = engine_for(backend, workdir, clusters)
    try:
        row = {"backend": backend, **index(chain, engine, args.batch_blocks)}
        say(f"  indexed {row['events']:,} events in {row['index_s']:,} s: {row['events_per_s']:,} events/s")
        row.update(run_audit(chain, engine))
        say(f"  audit {row['audit_s']:,} s (agrees: {row['audit_agrees']})")
        row.update(pages(engine, args.samples, args.seed))
        say(f"  pages: first {row['first_page_ms']:,} ms, p95 {row['page_ms_p95']} ms over "
            f"{row['requests']} requests, slowest kind {row['slowest_kind']}")
        if not args.skip_bid:
            # A fresh tenant home per backend: the first call builds the tenant's index from the
            # deploy block (cold), the second reads only what is new.
            os.environ["TESSERA_HOME"] = str(workdir / f"tenant-{backend}")
            row.update(bid_reliability_ms(chain, engine, engine.url.render_as_string(hide_password=False)))
            say(f"  bid_reliability: {row['bid_reliability_ms']} ms "
                f"({row['bid_reliability_providers']} providers scored)")
        return row
    finally:
        engine.dispose()
        for cluster in clusters:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 providers, 20,000 events")
    parser.add_argument("--providers", type=int)
    parser.add_argument("--events", type=int, help="generate until at least this many events")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--state", type=Path, help="anvil state file (generated when missing)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--samples", type=int, default=20, help="ids sampled per page kind")
    parser.add_argument("--batch-blocks", type=int, default=500)
    parser.add_argument("--skip-bid", action="store_true", help="do not time bid_reliability")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    providers = args.providers or (50 if args.quick else 1000)
    events = args.events or (20_000 if args.quick else 1_000_000)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            parser.error(f"unknown backend {b!r}: sqlite or postgresql")
    state = args.state or CACHE / f"indexer-{providers}p-{events}e-seed{args.seed}" / "state.json"
    out = args.out or RESULTS / ("indexer_quick.json" if args.quick else "indexer.json")
    config = {"mode": "quick" if args.quick else "full", "providers": providers, "events_target": events,
              "seed": args.seed, "epoch_length_s": 3600, "blocks_per_epoch": 14,
              "samples_per_page_kind": args.samples, "state": str(state)}
    say(f"config: {config}")
    generation = ensure_state(state, providers, events, args.seed)
    say(f"generation: {generation}")
    if args.generate_only:
        return
    started = time.perf_counter()
    anvil = Anvil(free_port(), state.parent / "anvil-load.log", load_state=state)
    load_s = round(time.perf_counter() - started, 1)
    say(f"anvil loaded {state} in {load_s} s")
    rows = {}
    try:
        chain = Chain(open_network(state.parent / "network.json", anvil.url), timeout=300)
        with tempfile.TemporaryDirectory(prefix="tessera-bench-") as tmp:
            for backend in backends:
                rows[backend] = measure(backend, chain, args, Path(tmp))
    finally:
        anvil.stop()
    result = {"config": config, "generation": {**generation, "anvil_load_s": load_s},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}}
    if out.exists():     # keep the other backend's row from an earlier run of this same market
        earlier = json.loads(out.read_text())
        if earlier.get("config") == config:
            result.update({b: earlier[b] for b in ("sqlite", "postgresql") if b in earlier})
    result.update(rows)
    for backend, row in rows.items():
        if row["events"] < events:
            say(f"[red]{backend} indexed {row['events']:,} events, fewer than --events {events:,}[/]")
    write_json(out, result)
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
