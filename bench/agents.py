"""Agents paying per request over x402: what a payment costs a request, in time and gas, and how
many payments one provider settles per second (issue 13's figures).

    .venv/bin/python bench/agents.py --quick     # about 1 minute (results/agents_quick.json)
    .venv/bin/python bench/agents.py             # about 3 minutes (results/agents.json)

On a fresh anvil devnet (`Devnet.up`: automine, one block per transaction, mined as it arrives;
no --block-time) with every contract deployed, a tiny ByteGPT trained for 60 steps, and
bench/agents_server.py serving it in its own process (the provider), this measures:

1. `settle_gas`: the gas of one settlement per scheme, read from its receipt: "exact" (the SDK's
   EIP-3009 `transferWithAuthorization` on TUSD) and "tessera-budget" (`AgentBudget.pay`), each
   (a) to a payee that holds no TUSD yet, (b) the first payment of a new payer / grant to a
   payee that holds some, (c) a later payment of the same payer / grant. Verified and settled
   directly by a TesseraFacilitator in this process (the calls the paywall makes), which also
   gives `facilitator_cost`: JSON-RPC requests and CPU per payment; plus the gas of the paid
   requests of step 2, read from their PAYMENT-RESPONSE transactions.
2. `paid_request_latency_ms`: one client, one request at a time, the kinds interleaved in a
   shuffled order each round: the same generate request unpaid (/free, no paywall), paid in
   "exact" and in "tessera-budget" with the in-process facilitator, the same two through
   `tessera facilitator run` over HTTP, and drawn from prepaid credit. A paid request is what
   the SDK's client does: the request, its 402, signing, the request again; verified, the model
   runs, settled, answered. p50 / p95 / mean per kind and the paid-minus-unpaid overhead, with
   the server's own verify and settle times, the client's signing time, and a breakdown.
3. `payments_per_s`: paid requests a single provider serves and settles per second, with 1
   (sequential), 4 and 16 concurrent clients (threads, each its own payer or grant), per
   scheme and facilitator, beside the same requests unpaid and drawn from credit, with the CPU
   each process (anvil, provider, facilitator service, clients) spent per request: whether
   settlement is the bottleneck, and where (`bottleneck`). The amortized way is
   bench/agents_server.py's credit door (one x402 payment buys N requests); the SDK's
   "batch-settlement" scheme is not measured (see `amortized.sdk_batch`).

The clients run in this process, the provider in another, anvil and the facilitator service in
two more: on a 2-core machine shared with other work, every figure includes CPU contention (the
JSON says how loaded the machine was).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import httpx  # noqa: E402
from eth_account import Account  # noqa: E402
from rich.console import Console  # noqa: E402
from web3 import HTTPProvider  # noqa: E402
from x402 import x402Client  # noqa: E402
from x402.http import decode_payment_required_header, decode_payment_response_header  # noqa: E402
from x402.http.clients import x402HttpxClient  # noqa: E402
from x402.mechanisms.evm.exact import ExactEvmClientScheme, register_exact_evm_client  # noqa: E402
from x402.schemas import PaymentPayload  # noqa: E402

from tessera.chain.accounts import devnet_account  # noqa: E402
from tessera.chain.agent_budget import AgentBudget  # noqa: E402
from tessera.chain.client import Chain  # noqa: E402
from tessera.chain.devnet import Devnet, find_anvil, free_port  # noqa: E402
from tessera.chain.x402_budget import SCHEME as BUDGET  # noqa: E402
from tessera.chain.x402_budget import BudgetClientScheme  # noqa: E402
from tessera.chain.x402_facilitator import TesseraFacilitator, X402Network  # noqa: E402
from tessera.chain.x402_spend import BudgetGuard, budget_client, spend_controls  # noqa: E402
from tessera.provider.inference import InferencePrices  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "agents.json"
EXACT = "exact"
HTTP_DOOR = "http facilitator"   # the provider settling through `tessera facilitator run`
FUNDER, OWNER, DIRECT_GAS, IN_PROCESS_GAS, SERVICE_GAS = 9, 3, 6, 7, 8   # anvil's test keys
PRICES = InferencePrices(per_request=1_000, per_token=10)   # as tests/payments/conftest.py
PAYER_FUNDS = 20 * 10**6        # 20 TUSD per "exact" payer
DEPOSIT = 500 * 10**6           # the owner's AgentBudget deposit
DAY = 86_400
PROMPT = "def "
say = Console(width=140).print


# -- small helpers ----------------------------------------------------------------------------

# Whether other work shared the machine when the run started: the 1-minute load average and the
# CPU share busy just before (the bench's own processes always share the cores: that is not
# contention, it is the setup, and each kind is measured interleaved with the others).
CONTENTION_NOTE = ("'contended' is true when other work was running as the measurement began "
                   "(1-minute load average above 1.0 or over 20 % of the CPUs busy just before "
                   "start). The bench's clients, the provider process, anvil and the facilitator "
                   "service always share the machine's cores; compare kinds within one run "
                   "(interleaved), not across runs. Server-side settle times under concurrency "
                   "include waiting for a worker thread (asyncio.to_thread).")


def contended(load_before, busy_before) -> bool:
    return load_before[0] > 1.0 or (busy_before or 0) > 0.2

def key_of(account) -> str:
    return "0x" + bytes(account.key).hex()


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(statistics.median(values), 1),
            "p95": round(pctl(values, 0.95), 1), "mean": round(statistics.fmean(values), 1),
            "min": round(min(values), 1), "max": round(max(values), 1)}


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer {url} within {timeout} s")
        time.sleep(0.2)


def anvil_version() -> str:
    try:
        return subprocess.run([find_anvil(), "--version"], capture_output=True, text=True,
                              timeout=20).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (from /proc/stat), or -1 where unreadable."""
    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]
    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
        return round(1 - (idle1 - idle0) / max(1, total1 - total0), 2)
    except OSError:
        return -1.0


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process and its live descendants have used so far (anvil's
    npm launcher runs the native binary as a child); this process when `pid` is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


# -- the world: devnet, payers, grants, model, provider ---------------------------------------
class World:
    def __init__(self, network, network_file: Path, max_tokens: int):
        self.network, self.network_file, self.max_tokens = network, network_file, max_tokens
        self.net = X402Network.read(Chain(network))
        self.funder = Chain(network, devnet_account(FUNDER))
        self.owner = AgentBudget(Chain(network, devnet_account(OWNER)))
        self.owner.deposit(DEPOSIT)
        self.reader = AgentBudget(Chain(network))
        self.provider = Account.create().address   # holds no TUSD until the first payment
        self.price = PRICES.price_for(max_tokens)
        self.url = ""
        self.pids: dict[str, int | None] = {}   # process name -> pid (None: this process)

    def new_payer(self):
        payer = Account.create()
        self.funder.send(self.funder.payment_token.functions.transfer(payer.address, PAYER_FUNDS))
        return payer

    def new_grant(self, payees: list[str] | None = None):
        key = Account.create()
        now = self.reader.chain.block_timestamp()
        grant_id, _ = self.owner.grant(key.address, 10**12, DAY, 10**9, now - 60, now + DAY,
                                       payees or [self.provider])
        return key, grant_id

    def client(self, scheme: str):
        """A fresh SDK x402Client paying in `scheme` (its own payer or grant)."""
        if scheme == EXACT:
            client = x402Client()
            client.set_spend_controls(spend_controls(self.net.caip2, self.net.token.address))
            return register_exact_evm_client(client, self.new_payer(), networks=self.net.caip2)
        key, grant_id = self.new_grant()
        return budget_client(self.network, key, grant_id)

    def body(self) -> dict:
        return {"prompt": PROMPT, "max_tokens": self.max_tokens}

    def gas(self, tx: str) -> int:
        return self.reader.chain.w3.eth.get_transaction_receipt(tx)["gasUsed"]


# -- 1. settle gas ----------------------------------------------------------------------------
class RpcCounter:
    """Counts the JSON-RPC requests every web3 HTTPProvider in this process makes."""

    def __init__(self):
        self.calls = 0
        self._original = HTTPProvider._make_request   # below web3's bound-method caches

    def __enter__(self):
        counter, original = self, self._original

        def counted(provider, method, request_data):
            counter.calls += 1
            return original(provider, method, request_data)
        HTTPProvider._make_request = counted
        return self

    def __exit__(self, *exc):
        HTTPProvider._make_request = self._original


def settle_gas(world: World, later_n: int) -> dict:
    """Each scheme verified and settled (as the paywall does: verify, then settle) by a
    facilitator of our own (devnet:6), against the paywall's own requirements for a generate
    request (from its 402), payee and payer as each case needs. For the later payments also the
    JSON-RPC requests and the CPU time (this process) of verify + settle."""
    facilitator = TesseraFacilitator(world.net, key_of(devnet_account(DIRECT_GAS)))
    offered = decode_payment_required_header(httpx.post(
        world.url + "/v1/generate", json=world.body()).headers["payment-required"]).accepts
    requirements = {r.scheme: r for r in offered}

    def settle(scheme: str, signer, payee: str, cost: list | None = None) -> int:
        reqs = requirements[scheme].model_copy(update={"pay_to": payee})
        payload = PaymentPayload(x402_version=2, payload=signer.create_payment_payload(reqs),
                                 accepted=reqs)
        cpu, wall = time.process_time(), time.perf_counter()
        with RpcCounter() as rpc:
            verified = facilitator.verify(payload, reqs)
            settled = facilitator.settle(payload, reqs)
        if cost is not None:
            cost.append((rpc.calls, (time.process_time() - cpu) * 1000,
                         (time.perf_counter() - wall) * 1000))
        if not (verified.is_valid and settled.success):
            raise SystemExit(f"{scheme} payment failed: {verified.invalid_reason} "
                             f"{settled.error_reason} {settled.error_message}")
        return world.gas(settled.transaction)

    out: dict = {}
    cost: dict[str, list] = {}
    for scheme in (EXACT, BUDGET):
        fresh = Account.create().address   # a payee holding no TUSD
        if scheme == EXACT:
            first, second = (ExactEvmClientScheme(world.new_payer()) for _ in range(2))
        else:
            signers = []
            for _ in range(2):
                key, grant_id = world.new_grant([world.provider, fresh])
                signers.append(BudgetClientScheme(key, BudgetGuard(world.reader, grant_id)))
            first, second = signers
        rows = {"to a payee holding no TUSD (new payer/grant)": settle(scheme, first, fresh),
                "first of a new payer/grant (payee holds TUSD)": settle(scheme, second, fresh)}
        cost[scheme] = []
        later = [settle(scheme, second, fresh, cost[scheme]) for _ in range(later_n)]
        rows["later (same payer/grant and payee)"] = later[-1]
        rows["later, all"] = later
        out[scheme] = rows
    out["settled_by"] = ("TesseraFacilitator.verify then .settle in the bench process (settle "
                         "verifies again, simulating the transfer, then sends), gasUsed from the "
                         f"receipt; price per request {world.price} TUSD base units")
    facilitator_cost = {scheme: {
        "payments": len(rows), "rpc_calls_per_payment": round(statistics.fmean(r[0] for r in rows), 1),
        "cpu_ms_per_payment": summary([r[1] for r in rows]),
        "wall_ms_per_payment": summary([r[2] for r in rows])} for scheme, rows in cost.items()}
    facilitator_cost["note"] = ("one in-process TesseraFacilitator: verify + settle of one "
                                "payment, JSON-RPC requests counted at web3's HTTPProvider, CPU "
                                "is this process's (web3.py, requests, eth-abi, signing)")
    return {"gas": out, "facilitator_cost": facilitator_cost}


# -- 2. latency -------------------------------------------------------------------------------
async def latency(world: World, rounds: int, warmup: int, doors: list[str], seed: int) -> dict:
    """Every kind once per round, in a shuffled order; the first `warmup` rounds not counted."""
    credit_token = await buy_credit(world, world.client(BUDGET))
    paid = {}
    clients = {}
    for door in doors:
        for scheme in (EXACT, BUDGET):
            kind = f"{scheme} ({door})"
            clients[kind] = x402HttpxClient(world.client(scheme), base_url=world.url, timeout=60)
            paid[kind] = ("/remote" if door == HTTP_DOOR else "") + "/v1/generate"
    plain = httpx.AsyncClient(base_url=world.url, timeout=60)
    times: dict[str, list[float]] = {"unpaid": [], "credit": [], "402 only": []} | \
        {k: [] for k in paid}
    txs: dict[str, list[str]] = {k: [] for k in paid}
    rng = random.Random(seed)
    kinds = list(times)
    body = world.body()
    for rnd in range(warmup + rounds):
        if rnd == warmup:
            httpx.get(world.url + "/bench/stats?reset=1")
        rng.shuffle(kinds)
        for kind in kinds:
            started = time.perf_counter()
            if kind == "unpaid":
                response = await plain.post("/free/v1/generate", json=body)
            elif kind == "402 only":   # the paid route, no payment: the client's first leg
                response = await plain.post("/v1/generate", json=body)
            elif kind == "credit":
                response = await plain.post("/credit/v1/generate", json=body,
                                            headers={"Authorization": f"Bearer {credit_token}"})
            else:
                response = await clients[kind].post(paid[kind], json=body)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != (402 if kind == "402 only" else 200):
                raise SystemExit(f"{kind}: {response.status_code} {response.text[:300]}")
            if rnd >= warmup:
                times[kind].append(elapsed)
                if kind in txs:
                    txs[kind].append(decode_payment_response_header(
                        response.headers["payment-response"]).transaction)
    for client in [plain, *clients.values()]:
        await client.aclose()
    server = httpx.get(world.url + "/bench/stats").json()
    unpaid = statistics.median(times["unpaid"])
    unpaid95 = pctl(times["unpaid"], 0.95)
    result = {kind: summary(values) for kind, values in times.items()}
    for kind, row in result.items():
        if kind not in ("unpaid", "402 only"):
            row["overhead_p50"] = round(row["p50"] - unpaid, 1)
            row["overhead_p95"] = round(row["p95"] - unpaid95, 1)
    result["server_facilitator_ms"] = {k: summary(v) for k, v in sorted(server.items())}
    result["client_sign_ms"] = client_sign(world, rounds)
    result["breakdown_p50_ms"] = breakdown(result)
    sample = {kind: [world.gas(tx) for tx in hashes[:5]] for kind, hashes in txs.items()}
    return {"latency": result, "paid_request_gas_sample": sample}


def client_sign(world: World, n: int) -> dict:
    """The SDK client schemes' `create_payment_payload` alone, against the paywall's own
    requirements: "exact" signs an EIP-3009 authorization; "tessera-budget" first reads the grant
    from chain (BudgetGuard: grant, payee, deposit, nonce, block time) to refuse before signing."""
    offered = decode_payment_required_header(httpx.post(
        world.url + "/v1/generate", json=world.body()).headers["payment-required"]).accepts
    requirements = {r.scheme: r for r in offered}
    key, grant_id = world.new_grant()
    signers = {EXACT: ExactEvmClientScheme(world.new_payer()),
               BUDGET: BudgetClientScheme(key, BudgetGuard(world.reader, grant_id))}
    times: dict[str, list[float]] = {EXACT: [], BUDGET: []}
    calls = {EXACT: 0, BUDGET: 0}
    for _ in range(n + 1):
        for scheme, signer in signers.items():
            started = time.perf_counter()
            with RpcCounter() as rpc:
                signer.create_payment_payload(requirements[scheme])
            times[scheme].append((time.perf_counter() - started) * 1000)
            calls[scheme] += rpc.calls
    return {scheme: {**summary(values[1:]),
                     "rpc_calls_per_payment": round(calls[scheme] / (n + 1), 1)}
            for scheme, values in times.items()}


def breakdown(latency: dict) -> dict:
    """Each paid kind's p50 as the sum of its parts' p50s (parts measured apart, so the sum is
    an estimate): the 402 leg, client signing, server verify, the model (the unpaid request),
    server settle; `rest` is what the parts do not explain (HTTP, the SDK's own work, queueing)."""
    out = {}
    for kind, row in latency.items():
        if " (" not in kind or "p50" not in row:
            continue
        scheme, door = kind.split(" (", 1)
        prefix = "in-process" if door.startswith("in-process") else "http"
        parts = {"402 leg": latency["402 only"]["p50"],
                 "client sign": latency["client_sign_ms"][scheme]["p50"],
                 "verify": latency["server_facilitator_ms"][f"{prefix} {scheme} verify"]["p50"],
                 "model (unpaid request)": latency["unpaid"]["p50"],
                 "settle": latency["server_facilitator_ms"][f"{prefix} {scheme} settle"]["p50"]}
        parts["rest"] = round(row["p50"] - sum(parts.values()), 1)
        out[kind] = {"measured_p50": row["p50"], **parts}
    return out


async def buy_credit(world: World, client: x402Client) -> str:
    async with x402HttpxClient(client, base_url=world.url, timeout=60) as http:
        response = await http.post("/credit/buy")
    if response.status_code != 200:
        raise SystemExit(f"buying credit: {response.status_code} {response.text[:300]}")
    return response.json()["credit"]


# -- 3. throughput ----------------------------------------------------------------------------
def throughput(world: World, kind: str, clients: int, per_client: int) -> dict:
    """`clients` threads, each its own client (payer, grant or credit token), `per_client`
    requests each, one at a time; all start together."""
    body = world.body()
    scheme = kind.split(" ")[0]
    paid = scheme in (EXACT, BUDGET)
    route = ("/remote" if HTTP_DOOR in kind else "") + "/v1/generate"
    setups = []
    for _ in range(clients):   # payers, grants and credit are made before the clock starts
        if paid:
            setups.append(world.client(scheme))
        elif kind == "credit":
            setups.append(asyncio.run(buy_credit(world, world.client(BUDGET))))
        else:
            setups.append(None)
    barrier = threading.Barrier(clients + 1)
    codes: list[int] = []
    lock = threading.Lock()

    async def work(setup) -> list[int]:
        got = []
        if paid:
            async with x402HttpxClient(setup, base_url=world.url, timeout=120) as http:
                for _ in range(per_client):
                    got.append((await http.post(route, json=body)).status_code)
        else:
            path = "/free/v1/generate" if kind == "unpaid" else "/credit/v1/generate"
            headers = {"Authorization": f"Bearer {setup}"} if kind == "credit" else {}
            async with httpx.AsyncClient(base_url=world.url, timeout=120) as http:
                for _ in range(per_client):
                    got.append((await http.post(path, json=body, headers=headers)).status_code)
        return got

    def thread(setup) -> None:
        barrier.wait()
        try:
            got = asyncio.run(work(setup))
        except Exception as exc:   # noqa: BLE001  (counted as failures, reported)
            say(f"[red]{kind} client failed: {type(exc).__name__}: {exc}[/]")
            got = [0]
        with lock:
            codes.extend(got)

    threads = [threading.Thread(target=thread, args=(s,)) for s in setups]
    for t in threads:
        t.start()
    httpx.get(world.url + "/bench/stats?reset=1")
    cpu_before = {name: cpu_seconds(pid) for name, pid in world.pids.items()}
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in world.pids.items()}
    ok = sum(1 for c in codes if c == 200)
    server = httpx.get(world.url + "/bench/stats").json()
    settle = [v for k, values in server.items() if k.endswith("settle") for v in values]
    row = {"clients": clients, "requests": clients * per_client, "ok": ok,
           "failed": len(codes) - ok, "wall_s": round(wall, 2), "per_s": round(ok / wall, 1)}
    if settle:
        row["server_settle_ms"] = summary(settle)
    row["cpu_ms_per_request"] = {name: round(used * 1000 / max(ok, 1), 1)
                                 for name, used in cpu.items()}
    return row


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and clients")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, help="latency rounds (default 60, --quick 8)")
    parser.add_argument("--no-http-facilitator", action="store_true",
                        help="do not measure through `tessera facilitator run`")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path,
                        help="default bench/results/agents.json (agents_quick.json for --quick)")
    args = parser.parse_args()
    out = args.out or (RESULTS.with_name("agents_quick.json") if args.quick else RESULTS)
    rounds = args.rounds or (8 if args.quick else 60)
    concurrency = [1, 4] if args.quick else [1, 4, 16]
    per_client = {1: 10 if args.quick else 40, 4: 4 if args.quick else 10, 16: 5}
    credit_requests = 100
    load_before = os.getloadavg()
    busy_before = cpu_busy()
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="tessera-bench-agents-"))
    procs: list[subprocess.Popen] = []
    devnet = Devnet(home / "devnet")
    say(f"[bold]devnet[/] in {home} (cpu busy before: {busy_before:.0%}, load {load_before})")
    network = devnet.up(port=free_port())
    try:
        say("training the tiny model")
        model_dir, model_config = train_model(home / "model")
        world = World(network, devnet.network_file, args.max_tokens)
        doors = ["in-process facilitator"]
        facilitator_url = None
        if not args.no_http_facilitator:
            port = free_port()
            facilitator_url = f"http://127.0.0.1:{port}"
            procs.append(subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "tessera"), "facilitator", "run", "--network",
                 str(devnet.network_file), "--key", f"devnet:{SERVICE_GAS}", "--port", str(port),
                 "--pay-to", world.provider],
                stdout=open(home / "facilitator.log", "wb"), stderr=subprocess.STDOUT))
            doors.append(HTTP_DOOR)
        port = free_port()
        world.url = f"http://127.0.0.1:{port}"
        server_cmd = [sys.executable, str(ROOT / "bench" / "agents_server.py"),
                      "--network", str(devnet.network_file), "--model", str(model_dir),
                      "--pay-to", world.provider, "--port", str(port),
                      "--gas-key", key_of(devnet_account(IN_PROCESS_GAS)),
                      "--per-request", str(PRICES.per_request), "--per-token",
                      str(PRICES.per_token), "--credit-requests", str(credit_requests),
                      "--max-tokens", str(args.max_tokens)]
        if facilitator_url:
            wait_http(facilitator_url + "/health", procs[0], "tessera facilitator run")
            server_cmd += ["--facilitator-url", facilitator_url]
        procs.append(subprocess.Popen(server_cmd, stdout=open(home / "server.log", "wb"),
                                      stderr=subprocess.STDOUT))
        wait_http(world.url + "/v1/model", procs[-1], "bench/agents_server.py")
        world.pids = {"anvil": devnet.pid(), "provider (agents_server.py)": procs[-1].pid,
                      "clients (this process)": None}
        if facilitator_url:
            world.pids["tessera facilitator run"] = procs[0].pid
        setup_s = round(time.perf_counter() - started, 1)
        say(f"provider up at {world.url} after {setup_s} s")

        say("[bold]1. settle gas[/]")
        direct = settle_gas(world, 5 if args.quick else 10)
        gas = direct["gas"]
        for scheme in (EXACT, BUDGET):
            say(f"  {scheme}: " + ", ".join(f"{k} {v:,}" for k, v in gas[scheme].items()
                                           if isinstance(v, int)))
            c = direct["facilitator_cost"][scheme]
            say(f"    verify + settle: {c['rpc_calls_per_payment']} JSON-RPC calls, cpu p50 "
                f"{c['cpu_ms_per_payment']['p50']} ms, wall p50 {c['wall_ms_per_payment']['p50']} ms")

        say(f"[bold]2. latency[/] ({rounds} rounds + 2 warm-up, interleaved)")
        lat = asyncio.run(latency(world, rounds, 2, doors, args.seed))
        for kind, row in lat["latency"].items():
            if "p50" in row:
                say(f"  {kind:40} p50 {row['p50']:7.1f} ms  p95 {row['p95']:7.1f} ms"
                    + (f"  overhead p50 {row['overhead_p50']:+7.1f} ms" if "overhead_p50" in row
                       else ""))
        for kind, parts in lat["latency"]["breakdown_p50_ms"].items():
            say(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in parts.items()))

        say("[bold]3. payments per second[/]")
        rates: dict[str, list] = {}
        kinds = ["unpaid", EXACT, BUDGET, "credit"]
        if facilitator_url:
            kinds[3:3] = [f"{EXACT} ({HTTP_DOOR})", f"{BUDGET} ({HTTP_DOOR})"]
        for kind in kinds:
            rates[kind] = []
            for clients in concurrency:
                row = throughput(world, kind, clients, per_client[clients])
                rates[kind].append(row)
                say(f"  {kind:33} {clients:3} clients: {row['ok']:4}/{row['requests']} ok in "
                    f"{row['wall_s']:6.2f} s = {row['per_s']:6.1f} /s"
                    + (f"  (server settle p50 {row['server_settle_ms']['p50']} ms)"
                       if "server_settle_ms" in row else ""))
                say("      cpu ms per request: " + ", ".join(
                    f"{k} {v}" for k, v in row["cpu_ms_per_request"].items()))
        busy_after = cpu_busy()
        load_after = os.getloadavg()
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        devnet.down()
        shutil.rmtree(home, ignore_errors=True)

    bottleneck = bottleneck_view(rates)
    amortized = amortized_view(gas, lat, rates, credit_requests, world.price)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "contended": contended(load_before, busy_before),
        "contention": {
            "note": CONTENTION_NOTE,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
            "cpu_busy_before_start": busy_before, "cpu_busy_after_end": busy_after},
        "config": {
            "mode": "quick" if args.quick else "full",
            "chain": {"node": anvil_version(), "chain_id": network.chain_id,
                      "mining": "automine: one block per transaction, mined as it arrives "
                                "(no --block-time): a settlement's receipt is ready at once",
                      "block_gas_limit": "anvil default (30,000,000)"},
            "model": model_config,
            "request": {"prompt": PROMPT, "max_tokens": args.max_tokens, "temperature": 0.0},
            "prices": {"per_request": PRICES.per_request, "per_token": PRICES.per_token,
                       "per_generate_request": world.price, "units": "TUSD base units"},
            "provider": "bench/agents_server.py: provider/inference.py's app under uvicorn (one "
                        "process, one worker, asyncio.to_thread pool of min(32, cpus+4) threads "
                        "for the model and the in-process facilitator); facilitator gas from "
                        f"devnet:{IN_PROCESS_GAS}, `tessera facilitator run` gas from "
                        f"devnet:{SERVICE_GAS}",
            "client": "the SDK's x402HttpxClient (x402 2.25.0): exact with a funded wallet "
                      "(register_exact_evm_client), tessera-budget with budget_client (a "
                      "session key; BudgetGuard reads the grant from chain before signing)",
            "latency_rounds": rounds, "warmup_rounds": 2, "doors": doors,
            "concurrency": concurrency, "requests_per_client": per_client,
            "credit_requests_per_purchase": credit_requests, "setup_s": setup_s,
            "wall_s": round(time.perf_counter() - started, 1)},
        "settle_gas": gas,
        "facilitator_cost": direct["facilitator_cost"],
        "paid_request_latency_ms": lat["latency"],
        "paid_request_gas_sample": lat["paid_request_gas_sample"],
        "payments_per_s": rates,
        "bottleneck": bottleneck,
        "amortized": amortized,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    say(f"wrote {out} ({result['config']['wall_s']} s)")


def train_model(folder: Path) -> tuple[Path, dict]:
    """The tests' tiny ByteGPT (tests/support/compute.py), 60 steps on 64 KiB of stdlib source."""
    from tests.support.compute import CORPUS_BYTES, TINY

    from tessera.compute.corpus import build_stdlib_corpus
    from tessera.compute.train import train

    workload = TINY.model_copy(update={"steps": 60, "eval_every": 30, "checkpoint_every": 60})
    train(workload, build_stdlib_corpus(CORPUS_BYTES), folder)
    config = {"architecture": "byte-level GPT (tests/support/compute.py TINY)",
              "n_layer": workload.n_layer, "n_head": workload.n_head, "n_embd": workload.n_embd,
              "context_bytes": workload.block_size, "training_steps": workload.steps,
              "torch_threads": 1, "device": "cpu"}
    return folder, config


def bottleneck_view(rates: dict) -> dict:
    """Is settling every request the bottleneck? Per kind at its best concurrency: the rate
    beside the unpaid one, and the provider process's CPU per request (one Python process: its
    GIL caps it near one core, so 1000 / cpu_ms is a ceiling on its requests per second)."""
    provider = "provider (agents_server.py)"
    unpaid = max(rates["unpaid"], key=lambda row: row["per_s"])
    out = {}
    for kind, rows in rates.items():
        row = max(rows, key=lambda r: r["per_s"])
        cpu = row["cpu_ms_per_request"]
        out[kind] = {"best_per_s": row["per_s"], "at_clients": row["clients"],
                     "share_of_unpaid_rate": round(row["per_s"] / unpaid["per_s"], 2),
                     "provider_cpu_ms_per_request": cpu.get(provider),
                     "provider_cpu_ms_over_unpaid": round(
                         cpu.get(provider, 0) - unpaid["cpu_ms_per_request"].get(provider, 0), 1),
                     "provider_ceiling_per_s_at_one_core": round(
                         1000 / max(cpu.get(provider, 0), 0.1), 1),
                     "anvil_cpu_ms_per_request": cpu.get("anvil"),
                     "facilitator_service_cpu_ms_per_request": cpu.get("tessera facilitator run")}
    return out


def amortized_view(gas: dict, lat: dict, rates: dict, per_purchase: int, price: int) -> dict:
    """Per-request settlement beside prepaid credit, from the figures above."""
    def best(kind: str) -> float:
        return max(row["per_s"] for row in rates[kind])

    budget_gas = gas[BUDGET]["later (same payer/grant and payee)"]
    budget_first = gas[BUDGET]["first of a new payer/grant (payee holds TUSD)"]
    return {
        "how": f"bench/agents_server.py's credit door: one tessera-budget payment of "
               f"{per_purchase} x {price} base units (POST /credit/buy, settled in-process) buys "
               f"{per_purchase} requests; each request then presents a bearer token and the "
               "provider draws one down in memory (no chain work). Prototype in bench/ only.",
        "gas_per_request": {EXACT: gas[EXACT]["later (same payer/grant and payee)"],
                            BUDGET: budget_gas,
                            "credit (purchase is the grant's first payment, as here)":
                                round(budget_first / per_purchase, 1),
                            "credit (purchase is a later payment of the grant)":
                                round(budget_gas / per_purchase, 1)},
        "best_per_s": {kind: best(kind) for kind in rates},
        "latency_p50_ms": {kind: row["p50"] for kind, row in lat["latency"].items()
                           if "p50" in row},
        "trust": "the agent prepays: the provider holds unspent credit (the owner's on-chain "
                 "limits bound the purchase, not its use), and the bearer token is a shared "
                 "secret; a real feature would sign each draw (or use vouchers, below)",
        "sdk_batch": "x402 2.25.0 ships a 'batch-settlement' EVM scheme (signed cumulative "
                     "vouchers, claimed and settled in batches): it calls Solidity contracts at "
                     "fixed CREATE2 addresses (x402BatchSettlement 0x4020074e..., deposit "
                     "collectors 0x4020806..., 0x4020425...) whose bytecode the package does not "
                     "include; deploying them on anvil needs the Solidity sources and solc, like "
                     "'upto' needs Permit2 (FIELD-NOTES). Not measured here.",
    }


if __name__ == "__main__":
    main()
