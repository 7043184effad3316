"""Bid collection from many providers, and an idle provider's RPC load (issue 15, two goals).

    .venv/bin/python bench/scale_bids.py                  # 1,000 providers, 10 % dead or slow
    .venv/bin/python bench/scale_bids.py --quick          # 100 providers, a short idle window
    .venv/bin/python bench/scale_bids.py --baseline       # also the code before issue 15

(A) Bid collection -> bench/results/scale_bids.json (scale_bids_quick.json for --quick).
    A devnet; `--providers` identities (keys from a fixed seed), each behind its own port of a
    real HTTP server, `--servers` processes holding them all (tests/tenant/many_providers.py);
    a `--dead-fraction` share of them dead or slow: a third refuse connections, a third accept
    and never answer, a third answer after 10 s (past any deadline); the rest answer their
    signed bid. All are registered on the devnet's ProviderRegistry with their endpoint (in
    batches through anvil's impersonation: explorer/simulate.py's Workload), with hardware that
    fits the orders, so every one is a candidate. Then, `--collections` times plus one: the
    tenant (devnet account 5) posts an order, the servers sign their bids for it ahead (as a
    provider does on seeing the order: not timed), and the tenant's real code collects and
    judges them (tenant/bid_collection.collect_bids: offer index, concurrent asks, signature and
    offer checks, the best bids judged again against the registry). The first collection builds
    the tenant's offer index from the deploy block (reported apart); p50/p95 are over the others.
    The tenant's RPC goes through a counting proxy, so the calls each collection makes are
    counted. `--baseline`: one pass of the code before issue 15 (`Tenant.collect_bids` as it was
    at git HEAD, taken with `git archive`): 3N+1 registry calls, then each provider in turn.
(B) Idle provider RPC -> bench/results/scale_idle_rpc.json: a devnet mining a block every
    `--block-time` s, a counting JSON-RPC proxy in front of it, one real `tessera provider run`
    registered and serving; its calls counted per method over `--idle-s` seconds once it has
    sent its first heartbeat: once with the proxy serving no websocket (the provider polls the
    head: the worst case, the figure the goal is judged on), once tunnelling the node's
    websocket (new heads are pushed). `--baseline` measures the code at git HEAD the same way.

Everything runs on this machine: anvil, the server processes and the tenant share its cores
(the results say how many), so the figures are upper bounds of what the tenant itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import httpx  # noqa: E402
from eth_utils import keccak  # noqa: E402
from tests.provider_http.rpc_counter import CountingProxy  # noqa: E402
from tests.support.processes import (  # noqa: E402
    ProviderProcess,
    ValidatorProcess,
    tessera_home,
    wait_until,
)
from tests.tenant.many_providers import Identity, refused_port, register  # noqa: E402

from tessera.chain.accounts import devnet_account  # noqa: E402
from tessera.chain.client import Chain  # noqa: E402
from tessera.chain.devnet import Devnet, free_port  # noqa: E402
from tessera.chain.market import Market  # noqa: E402
from tessera.chain.uptime import Uptime  # noqa: E402
from tessera.protocol.lease import order_deposit  # noqa: E402
from tessera.tenant.bid_collection import collect_bids  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TUSD = 10**6
MAX_PRICE = 3 * TUSD
TENANT = 5
IDLE_VALIDATOR = 7     # the validator the idle provider beats to (devnet account 7)
NATIVE = "eth_keys.backends.native.NativeECCBackend"


def say(*parts) -> None:
    print(*parts, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


LOAD_AT_START = os.getloadavg()[0]


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "loadavg_1m_at_start": round(LOAD_AT_START, 2), "loadavg_1m_at_end": round(load[0], 2),
            "note": "anvil, the provider server processes and the tenant share these cores"}


def head_source() -> Path:
    """The package as it was at git HEAD (before this change), in a temporary folder."""
    where = Path(tempfile.mkdtemp(prefix="tessera-head-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where / "src"


# -- (A) bid collection ---------------------------------------------------------------------
def identities(n: int, dead_fraction: float, seed: int) -> list[Identity]:
    rng = random.Random(seed)
    dead = round(n * dead_fraction)
    kinds = ["refused"] * (dead // 3) + ["blackhole"] * (dead // 3)
    kinds += ["slow"] * (dead - len(kinds))
    kinds += ["live"] * (n - len(kinds))
    rng.shuffle(kinds)
    return [Identity("0x" + keccak(text=f"tessera-scale-bids-{seed}-{i}").hex().removeprefix("0x"),
                     kind, rng.randint(5, 25) * TUSD // 10) for i, kind in enumerate(kinds)]


def start_farms(ids: list[Identity], servers: int, network, home: Path) -> tuple[list, list[str], list[int]]:
    """`servers` processes serving the identities; (processes, endpoints, control ports)."""
    procs, controls, ports = [], [], [None] * len(ids)
    for s in range(servers):
        mine = [n for n in range(len(ids)) if n % servers == s]
        spec = home / f"farm-{s}.json"
        spec.write_text(json.dumps({
            "identities": [ids[n].__dict__ for n in mine], "chain_id": network.chain_id,
            "market": network.address("Market"), "slow_s": 10.0}))
        proc = subprocess.Popen([sys.executable, "-m", "tests.tenant.many_providers", str(spec)],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
        answer = json.loads(proc.stdout.readline())
        for n, port in zip(mine, answer["ports"], strict=True):
            ports[n] = port
        procs.append(proc)
        controls.append(answer["control"])
    return procs, [f"http://127.0.0.1:{p or refused_port()}" for p in ports], controls


def collect_once(market: Market, proxy: CountingProxy, controls: list[int], live: set[str],
                 max_price: int, window: float, offer_index=None) -> dict:
    """Post one order at `max_price` (only providers whose floor is at or below it are
    candidates), have the servers sign their bids ahead (not timed), then collect and judge
    (timed) as the tenant's `collect_bids` does, with `offer_index` if given."""
    order_id, _ = market.create_order(os.urandom(32), "H100", 1, 1, max_price, 600, 1,
                                      order_deposit(max_price, 1, 1, 600))
    for port in controls:
        httpx.post(f"http://127.0.0.1:{port}/prepare/{order_id}", timeout=600)
    events: list[dict] = []
    proxy.window()
    t0 = time.monotonic()
    verdicts = collect_bids(market, order_id, window, offer_index=offer_index,
                            emit=lambda e, d: events.append(d))
    seconds = time.monotonic() - t0
    calls, _ = proxy.snapshot()
    valid = {v.bid.provider for v in verdicts if v.valid}
    return {**events[0], "collect_s": round(seconds, 3), "valid": len(valid),
            "rpc_calls": sum(calls.values()), "rpc_by_method": calls,
            "all_live_bids_valid": valid == live}


def collections(market: Market, proxy: CountingProxy, controls: list[int], live: set[str],
                count: int, window: float) -> list[dict]:
    """`count` times: post an order, have the servers sign their bids ahead, collect (timed)."""
    runs = []
    for _ in range(count):
        run = collect_once(market, proxy, controls, live, MAX_PRICE, window)
        runs.append(run)
        say(f"collection {len(runs) - 1}: {run['collect_s']:.2f} s, {run['valid']}/{len(live)} "
            f"live bids valid, {run['requests']} requests, {run['rpc_calls']} RPC calls (index "
            f"{run['index_s']} s, gather {run['gather_s']} s, judge {run['judge_s']} s, "
            f"confirm {run['confirm_s']} s)")
    return runs


def bench_bids(args, home: Path) -> dict:
    devnet = Devnet(home / "devnet")
    network = devnet.up(port=free_port())
    procs = []
    try:
        ids = identities(args.providers, args.dead_fraction, args.seed)
        procs, endpoints, controls = start_farms(ids, args.servers, network, home)
        t0 = time.monotonic()
        register(network, ids, endpoints, gpu_model="H100")
        registration_s = time.monotonic() - t0
        say(f"registered {len(ids)} providers in {registration_s:.1f} s")
        live = {i.address for i in ids if i.kind == "live"}
        with CountingProxy(network.rpc_url) as proxy:
            chain = Chain(network.model_copy(update={"rpc_url": proxy.url}),
                          devnet_account(TENANT))
            market = Market(chain)
            runs = collections(market, proxy, controls, live, args.collections + 1, args.window)
            native = None
            if signature_backend() != NATIVE.rsplit(".", 1)[1] and args.native_runs:
                os.environ["ECC_BACKEND_CLASS"] = NATIVE    # eth-keys reads it on every call
                try:
                    say(f"the same with eth-keys' pure-Python backend ({args.native_runs} runs):")
                    native = collections(market, proxy, controls, live, args.native_runs,
                                         args.window)
                finally:
                    os.environ.pop("ECC_BACKEND_CLASS")
            baseline = bench_baseline(network, proxy, controls, len(ids)) if args.baseline else None
        warm = [r["collect_s"] for r in runs[1:]]
        return {
            "providers": len(ids), "dead_fraction": args.dead_fraction,
            "dead_kinds": {k: sum(i.kind == k for i in ids)
                           for k in ("refused", "blackhole", "slow", "live")},
            "bid_collect_s_p50": round(statistics.median(warm), 3),
            "bid_collect_s_p95": round(percentile(warm, 0.95), 3),
            "bid_collect_s_max": round(max(warm), 3),
            "collections": len(warm),
            "first_collection_s": runs[0]["collect_s"],
            "first_collection_note": "builds the tenant's offer index from the deploy block "
                                     f"({runs[0]['index_events_read']} registry events)",
            "goal_s": 5.0, "goal_met": percentile(warm, 0.95) < 5.0,
            "all_live_bids_valid_every_time": all(r["all_live_bids_valid"] for r in runs),
            "signature_backend": signature_backend(),
            "native_backend": None if native is None else {
                "bid_collect_s_p50": round(statistics.median(r["collect_s"] for r in native), 3),
                "bid_collect_s_p95": round(percentile([r["collect_s"] for r in native], 0.95), 3),
                "judge_s_p50": round(statistics.median(r["judge_s"] for r in native), 3),
                "collections": len(native), "runs": native,
                "note": "eth-keys without coincurve recovers a signature in pure Python "
                        "(about 8 ms each): what a tenant without coincurve installed gets"},
            "config": {"window_s": args.window, "servers": args.servers, "seed": args.seed,
                       "registration_s": round(registration_s, 1),
                       "registration": "every identity registered and staked on the devnet's "
                       "ProviderRegistry (batched, anvil impersonation), endpoint = its own port",
                       "bids_signed_ahead": True},
            "runs": runs, "baseline_before_issue_15": baseline, "machine": machine()}
    finally:
        for proc in procs:
            proc.kill()
        devnet.down()


def signature_backend() -> str:
    from eth_keys.backends import get_backend
    return type(get_backend()).__name__


def bench_baseline(network, proxy: CountingProxy, controls: list[int], providers: int) -> dict:
    """One pass (window 0) of `Tenant.collect_bids` as it was at git HEAD, in a subprocess."""
    src = head_source()
    chain = Chain(network, devnet_account(TENANT))
    market = Market(chain)
    order_id, _ = market.create_order(b"\xbb" * 32, "H100", 1, 1, MAX_PRICE, 600, 1,
                                      order_deposit(MAX_PRICE, 1, 1, 600))
    for port in controls:
        httpx.post(f"http://127.0.0.1:{port}/prepare/{order_id}", timeout=600)
    net_file = proxy.network_file(Path(os.environ["TESSERA_HOME"]) / "devnet" / "network.json",
                                  Path(os.environ["TESSERA_HOME"]) / "proxied.json")
    script = ("import json, sys, time\n"
              "from tessera.chain.accounts import devnet_account\n"
              "from tessera.chain.client import Chain\n"
              "from tessera.chain.network import load_network\n"
              "from tessera.tenant.client import Tenant\n"
              f"t = Tenant(Chain(load_network({str(net_file)!r}), devnet_account({TENANT})))\n"
              "t0 = time.monotonic()\n"
              f"v = t.collect_bids({order_id}, 0)\n"
              "print(json.dumps({'seconds': time.monotonic() - t0, "
              "'valid': sum(x.valid for x in v)}))\n")
    say(f"baseline: one pass of the code at HEAD over {providers} providers (minutes) ...")
    proxy.window()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(src)}, timeout=3600)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    calls, _ = proxy.snapshot()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    say(f"baseline: {result['seconds']:.1f} s, {sum(calls.values())} RPC calls")
    return {"one_pass_s": round(result["seconds"], 2), "valid": result["valid"],
            "rpc_calls": sum(calls.values()), "rpc_by_method": calls,
            "note": "window 0: a single sequential pass (the old loop repeated it every 0.25 s "
                    "until the window closed or every provider had bid)"}


# -- (B) idle provider RPC --------------------------------------------------------------------
def idle_rate(home: Path, block_time: int, seconds: float, src: Path | None,
              websocket: bool, validator: bool = False) -> dict:
    """An idle registered provider's RPC calls per second, by method (`src`: run that code;
    `websocket`: the proxy tunnels websockets, so new heads can be pushed to it; `validator`: a
    validator runs too (straight on the chain, not counted), so the provider beats to it over
    HTTP instead of sending its fallback heartbeat transaction)."""
    home.mkdir(parents=True, exist_ok=True)
    devnet = Devnet(home / "devnet")
    network = devnet.up(port=free_port(), block_time=block_time)
    previous = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = str(src)
    checker = ValidatorProcess(home, devnet.network_file, IDLE_VALIDATOR) if validator else None
    try:
        with tessera_home(home), CountingProxy(network.rpc_url, websocket=websocket) as proxy:
            if checker is not None:
                checker.start()
            proxied = proxy.network_file(devnet.network_file, home / "proxied.json")
            node = ProviderProcess(home, proxied, account=2, price="1.00", name="idle")
            node.start()
            try:
                uptime = Uptime(Chain(network))

                def receipted() -> int:
                    """Epochs the validator holds the provider's beat of."""
                    return sum(httpx.get(f"{checker.url}/liveness/{e}/beats/{node.address}",
                                         timeout=5).status_code == 200
                               for e in range(uptime.current_epoch() + 1))

                if checker is None:
                    wait_until(lambda: uptime.beats(node.address, uptime.current_epoch()),
                               timeout=120, what="the first heartbeat")
                else:
                    wait_until(receipted, timeout=120, what="the first beat receipted")
                proxy.window()
                time.sleep(seconds)
                total, per_method = proxy.rates()
                beats = sum(uptime.beats(node.address, e)
                            for e in range(uptime.current_epoch() + 1))
                receipts = receipted() if checker is not None else None
            finally:
                node.stop()
    finally:
        if checker is not None:
            checker.stop()
        if src is not None:
            if previous is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = previous
        devnet.down()
    return {"calls_per_s": round(total, 3), "per_method_per_s": per_method,
            "window_s": seconds, "heartbeat_epochs_held": beats,
            "beat_epochs_receipted": receipts}


def bench_idle(args, home: Path) -> dict:
    modes = {}
    for mode, websocket in (("polling", False), ("websocket", True)):
        say(f"idle provider, {mode}: {args.idle_s} s with a block every {args.block_time} s ...")
        modes[mode] = idle_rate(home / mode, args.block_time, args.idle_s, None, websocket)
        say(f"  {modes[mode]['calls_per_s']} calls/s {modes[mode]['per_method_per_s']}")
    before = None
    if args.baseline:
        say("idle provider, before (the code at git HEAD) ...")
        before = idle_rate(home / "before", args.block_time, args.idle_s, head_source(), False)
        say(f"  {before['calls_per_s']} calls/s {before['per_method_per_s']}")
    worst = modes["polling"]["calls_per_s"]
    return {"idle_rpc_per_s_per_provider": worst,
            "idle_rpc_per_s_per_provider_websocket": modes["websocket"]["calls_per_s"],
            "idle_rpc_per_s_per_provider_before": before and before["calls_per_s"],
            "after_polling": modes["polling"], "after_websocket": modes["websocket"],
            "before": before, "goal_per_s": 1.0, "goal_met": worst < 1.0,
            "config": {"block_time_s": args.block_time, "uptime_epoch_s": 60,
                       "provider": "one `tessera provider run`, registered, no lease, no order",
                       "polling": "the RPC serves no websocket: the head is read every 3 s "
                                  "(the figure the goal is judged on: the worst case)",
                       "websocket": "new heads pushed over the node's websocket (counted: the "
                                    "one eth_subscribe per connection; pushes are not calls)",
                       "before": "the code at git HEAD (before issue 15), same proxy",
                       "proxy": "tests/provider_http/rpc_counter.py (each batch member counts)"},
            "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--providers", type=int)
    parser.add_argument("--dead-fraction", type=float, default=0.10)
    parser.add_argument("--collections", type=int)
    parser.add_argument("--window", type=float, default=5.0, help="the order's bid window, s")
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--idle-s", type=float)
    parser.add_argument("--block-time", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also measure the code at HEAD")
    parser.add_argument("--native-runs", type=int, default=3,
                        help="collections with eth-keys' pure-Python backend, when coincurve is in")
    parser.add_argument("--skip-bids", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args()
    args.providers = args.providers or (100 if args.quick else 1000)
    args.collections = args.collections or (4 if args.quick else 12)
    args.idle_s = args.idle_s or (20.0 if args.quick else 60.0)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tessera-scale-bids-") as tmp, tessera_home(Path(tmp)):
        if not args.skip_bids:
            result = bench_bids(args, Path(tmp))
            (RESULTS / f"scale_bids{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
            say(f"bids: p50 {result['bid_collect_s_p50']} s, p95 {result['bid_collect_s_p95']} s "
                f"over {result['collections']} collections of {result['providers']} providers")
        if not args.skip_idle:
            result = bench_idle(args, Path(tmp))
            (RESULTS / f"scale_idle_rpc{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
