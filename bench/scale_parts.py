"""The parts of bench/scale.py (issue 15): a block watcher, the indexer's lag, the liveness epoch
(validators' reports, and today's heartbeats beside them), a burst of orders, one bid collection.

Everything talks to anvil by plain JSON-RPC (batched where many calls go out at once), so that
the bench's own overhead stays small next to what it measures. Providers' heartbeats go out as
`eth_sendTransaction` from their addresses (anvil impersonates them: the same transaction and
gas as a signed one, without 10,000 signatures the bench would pay for); the tenants' orders
are signed raw transactions, sent concurrently, one thread per tenant.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from eth_account import Account
from scale_bids import collect_once
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tests.provider_http.rpc_counter import CountingProxy

from tessera.chain.client import GAS_MARGIN, Chain
from tessera.chain.market import Market
from tessera.chain.uptime import Uptime
from tessera.explorer import db
from tessera.explorer.indexer import indexed_state
from tessera.protocol import liveness, messages
from tessera.protocol.lease import order_deposit
from tessera.tenant.offer_index import OfferIndex

GWEI = 10**9
TUSD = 10**6
MAX_PRICE = 3 * TUSD


def say(*parts) -> None:
    print(*parts, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def client_gas_limit(estimate: int) -> int:
    """The gas limit the project's client sets on a transaction (tessera.chain.client.Chain.send)."""
    return int(estimate * 1.25) + GAS_MARGIN


class Rpc:
    """Plain JSON-RPC to one node (a session per thread: requests' sessions are not thread-safe)."""

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def call(self, method: str, params: list | None = None):
        reply = self.session.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                  "params": params or []}, timeout=120).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def batch(self, calls: list[tuple[str, list]], size: int = 500) -> list:
        """Each call's result (or its error dict), in order."""
        out = []
        for i in range(0, len(calls), size):
            body = [{"jsonrpc": "2.0", "id": j, "method": m, "params": p}
                    for j, (m, p) in enumerate(calls[i:i + size])]
            replies = sorted(self.session.post(self.url, json=body, timeout=300).json(),
                             key=lambda r: r["id"])
            out.extend(r["error"] if "error" in r else r["result"] for r in replies)
        return out

    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block(self, number: int | str = "latest") -> dict:
        return self.call("eth_getBlockByNumber", [number if isinstance(number, str) else hex(number),
                                                  False])


class BlockWatch:
    """A thread that sees every new block: when it first saw it (wall clock), its transactions,
    gas used and base fee. Inclusion latencies and the indexer's lag are measured against it."""

    def __init__(self, rpc: Rpc, poll: float = 0.1):
        self.rpc, self.poll = rpc, poll
        self.blocks: dict[int, dict] = {}
        self.tx_block: dict[str, int] = {}
        self.lock = threading.Lock()
        self.last = rpc.head()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> BlockWatch:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                head = self.rpc.head()
                for n in range(self.last + 1, head + 1):
                    seen = time.monotonic()
                    b = self.rpc.block(n)
                    with self.lock:
                        self.blocks[n] = {"seen": seen, "txs": b["transactions"],
                                          "gas_used": int(b["gasUsed"], 16),
                                          "gas_limit": int(b["gasLimit"], 16),
                                          "base_fee": int(b.get("baseFeePerGas") or "0x0", 16),
                                          "timestamp": int(b["timestamp"], 16)}
                        for h in b["transactions"]:
                            self.tx_block[h.lower()] = n
                    self.last = n
            except (requests.RequestException, RuntimeError, ValueError):
                pass   # the node is busy or going down: look again
            self._stop.wait(self.poll)

    def wait_mined(self, hashes: list[str], timeout: float) -> dict[str, int]:
        """Block number of each transaction once all are mined; RuntimeError after `timeout`."""
        wanted = [h.lower() for h in hashes]
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if all(h in self.tx_block for h in wanted):
                    return {h: self.tx_block[h] for h in wanted}
                missing = sum(h not in self.tx_block for h in wanted)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{missing} of {len(wanted)} transactions not mined in {timeout} s")
            time.sleep(0.05)

    def wait_block(self, after: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.last <= after:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no block after {after} within {timeout} s")
            time.sleep(0.05)
        return self.last


def receipts(rpc: Rpc, hashes: list[str]) -> list[dict]:
    got = rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
    bad = [h for h, r in zip(hashes, got, strict=True) if not r or int(r["status"], 16) != 1]
    if bad:
        raise RuntimeError(f"{len(bad)} transactions failed, e.g. {bad[0]}")
    return got


# -- the explorer's indexer, following the chain ----------------------------------------------
class IndexerLag:
    """`tessera explorer index --follow` in its own process (SQLite); a thread samples its cursor
    against the chain's head, and notes when each block the watcher saw was indexed."""

    def __init__(self, network_file: Path, database: Path, watch: BlockWatch, poll: float):
        self.url = f"sqlite:///{database}"
        self.engine = db.make_engine(self.url)     # tables made here, before the indexer starts
        self.watch, self.samples, self.indexed_at = watch, [], {}
        self.phase = "catch-up"
        self.log = open(database.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "explorer", "index", "--network", str(network_file),
             "--database", self.url, "--confirmations", "0", "--follow", "--poll", str(poll)],
            stdout=self.log, stderr=subprocess.STDOUT)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def cursor(self) -> int:
        state = indexed_state(self.engine)
        return -1 if state is None else state.last_block

    def events(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(db.Event)) or 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                indexed, head, now = self.cursor(), self.watch.last, time.monotonic()
            except Exception:   # the database is busy being written: sample again
                self._stop.wait(0.2)
                continue
            self.samples.append({"t": now, "head": head, "indexed": indexed, "phase": self.phase})
            for n in [n for n in list(self.watch.blocks) if n <= indexed and n not in self.indexed_at]:
                self.indexed_at[n] = now
            self._stop.wait(0.25)

    def catch_up(self, timeout: float) -> dict:
        """Wait until the indexer holds every block up to the head (the head moves meanwhile:
        the backlog is worked off when the indexer reaches the head of the moment)."""
        t0 = time.monotonic()
        while self.cursor() < self.watch.last:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the indexer exited with {self.proc.returncode}: {self.log.name}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the indexer did not reach the head in {timeout} s")
            time.sleep(0.25)
        return {"blocks": self.cursor(), "events": self.events(),
                "seconds": round(time.monotonic() - t0, 1)}

    def stop(self) -> dict:
        if self._stop.is_set():
            return {}
        self._stop.set()
        self.thread.join(5)
        alive = self.proc.poll() is None
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return {"indexer_alive_at_end": alive}

    def figures(self, since: float) -> dict:
        """Lag in blocks (head - indexed, per sample) and in seconds (a block first seen by the
        watcher to its sample showing it indexed), over samples after `since`."""
        run = [s for s in self.samples if s["t"] >= since and s["indexed"] >= 0]
        blocks = [max(0, s["head"] - s["indexed"]) for s in run]
        secs = [self.indexed_at[n] - self.watch.blocks[n]["seen"]
                for n in self.indexed_at if self.watch.blocks[n]["seen"] >= since]
        phases = {}
        for s, lag in zip(run, blocks, strict=True):
            phases[s["phase"]] = max(phases.get(s["phase"], 0), lag)
        return {"indexer_lag_blocks_max": max(blocks, default=None),
                "indexer_lag_blocks_p95": percentile(blocks, 0.95) if blocks else None,
                "indexer_lag_s_p95": round(percentile(secs, 0.95), 2) if secs else None,
                "indexer_lag_s_max": round(max(secs), 2) if secs else None,
                "indexer_lag_blocks_max_by_phase": phases,
                "indexer_samples": len(run), "indexer_blocks_timed": len(secs)}


# -- the liveness epoch ------------------------------------------------------------------------
def next_epoch(rpc: Rpc, watch: BlockWatch, uptime: Uptime, margin: int = 1) -> int:
    """Move chain time to the start of the next uptime epoch; the new epoch, once a block has it."""
    start, length = uptime.genesis(), uptime.epoch_length()
    now = int(rpc.block()["timestamp"], 16)
    target = start + ((now - start) // length + 1) * length + margin
    rpc.call("evm_increaseTime", [target - now])
    epoch = (target - start) // length
    while uptime.current_epoch() < epoch:
        watch.wait_block(watch.last, timeout=60)
    return epoch


def send_heartbeats(rpc: Rpc, watch: BlockWatch, uptime_address: str, contract, providers: list[str],
                    epoch: int, max_fee: int) -> dict:
    """Every provider's `Uptime.heartbeat(epoch, recent block)` as its own transaction, with the
    gas limit the project's client would set; per-transaction gas used, blocks, wall time."""
    latest = rpc.block()
    number, block_hash = int(latest["number"], 16), latest["hash"]
    data = contract.encode_abi("heartbeat", args=[epoch, number, bytes.fromhex(block_hash[2:])])
    estimate = int(rpc.call("eth_estimateGas", [{"from": providers[0], "to": uptime_address,
                                                 "data": data}]), 16)
    tx = {"to": uptime_address, "data": data, "gas": hex(client_gas_limit(estimate)),
          "maxFeePerGas": hex(max_fee), "maxPriorityFeePerGas": hex(GWEI)}
    t0 = time.monotonic()
    hashes = rpc.batch([("eth_sendTransaction", [{**tx, "from": p}]) for p in providers])
    if not all(isinstance(h, str) for h in hashes):
        raise RuntimeError(f"a heartbeat was refused: {next(h for h in hashes if not isinstance(h, str))}")
    sent = time.monotonic() - t0
    blocks = watch.wait_mined(hashes, timeout=600)
    wall = time.monotonic() - t0
    gas = [int(r["gasUsed"], 16) for r in receipts(rpc, hashes)]
    touched = sorted(set(blocks.values()))
    return {"count": len(gas), "gas_total": sum(gas), "gas_mean": round(statistics.mean(gas)),
            "gas_min": min(gas), "gas_max": max(gas), "estimate": estimate,
            "blocks_touched": len(touched), "send_s": round(sent, 2), "mined_s": round(wall, 2)}


def beat_costs(keys: list[str], chain_id: int, uptime: str, validator, epoch: int,
               seed: bytes) -> dict:
    """Off-chain work per provider and epoch: the provider signs its Beat, the validator checks
    it (recovers the signer) and signs a BeatReceipt. Timed over the keys given (a sample)."""
    accounts = [Account.from_key(k) for k in keys]
    t0 = time.perf_counter()
    beats = [liveness.sign_beat(a, chain_id, uptime, epoch, seed) for a in accounts]
    t1 = time.perf_counter()
    ok = sum(messages.recover(liveness.beat_typed_data(chain_id, uptime, a.address, epoch, seed), b)
             == a.address for a, b in zip(accounts, beats, strict=True))
    t2 = time.perf_counter()
    for a in accounts:
        liveness.sign_receipt(validator, chain_id, uptime, a.address, epoch)
    t3 = time.perf_counter()
    n = len(accounts)
    return {"sample": n, "beats_valid": ok, "provider_sign_ms": round((t1 - t0) / n * 1e3, 3),
            "validator_check_ms": round((t2 - t1) / n * 1e3, 3),
            "validator_receipt_ms": round((t3 - t2) / n * 1e3, 3)}


def fit(points: dict[int, int]) -> dict:
    """gas = base + per_word * words, through the smallest and largest point."""
    lo, hi = min(points), max(points)
    per_word = (points[hi] - points[lo]) / (hi - lo) if hi > lo else 0.0
    return {"base": round(points[lo] - per_word * lo), "per_word": round(per_word, 1),
            "estimates": {str(k): v for k, v in sorted(points.items())}}


def report_all(chains: list[Chain], epoch: int, words: list[int]) -> dict:
    """Each validator in turn estimates its report at a few sizes (for the model), then posts
    its full report; gas used per report from the receipts."""
    sizes = sorted({1, max(1, len(words) // 2), len(words)})
    reports, fits = [], []
    for chain in chains:
        fn = chain.uptime.functions.report_liveness
        estimates = {k: fn(epoch, words[:k]).estimate_gas({"from": chain.address}) for k in sizes}
        receipt = Uptime(chain).report_liveness(epoch, words)
        reports.append({"validator": chain.address, "gas_used": receipt["gasUsed"],
                        "block": receipt["blockNumber"]})
        fits.append(fit(estimates))
    return {"reports": reports, "first_report_fit": fits[0],
            "later_report_fit": fits[1] if len(fits) > 1 else None}


# -- a burst of orders -------------------------------------------------------------------------
def order_burst(rpc: Rpc, watch: BlockWatch, chain: Chain, tenants: list[str], per_tenant: int,
                max_fee: int) -> dict:
    """`per_tenant` orders from each tenant, signed ahead, sent at once (a thread per tenant,
    each sending its orders one after another without waiting); latency = send to the block
    that holds it, as the block watcher first saw it."""
    market = chain.market
    accounts = [Account.from_key(k) for k in tenants]
    deposit = order_deposit(MAX_PRICE, 1, 1, 600)

    def data(n: int) -> str:
        return market.encode_abi("create_order", args=[n.to_bytes(32, "big"), "H100", 1, 1,
                                                       MAX_PRICE, 600, 1, deposit, False])

    estimate = int(rpc.call("eth_estimateGas", [{"from": accounts[0].address, "to": market.address,
                                                 "data": data(1)}]), 16)
    gas = client_gas_limit(estimate)
    nonces = rpc.batch([("eth_getTransactionCount", [a.address, "latest"]) for a in accounts])
    signed: list[list[tuple[int, bytes]]] = []
    for t, (account, nonce) in enumerate(zip(accounts, nonces, strict=True)):
        signed.append([(t * per_tenant + k, account.sign_transaction({
            "to": market.address, "data": data(t * per_tenant + k + 1), "gas": gas,
            "maxFeePerGas": max_fee, "maxPriorityFeePerGas": GWEI, "nonce": int(nonce, 16) + k,
            "chainId": chain.network.chain_id, "type": 2}).raw_transaction) for k in range(per_tenant)])
    sent_at: dict[int, float] = {}
    hashes: dict[int, str] = {}

    def send(mine: list[tuple[int, bytes]]) -> None:
        for n, raw in mine:
            sent_at[n] = time.monotonic()
            hashes[n] = rpc.call("eth_sendRawTransaction", ["0x" + raw.hex().removeprefix("0x")])

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(accounts)) as pool:
        list(pool.map(send, signed))
    send_s = time.monotonic() - t0
    blocks = watch.wait_mined(list(hashes.values()), timeout=600)
    wall = time.monotonic() - t0
    order_ids = sorted(hashes)
    got = receipts(rpc, [hashes[n] for n in order_ids])
    latency = [watch.blocks[blocks[hashes[n].lower()]]["seen"] - sent_at[n] for n in order_ids]
    per_block: dict[int, int] = {}
    for h in hashes.values():
        per_block[blocks[h.lower()]] = per_block.get(blocks[h.lower()], 0) + 1
    used = [int(r["gasUsed"], 16) for r in got]
    return {"orders": len(order_ids), "tenants": len(accounts),
            "orders_per_block": round(len(order_ids) / len(per_block), 1),
            "orders_per_block_max": max(per_block.values()), "blocks": len(per_block),
            "inclusion_latency_s_p50": round(percentile(latency, 0.5), 2),
            "inclusion_latency_s_p95": round(percentile(latency, 0.95), 2),
            "inclusion_latency_s_max": round(max(latency), 2),
            "order_gas_used_mean": round(statistics.mean(used)), "order_gas_limit": gas,
            "send_s": round(send_s, 2), "all_mined_s": round(wall, 2),
            "block_gas_used_max": max(watch.blocks[b]["gas_used"] for b in per_block)}


# -- bid collection -------------------------------------------------------------------------
def collect(market: Market, proxy: CountingProxy, controls: list[int], live: set[str],
            max_price: int, window: float, index: OfferIndex) -> dict:
    """bench/scale_bids.collect_once as the tenant's `Tenant.post_order` then `collect_bids`
    do it: bring the offer index up to date first (timed apart: a new tenant's first build
    reads every registry event), then post, collect and judge (timed)."""
    t0 = time.monotonic()
    index.offers()
    prebuild = {"prebuild_s": round(time.monotonic() - t0, 3), "prebuild_events": index.events_read}
    run = {**collect_once(market, proxy, controls, live, max_price, window, index), **prebuild}
    run.pop("rpc_by_method")
    say(f"  {run['providers_asked']} candidates: {run['collect_s']:.2f} s, {run['valid']}/"
        f"{len(live)} live bids valid (index {run['index_s']} s, gather {run['gather_s']} s, "
        f"judge {run['judge_s']} s)")
    return run
