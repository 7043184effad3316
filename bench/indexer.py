"""Explorer indexer throughput (events per second into SQLite) and `tessera audit` time, on a
fresh local anvil chain with a seeded, randomized market grown to 1,000, 3,000 and 10,000 leases
in one run (each size indexed into a fresh database).

    .venv/bin/python bench/indexer.py [--leases 1000,3000,10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet, free_port
from tessera.explorer.audit import audit
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer, database_figures
from tessera.explorer.simulate import Workload

RESULTS = Path(__file__).parent / "results" / "indexer.json"


def measure(chain: Chain, workdir: Path, size: int) -> dict:
    engine = make_engine(f"sqlite:///{workdir}/bench-{size}.db")
    started = time.perf_counter()
    report = Indexer(chain, engine, confirmations=0, batch_blocks=500).sync()
    index_s = time.perf_counter() - started
    started = time.perf_counter()
    result = audit(chain, engine)
    audit_s = time.perf_counter() - started
    if not result.agrees:
        raise SystemExit(f"audit disagrees at {size} leases: {result.problems[:5]}")
    started = time.perf_counter()
    figures, _ = database_figures(engine)
    stats_s = time.perf_counter() - started
    return {"events": report.events, "blocks": report.to_block, "batches": report.batches,
            "index_s": round(index_s, 3), "events_per_s": round(report.events / index_s, 1),
            "audit_s": round(audit_s, 3), "audit_chain_read_s": round(result.chain_seconds, 3),
            "stats_s": round(stats_s, 3), "figures": len(figures)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leases", default="1000,3000,10000")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--orders-per-round", type=int, default=600)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.leases.split(","))
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        devnet = Devnet(workdir / "devnet")
        network = devnet.up(port=free_port())
        try:
            chain = Chain(network, timeout=120)
            work = Workload(network, seed=args.seed)
            work.setup()
            gen_s = 0.0
            for size in sizes:
                started = time.perf_counter()
                while len(work.leases) < size:
                    work.round(min(args.orders_per_round, max(1, (size - len(work.leases)) // 2 + 1)),
                               work.rng.randint(600, 30_000))
                gen_s += time.perf_counter() - started
                work.mine()
                row = {"leases": len(work.leases), "transactions": work.sent,
                       "generate_s_cumulative": round(gen_s, 1), **measure(chain, workdir, size)}
                rows.append(row)
                console.print(row)
        finally:
            devnet.down()
    table = Table(title="Explorer: index into SQLite, then audit from chain logs (anvil, same run)")
    for col in ("leases", "events", "blocks", "index s", "events/s", "audit s", "of which chain read",
                "stats s", "audit / index"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["leases"]), str(r["events"]), str(r["blocks"]), f"{r['index_s']:.2f}",
                      f"{r['events_per_s']:.0f}", f"{r['audit_s']:.2f}", f"{r['audit_chain_read_s']:.2f}",
                      f"{r['stats_s']:.2f}", f"{r['audit_s'] / r['index_s']:.2f}")
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "seed": args.seed, "rows": rows}, indent=2))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
