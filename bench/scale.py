"""Ten thousand providers (issue 15): every figure of the issue, measured in one run.

    .venv/bin/python bench/scale.py                   # 10,000 providers (about 10 minutes)
    .venv/bin/python bench/scale.py --quick           # 300 providers, for CI (under a minute)

Writes bench/results/scale.json (scale_quick.json for --quick; `--out` elsewhere). One run:

1. Setup (not timed): a devnet (tessera.chain.devnet.Devnet: anvil, every contract, the uptime
   epoch `--epoch-length`, default one hour as in the issue). `--providers` identities from a
   BIP-39 mnemonic (BIP-44 paths m/44'/60'/0'/0/i; tenants on account 1', validators on 2'),
   funded with anvil_setBalance, registered and staked on the ProviderRegistry in batches
   (tests/tenant/many_providers.register: anvil impersonation). `--candidates` of them offer the
   orders' GPU model and are served by `--servers` real HTTP server processes (bench/scale_bids'
   farms), `--dead-fraction` of those dead or slow; the rest offer another model (never asked).
   `--tenants` tenants get payment tokens; `--validators` validators register and stake.
   Then anvil runs as the issue says: block gas limit 30,000,000 and a block every
   `--block-time` seconds, nothing else (evm_setBlockGasLimit, evm_setIntervalMining).
2. The explorer's indexer (`tessera explorer index --follow`, SQLite, confirmations 0) follows
   the chain from here on; its catch-up on the setup's events is reported apart, its lag behind
   the head is sampled through every later part.
3. One liveness epoch for all: at an epoch's start a validator opens it (`Uptime.open_epoch`),
   every provider also sends today's heartbeat transaction (the old path, side by side), a
   sample of providers sign their Beat and a validator checks and receipts them (off-chain CPU);
   in the next epoch each validator posts ONE report naming every provider
   (`Uptime.report_liveness`), and every provider heartbeats again (a heartbeat's steady-state
   gas: its bitmap word is no longer zero).
4. `--orders` orders from the tenants at once (raw signed transactions, a thread per tenant).
5. Bid collection (the tenant's real code, bench/scale_bids' loop): orders every candidate can
   take, then orders only the cheapest tenth can (the model's slope).
6. Idle provider RPC: bench/scale_bids' part (B), polling mode, on a devnet of its own.
7. A model (labelled so) from the measured unit costs to 100,000 providers, and what breaks first.

Everything shares this machine's cores (the results say how many and the load).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

import scale_bids  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic  # noqa: E402
from eth_account.hdaccount.mnemonic import Mnemonic  # noqa: E402
from eth_utils import keccak  # noqa: E402
from scale_parts import (  # noqa: E402
    GWEI,
    MAX_PRICE,
    BlockWatch,
    IndexerLag,
    Rpc,
    beat_costs,
    collect,
    next_epoch,
    order_burst,
    percentile,
    report_all,
    say,
    send_heartbeats,
)
from tests.provider_http.rpc_counter import CountingProxy  # noqa: E402
from tests.support.processes import tessera_home  # noqa: E402
from tests.tenant.many_providers import Identity, register  # noqa: E402

from tessera.chain.accounts import devnet_account  # noqa: E402
from tessera.chain.client import Chain  # noqa: E402
from tessera.chain.devnet import Devnet, free_port  # noqa: E402
from tessera.chain.market import Market  # noqa: E402
from tessera.chain.registry import ProviderRegistry  # noqa: E402
from tessera.chain.uptime import Uptime  # noqa: E402
from tessera.explorer.simulate import MAX_UINT, Workload  # noqa: E402
from tessera.protocol import liveness  # noqa: E402
from tessera.tenant.offer_index import OfferIndex  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TUSD = 10**6
TSTK = 10**18
BLOCK_GAS_LIMIT = 30_000_000
VALIDATOR_STAKE = 100 * TSTK
DAY_S = 86_400
# A fixed BIP-39 phrase (entropy: keccak of a label), so every run derives the same identities.
MNEMONIC = Mnemonic().to_mnemonic(keccak(text="tessera bench scale (issue 15)")[:16])


def hd_keys(count: int, account: int) -> list[str]:
    """Private keys at m/44'/60'/{account}'/0/i of MNEMONIC (the seed is stretched once)."""
    seed = seed_from_mnemonic(MNEMONIC, "")
    return ["0x" + key_from_seed(seed, f"m/44'/60'/{account}'/0/{i}").hex() for i in range(count)]


def candidate_kinds(n: int, dead_fraction: float, rng: random.Random) -> list[str]:
    """The mix of bench/scale_bids.identities: of the dead, a third refuse connections, a third
    take them and never answer, the rest answer after 10 s; the others answer their bid."""
    dead = round(n * dead_fraction)
    kinds = ["refused"] * (dead // 3) + ["blackhole"] * (dead // 3)
    kinds += ["slow"] * (dead - len(kinds))
    kinds += ["live"] * (n - len(kinds))
    rng.shuffle(kinds)
    return kinds


def setup(args, home: Path) -> SimpleNamespace:
    ctx = SimpleNamespace(devnet=Devnet(home / "devnet"), procs=[], times={})
    t0 = time.monotonic()
    ctx.network = ctx.devnet.up(port=free_port(), epoch_length=args.epoch_length)
    ctx.rpc = Rpc(ctx.network.rpc_url)
    ctx.devnet_s, t = round(time.monotonic() - t0, 1), time.monotonic()
    keys = hd_keys(args.providers, 0)
    ctx.keys_s = round(time.monotonic() - t, 1)
    ctx.keys = keys
    ctx.addresses = [Account.from_key(k).address for k in keys]
    ctx.tenant_keys = hd_keys(args.tenants, 1)
    ctx.validator_keys = hd_keys(args.validators, 2)
    say(f"devnet up in {ctx.devnet_s} s; {len(keys)} HD keys derived in {ctx.keys_s} s")
    rng = random.Random(args.seed)
    kinds = candidate_kinds(args.candidates, args.dead_fraction, rng)
    ctx.candidates = [Identity(k, kind, rng.randint(5, 25) * TUSD // 10)
                      for k, kind in zip(keys[:args.candidates], kinds, strict=True)]
    others = [Identity(k, "refused", rng.randint(5, 25) * TUSD // 10) for k in keys[args.candidates:]]
    ctx.procs, endpoints, ctx.controls = scale_bids.start_farms(ctx.candidates, args.servers,
                                                                ctx.network, home)
    ctx.live = {a for a, i in zip(ctx.addresses[:args.candidates], ctx.candidates, strict=True)
                if i.kind == "live"}
    t1 = time.monotonic()
    register(ctx.network, ctx.candidates, endpoints, gpu_model="H100")
    if others:
        register(ctx.network, others, ["http://127.0.0.1:9"] * len(others), gpu_model="A100")
    ctx.registration_s = round(time.monotonic() - t1, 1)
    say(f"registered and staked {len(keys)} providers in {ctx.registration_s} s")
    fund_tenants_and_validators(ctx)
    ctx.rpc.call("evm_setBlockGasLimit", [hex(BLOCK_GAS_LIMIT)])
    ctx.rpc.call("evm_setIntervalMining", [args.block_time])
    ctx.setup_s = round(time.monotonic() - t0, 1)
    return ctx


def fund_tenants_and_validators(ctx) -> None:
    """Tenants: gas money, payment tokens, the Market approved. Validators: stake, registered."""
    work = Workload(ctx.network, providers=(), tenants=())
    tenants = [Account.from_key(k).address for k in ctx.tenant_keys]
    validators = [Account.from_key(k).address for k in ctx.validator_keys]
    work._rpc("anvil_autoImpersonateAccount", [True])
    work._batch([("anvil_setBalance", [a, hex(10**21)]) for a in tenants + validators])
    contract = Chain(ctx.network).validators
    for a in tenants:
        work.send(work.deployer, work.payment, "mint", a, 100_000 * TUSD)
        work.send(a, work.payment, "approve", work.market.address, MAX_UINT)
    for v in validators:
        work.send(work.deployer, work.stake, "transfer", v, VALIDATOR_STAKE)
    work.mine()
    for v in validators:
        work.send(v, work.stake, "approve", contract.address, MAX_UINT)
        work.send(v, contract, "register", VALIDATOR_STAKE)
    work.mine()


# -- the parts ------------------------------------------------------------------------------
def liveness_part(ctx, args, watch: BlockWatch, lag: IndexerLag) -> dict:
    chains = [Chain(ctx.network, Account.from_key(k)) for k in ctx.validator_keys]
    uptime = Uptime(chains[0])
    base = watch.blocks.get(watch.last, {}).get("base_fee", GWEI)
    max_fee = max(100 * GWEI, 50 * base)
    sample = ctx.addresses[:args.heartbeat_sample] if args.heartbeat_sample else ctx.addresses
    epoch = next_epoch(ctx.rpc, watch, uptime)
    lag.phase = "liveness"
    opened = uptime.open_epoch()
    seed = uptime.seed(epoch)
    say(f"epoch {epoch} opened ({opened['gasUsed']} gas); {len(sample)} heartbeats ...")
    first = send_heartbeats(ctx.rpc, watch, uptime.address, chains[0].uptime, sample, epoch, max_fee)
    say(f"  heartbeats: {first['gas_mean']} gas each, {first['blocks_touched']} blocks, "
        f"{first['mined_s']} s")
    beats = beat_costs(ctx.keys[:args.beat_sample], ctx.network.chain_id, uptime.address,
                       chains[0].account, epoch, seed)
    say(f"  beats (sample {beats['sample']}): sign {beats['provider_sign_ms']} ms, check "
        f"{beats['validator_check_ms']} ms, receipt {beats['validator_receipt_ms']} ms each")
    next_epoch(ctx.rpc, watch, uptime)
    count = ProviderRegistry(chains[0]).provider_count()
    words = liveness.words_of(range(count), count)
    reports = report_all(chains, epoch, words)
    stored = [uptime.live_word(epoch, j) for j in range(len(words))]
    say(f"  {len(chains)} reports of {len(words)} words: "
        f"{[r['gas_used'] for r in reports['reports']]} gas")
    steady = send_heartbeats(ctx.rpc, watch, uptime.address, chains[0].uptime, sample, epoch + 1,
                             max_fee)
    say(f"  heartbeats again: {steady['gas_mean']} gas each, {steady['blocks_touched']} blocks")
    gas = opened["gasUsed"] + sum(r["gas_used"] for r in reports["reports"])
    return {"epoch": epoch, "providers_in_reports": count, "words": len(words),
            "bitmap_stored_as_reported": stored == words, "open_epoch_gas": opened["gasUsed"],
            "gas_per_epoch_liveness": gas, **reports,
            "liveness_blocks_touched": len({opened["blockNumber"]}
                                           | {r["block"] for r in reports["reports"]}),
            "heartbeats_first_in_word": first, "heartbeats_steady": steady, "beats": beats}


def bids_part(ctx, args) -> dict:
    """Collections at the full candidate count and, for the model's slope, at about a tenth of
    it (a lower maximum price: only the cheapest floors can bid). Before each order the
    tenant's offer index is brought up to date, as `Tenant.post_order` does: the first order
    builds it from the deploy block (reported apart), the others read the new blocks only."""
    low = sorted(i.price for i in ctx.candidates)[len(ctx.candidates) // 10]
    floors = dict(zip(ctx.addresses, (i.price for i in ctx.candidates), strict=False))
    live_low = {a for a in ctx.live if floors[a] <= low}
    with CountingProxy(ctx.network.rpc_url) as proxy:
        market = Market(Chain(ctx.network.model_copy(update={"rpc_url": proxy.url}),
                              devnet_account(scale_bids.TENANT)))
        index = OfferIndex(market.chain, home=Path(tempfile.mkdtemp(prefix="tessera-offers-")))
        first = collect(market, proxy, ctx.controls, ctx.live, MAX_PRICE, args.window, index)
        full = [collect(market, proxy, ctx.controls, ctx.live, MAX_PRICE, args.window, index)
                for _ in range(args.collections)]
        few = [collect(market, proxy, ctx.controls, live_low, low, args.window, index)
               for _ in range(max(1, args.collections // 3))]
    secs = [r["collect_s"] for r in full]
    few_secs = [r["collect_s"] for r in few]
    return {"candidates": len(ctx.candidates), "dead": len(ctx.candidates) - len(ctx.live),
            "bid_collect_s_p50": round(statistics.median(secs), 3),
            "bid_collect_s_p95": round(percentile(secs, 0.95), 3), "collections": len(full),
            "first_order_index_build_s": first["prebuild_s"],
            "first_order_index_events": first["prebuild_events"],
            "first_collection_s": first["collect_s"],
            "first_collection_valid_bids": first["valid"],
            "first_collection_note": "a tenant without a stored offer index builds it from the "
                                     "registry's events before it posts its first order "
                                     "(Tenant.post_order): a one-time wait, outside the bid window",
            "all_live_bids_valid_every_time": all(r["all_live_bids_valid"] for r in [*full, *few]),
            "gather_s_p50": round(statistics.median(r["gather_s"] for r in full), 3),
            "judge_s_p50": round(statistics.median(r["judge_s"] for r in full), 3),
            "fewer_candidates": {"max_price": low, "candidates": few[0]["providers_asked"],
                                 "bid_collect_s_p50": round(statistics.median(few_secs), 3),
                                 "bid_collect_s_p95": round(percentile(few_secs, 0.95), 3),
                                 "collections": len(few)},
            "signature_backend": scale_bids.signature_backend(), "runs": [first, *full, *few]}


def idle_part(args, home: Path) -> dict:
    """The idle provider twice: beating to a validator (what a provider meets when validators
    run), and with none (its fallback: one heartbeat transaction per epoch). The goal is judged
    on the worse of the two. `--quick` measures the first only (tests/provider_http/
    test_idle_rpc.py holds the fallback under its goal)."""
    modes = {}
    kinds = (("beats_to_a_validator", True), ("heartbeat_fallback", False))
    for mode, validator in kinds[:1] if args.quick else kinds:
        try:
            modes[mode] = scale_bids.idle_rate(home / mode, args.block_time, args.idle_s, None,
                                               False, validator=validator)
        except BaseException as exc:  # its wait_until fails through pytest (an outcome, not an Exception)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return {"error": f"{mode}: {type(exc).__name__}: {exc}"}
        say(f"  {mode}: {modes[mode]['calls_per_s']} calls/s {modes[mode]['per_method_per_s']}")
    worst = max(m["calls_per_s"] for m in modes.values())
    return {"calls_per_s": worst, **modes,
            "mode": "polling (no websocket), the worse of the two modes: the figure the goal "
            "is judged on", "uptime_epoch_s": 60, "block_time_s": args.block_time}


# -- the model --------------------------------------------------------------------------------
def model(r: dict, args) -> dict:
    """Extrapolation from the measured unit costs (a model, not a measurement)."""
    live, n, v = r["liveness"], r["providers"], args.validators
    first, later = live["reports"][0]["gas_used"], [x["gas_used"] for x in live["reports"][1:]]
    slope1 = live["first_report_fit"]["per_word"]
    slope2 = (live["later_report_fit"] or {}).get("per_word", 0)
    later_mean = statistics.mean(later) if later else 0
    epochs_day = DAY_S // args.epoch_length
    hb = r["heartbeat_gas_per_provider_epoch"]
    blocks_per_epoch = args.epoch_length / args.block_time
    bids = r["bids"]
    share = bids["candidates"] / n
    # bid collection p95 = a + b * candidates, through the two candidate counts measured
    few = bids["fewer_candidates"]
    dc = bids["candidates"] - few["candidates"]
    b = (bids["bid_collect_s_p95"] - few["bid_collect_s_p95"]) / dc if dc > 0 else 0.0
    a = bids["bid_collect_s_p95"] - b * bids["candidates"]

    def liveness_gas(p: int, validators: int = v) -> int:
        w = math.ceil(p / liveness.WORD_BITS)
        dw = w - live["words"]
        return round(live["open_epoch_gas"] + first + slope1 * dw
                     + (validators - 1) * (later_mean + slope2 * dw))

    def at(p: int) -> dict:
        gas = liveness_gas(p)
        cands = round(p * share)
        return {
            "providers": p, "liveness_gas_per_epoch": gas,
            "liveness_blocks_per_epoch": round(gas / BLOCK_GAS_LIMIT, 3),
            "liveness_gas_per_provider_day": round(gas * epochs_day / p),
            "heartbeat_gas_per_epoch": hb * p,
            "heartbeat_blocks_per_epoch": round(hb * p / BLOCK_GAS_LIMIT, 1),
            "heartbeat_share_of_chain": round(hb * p / (blocks_per_epoch * BLOCK_GAS_LIMIT), 4),
            "liveness_gain": round(hb * p / gas, 1),
            "candidates_per_order": cands,
            "bid_collect_s_p95": round(a + b * cands, 2),
            "offer_index_first_build_s": round(bids["first_order_index_build_s"] * p / n, 1),
            "idle_rpc_calls_per_s_all_providers": round((r["idle_rpc_per_s_per_provider"] or 0) * p),
            "indexer_events_per_epoch_liveness": v + 1, "indexer_events_per_epoch_heartbeats": p,
            "validator_beat_cpu_s_per_epoch": round(
                p * (live["beats"]["validator_check_ms"] + live["beats"]["validator_receipt_ms"]) / 1e3, 1)}

    # Where each per-unit cost meets its limit, in providers.
    report_cap = liveness.MAX_LIVENESS_WORDS * liveness.WORD_BITS
    words_per_block = ((BLOCK_GAS_LIMIT - live["open_epoch_gas"] - first) / slope1 + live["words"]
                       if slope1 > 0 else None)   # one size measured (a single word): no slope
    limits = {
        "bid collection over the 5 s goal (candidates grow with providers)":
            round((5.0 - a) / b / share) if b > 0 else None,
        "a new tenant's first order waiting over a minute for its offer index (once per "
        "tenant: the index is stored)": round(n * 60 / bids["first_order_index_build_s"])
            if bids["first_order_index_build_s"] else None,
        "one liveness report's word cap (Uptime: 512 words of 256 providers)": report_cap,
        "the first liveness report over one 30M block":
            round(words_per_block * liveness.WORD_BITS) if words_per_block else None,
        "heartbeats filling every block of the epoch (old path)":
            round(blocks_per_epoch * BLOCK_GAS_LIMIT / hb),
    }
    known = {k: x for k, x in limits.items() if x}
    return {
        "label": "MODEL, not a measurement: linear extrapolation of this run's measured unit "
                 "costs (per-word report gas from eth_estimateGas at three sizes, anchored at the "
                 "measured reports; heartbeat gas per provider; bid collection p95 linear in the "
                 "candidates through the two candidate counts measured, candidates staying the "
                 "measured share of providers; RPC calls per idle provider; the first offer-"
                 "index build proportional to registered providers)",
        "bid_collect_p95_fit": {"base_s": round(a, 3), "per_candidate_ms": round(b * 1e3, 4)},
        "assumptions": {"validators": v, "epoch_length_s": args.epoch_length,
                        "block_time_s": args.block_time, "block_gas_limit": BLOCK_GAS_LIMIT,
                        "candidate_share": round(share, 4)},
        "at": {str(p): at(p) for p in (1_000, 10_000, 100_000)},
        "limits_in_providers": limits,
        "breaks_first": min(known, key=known.get) if known else None,
        "breaks_first_at_providers": min(known.values()) if known else None,
    }


# -- the run ----------------------------------------------------------------------------------
def run(args, home: Path, out: dict) -> dict:
    """Every part in turn, filling `out` as they finish (what a failure leaves is kept)."""
    started = time.monotonic()
    beside = ThreadPoolExecutor(1) if args.idle_beside else None
    idle = beside.submit(idle_part, args, home) if beside else None
    ctx = setup(args, home)
    watch = BlockWatch(ctx.rpc).start()
    lag = IndexerLag(ctx.devnet.network_file, home / "explorer.db", watch, poll=1.0)
    try:
        catch_up = lag.catch_up(timeout=1800)
        say(f"indexer caught up with the setup: {catch_up}")
        since = time.monotonic()
        t = time.monotonic()
        out["liveness"] = liveness_part(ctx, args, watch, lag)
        out["liveness_part_s"] = round(time.monotonic() - t, 1)
        lag.phase, t = "orders", time.monotonic()
        base = watch.blocks[watch.last]["base_fee"]
        out["orders"] = order_burst(ctx.rpc, watch, Chain(ctx.network), ctx.tenant_keys,
                                    args.orders // args.tenants, max(100 * GWEI, 50 * base))
        out["orders_part_s"] = round(time.monotonic() - t, 1)
        say(f"orders: {out['orders']['orders_per_block']} per block, latency p95 "
            f"{out['orders']['inclusion_latency_s_p95']} s")
        lag.phase, t = "bids", time.monotonic()
        out["bids"] = bids_part(ctx, args)
        out["bids_part_s"] = round(time.monotonic() - t, 1)
        lag.phase = "drain"
        time.sleep(2 * args.block_time)
        out["indexer"] = {"catch_up_after_setup": catch_up, **lag.figures(since), **lag.stop(),
                          "confirmations": 0, "poll_s": 1.0, "database": "SQLite"}
    finally:
        lag.stop()
        watch.stop()
        for proc in ctx.procs:
            proc.kill()
        ctx.devnet.down()
    t = time.monotonic()
    say(f"idle provider RPC for {args.idle_s} s{' (ran beside the rest)' if idle else ''} ...")
    out["idle"] = idle.result() if idle else idle_part(args, home)
    out["idle_part_s"] = round(time.monotonic() - t, 1)
    return summarize(ctx, args, out, round(time.monotonic() - started, 1))


def summarize(ctx, args, out: dict, wall: float) -> dict:
    live = out["liveness"]
    n = args.providers
    epochs_day = DAY_S // args.epoch_length
    hb = live["heartbeats_steady"]["gas_mean"]
    per_day = live["gas_per_epoch_liveness"] * epochs_day / n
    result = {
        "providers": n, "quick": args.quick,
        "gas_per_epoch_liveness": live["gas_per_epoch_liveness"],
        "liveness_gas_per_provider_day": round(per_day, 1),
        "blocks_per_epoch_liveness": round(live["gas_per_epoch_liveness"] / BLOCK_GAS_LIMIT, 4),
        "heartbeat_gas_per_provider_epoch": hb,
        "heartbeat_gas_per_provider_epoch_first_in_word": live["heartbeats_first_in_word"]["gas_mean"],
        "liveness_gas_per_provider_day_heartbeats": hb * epochs_day,
        "liveness_gain": round(hb * epochs_day / per_day, 1),
        "heartbeat_blocks_per_epoch": round(hb * n / BLOCK_GAS_LIMIT, 2),
        "epoch_length_s_for_day_figures": args.epoch_length,
        "day_figures_note": f"per-day figures = measured per-epoch gas x {epochs_day} epochs of "
                            f"{args.epoch_length} s; blocks = gas / the {BLOCK_GAS_LIMIT:,} block "
                            "gas limit (block space)",
        "bid_collect_s_p95": out["bids"]["bid_collect_s_p95"],
        "orders_per_block": out["orders"]["orders_per_block"],
        "inclusion_latency_s_p95": out["orders"]["inclusion_latency_s_p95"],
        "idle_rpc_per_s_per_provider": out["idle"].get("calls_per_s"),
        "indexer_lag_blocks_max": out["indexer"]["indexer_lag_blocks_max"],
        "indexer_lag_s_p95": out["indexer"]["indexer_lag_s_p95"],
        "goals": {"liveness_gain_at_least_10": round(hb * epochs_day / per_day, 1) >= 10,
                  "bid_collect_p95_under_5_s": out["bids"]["bid_collect_s_p95"] < 5.0,
                  "idle_rpc_under_1_per_s": (out["idle"].get("calls_per_s") or 99) < 1.0},
        **out,
        "config": {"providers": n, "candidates": args.candidates, "dead_fraction": args.dead_fraction,
                   "orders": args.orders, "tenants": args.tenants, "validators": args.validators,
                   "block_time_s": args.block_time, "block_gas_limit": BLOCK_GAS_LIMIT,
                   "uptime_epoch_s": args.epoch_length, "servers": args.servers,
                   "window_s": args.window, "heartbeat_sample": args.heartbeat_sample or n,
                   "beat_sample": min(args.beat_sample, n), "idle_s": args.idle_s,
                   "idle_measured_beside_the_other_parts": args.idle_beside,
                   "identities": "BIP-39 mnemonic (config.mnemonic), BIP-44 paths "
                                 "m/44'/60'/0'/0/i (providers), 1' (tenants), 2' (validators)",
                   "mnemonic": MNEMONIC, "devnet_up_s": ctx.devnet_s, "hd_keys_s": ctx.keys_s,
                   "registration_s": ctx.registration_s, "setup_s": ctx.setup_s,
                   "anvil": "started by tessera.chain.devnet.Devnet (automine) for deploy and "
                            "registration; then evm_setBlockGasLimit 30,000,000 and "
                            f"evm_setIntervalMining {args.block_time} for every measured part"},
        "wall_s": wall, "machine": scale_bids.machine(),
    }
    result["model"] = model(result, args)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: 300 providers")
    parser.add_argument("--providers", type=int)
    parser.add_argument("--candidates", type=int, help="providers whose offer matches the orders")
    parser.add_argument("--dead-fraction", type=float, default=0.10)
    parser.add_argument("--orders", type=int)
    parser.add_argument("--tenants", type=int)
    parser.add_argument("--validators", type=int, default=3)
    parser.add_argument("--collections", type=int)
    parser.add_argument("--window", type=float, default=5.0, help="the orders' bid window, s")
    parser.add_argument("--servers", type=int)
    parser.add_argument("--block-time", type=int)
    parser.add_argument("--epoch-length", type=int, default=3600, help="uptime epoch, s")
    parser.add_argument("--heartbeat-sample", type=int, default=0,
                        help="providers sending real heartbeats (0: all)")
    parser.add_argument("--beat-sample", type=int, help="beats signed and checked off chain")
    parser.add_argument("--idle-s", type=float)
    parser.add_argument("--idle-beside", action="store_true",
                        help="measure the idle provider while the other parts run (a call rate, "
                             "not a timing; the timed parts then share the cores with it): the "
                             "default of --quick, to keep it short")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    q = args.quick
    args.providers = args.providers or (300 if q else 10_000)
    args.candidates = min(args.candidates or (100 if q else 1_000), args.providers)
    args.orders = args.orders or (50 if q else 1_000)
    args.tenants = args.tenants or (10 if q else 100)
    args.collections = args.collections or (1 if q else 12)
    args.servers = args.servers or (2 if q else 4)
    args.block_time = args.block_time or (1 if q else 2)
    args.beat_sample = args.beat_sample or (50 if q else 1_000)
    args.idle_s = args.idle_s or (10.0 if q else 60.0)
    args.idle_beside = args.idle_beside or q
    if args.orders % args.tenants:
        parser.error("--orders must be a multiple of --tenants")
    out = args.out or RESULTS / f"scale{'_quick' if q else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="tessera-scale-") as tmp, tessera_home(Path(tmp)):
            result = run(args, Path(tmp), partial)
    except BaseException:
        failed = out.with_suffix(".failed.json")
        failed.write_text(json.dumps({"error": traceback.format_exc(), "partial": partial},
                                     indent=2, default=str) + "\n")
        say(f"failed: what was measured is in {failed}")
        raise
    out.write_text(json.dumps(result, indent=2) + "\n")
    say(f"wrote {out} ({result['wall_s']} s): liveness gain {result['liveness_gain']}x, bids p95 "
        f"{result['bid_collect_s_p95']} s, {result['orders_per_block']} orders/block, idle "
        f"{result['idle_rpc_per_s_per_provider']} calls/s; breaks first: "
        f"{result['model']['breaks_first']}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
