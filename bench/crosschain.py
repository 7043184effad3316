"""The bridge's figures (issue 14): delivery gas against the committee's size, transfer latency
at the default confirmations, and the bucket's defaults with their reasoning.

    .venv/bin/python bench/crosschain.py            # a few minutes (results/crosschain.json)
    .venv/bin/python bench/crosschain.py --quick    # about a minute (a temp file unless --out)

One devnet started as a user starts it, `tessera devnet up --chains 2 --block-time 1` (the CLI's
default: anvil --block-time 1 --mixed-mining, a block per transaction plus one every second);
home chain 31337, peer 31338, default BridgeParams, genesis committee devnet validators 7, 8, 9.

1. `latency_s`: three `tessera validator run` processes (those validators) attest and one
   `tessera bridge relay` process delivers; TokenBridge transfers one at a time, alternating
   direction, each after a random pause of up to a block time. A thread polls both heads every
   50 ms; a latency runs from the block that included the send to the block that included the
   delivery. The daemons' logs split it into confirmations, signing, relaying + delivery.
2. `stake_and_forgery_gas` (bench/crosschain_stake.py): StakeBridge's sends and deliveries, and
   a forgery's proof and slash, with the genesis committee. `deliver_gas` (daemons stopped,
   same chains): both inboxes rotated to 1..32 fresh
   equal-weight members, all signing; one transfer each way delivered at each size (gasUsed:
   21,000 + calldata + execution, the mint or unlock included); a queued transfer's deliver +
   execute; TokenBridge.send (lock, burn) and a bare BridgeOutbox.send; rotate at 4 and 32;
   `order_funding`: an order funded from the peer in one message (send_call, the delivery that
   opens the order beside a plain one, BridgeOrders.send_back).
3. `bucket`: BridgeParams' defaults (read back from both inboxes) and the reasoning.
4. `model` (a model, not a measurement): deliver gas = a + b * signatures, and its price.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_deploy import BridgeParams
from tessera.chain.bridge_inbox import BridgeInbox, sign_attestation, sign_rotation
from tessera.chain.bridge_orders import BridgeOrders, fund_order
from tessera.chain.bridge_outbox import BridgeOutbox, SentMessage
from tessera.chain.client import Chain
from tessera.chain.devnet import (
    BRIDGE_VALIDATORS,
    DEVNET_CHAIN_ID,
    PEER_CHAIN_ID,
    Devnet,
    free_port,
    free_port_pair,
)
from tessera.chain.market import Market
from tessera.chain.network import Network, load_network
from tessera.chain.token_bridge import TokenBridge
from tessera.daemons import spawn, stop
from tessera.protocol.bridge import (
    DEFAULT_CONFIRMATIONS,
    OrderTerms,
    quorum_reached,
    sort_signatures,
)
from tessera.protocol.money import PAYMENT_DECIMALS
from tessera.validator.config import BridgeSection

sys.path.insert(0, str(Path(__file__).parent))
from crosschain_stake import stake_and_forgery_gas  # noqa: E402
from crosschain_support import (  # noqa: E402
    CONTENTION_NOTE,
    WATCH_S,
    BlockWatcher,
    cpu_use,
    healthy,
    log_events,
    processes,
    say,
    summary,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "crosschain.json"
CONTRACTS = ROOT / "src" / "tessera" / "contracts"   # hashed into the JSON: gas is per version
HOME, PEER = DEVNET_CHAIN_ID, PEER_CHAIN_ID
TUSD = 10**PAYMENT_DECIMALS
BLOCK_TIME = 1            # `tessera devnet up`'s default --block-time
RELAY_INTERVAL = 0.5      # `tessera bridge relay --interval` (its default)
RELAYER, PAYER, SENDER, RECIPIENT = 3, 4, 5, 6   # devnet account indexes
SIZES, QUICK_SIZES = (1, 2, 4, 8, 16, 32), (1, 4, 32)
ROTATE_SIZES = (4, 32)
QUEUED_AT = 4             # committee size at which the queued transfers are measured
TRANSFERS, QUICK_TRANSFERS = 40, 4
PRICES_GWEI = (1, 30)
QUIET = {"probes": {"per_epoch": 1, "timeout_s": 3.0, "max_delay_s": 0.5},
         "outages": {"report": False}, "hardware": {"enabled": False}}


def other(chain_id: int) -> int:
    return PEER if chain_id == HOME else HOME


def route(source: int) -> str:
    return f"{source}->{other(source)}"


# -- 1. latency -----------------------------------------------------------------------------
def start_daemons(home: Path, network_file: Path) -> tuple[list, subprocess.Popen]:
    validators = [spawn(home, f"validator-{i}", "validator", {
        "validator": {"account": f"devnet:{i}", "network": str(network_file), "port": free_port(),
                      "state_dir": str(home / f"validator-{i}"), "stake": "100"}, **QUIET})
        for i in BRIDGE_VALIDATORS]
    relay = subprocess.Popen(   # it reads the validators' endpoints from the chain every poll
        [sys.executable, "-m", "tessera.cli", "bridge", "relay", "--account", f"devnet:{RELAYER}",
         "--interval", str(RELAY_INTERVAL), "--confirmations", str(DEFAULT_CONFIRMATIONS)],
        stdout=open(home / "relay.log", "wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "TESSERA_HOME": str(home)})
    for proc, url in validators:
        wait_for(lambda u=url: healthy(u), 180, f"validator at {url} healthy", proc)
    wait_for(lambda: log_events(home / "relay.log", "relaying"), 120, "the relayer", relay)
    return validators, relay


def transfer_latencies(network: Network, watcher: BlockWatcher, count: int, seed: int) -> list[dict]:
    rng, rows = random.Random(seed), []
    for i in range(count):
        source = PEER if i % 2 == 0 else HOME
        dest = other(source)
        chain, dest_chain = Chain(network.chain(source), devnet_account(SENDER)), Chain(network.chain(dest))
        inbox, from_block = BridgeInbox(dest_chain), dest_chain.block_number()
        time.sleep(rng.uniform(0, BLOCK_TIME))
        amount = (i // 2 + 1) * TUSD   # equal each way: the peer unlocks only what was locked
        message_id, receipts = TokenBridge(chain).send(dest, devnet_account(RECIPIENT).address, amount)
        returned = time.time()
        sent = BridgeOutbox(chain).sent_in(receipts[-1])[0]
        wait_for(lambda x=inbox, m=message_id: x.delivered(m), 120,
                 f"transfer {i} delivered (see the relayer's log)")
        block = dest_chain.events("BridgeInbox", "MessageDelivered", from_block, "latest",
                                  argument_filters={"message_id": message_id})[0]["blockNumber"]
        included = watcher.seen[source].get(sent.block_number, returned)
        landed = wait_for(lambda d=dest, b=block: watcher.seen[d].get(b), 5, "the watcher")
        rows.append({"route": route(source), "nonce": sent.message.nonce, "amount": amount,
                     "source_block": sent.block_number, "delivery_block": block,
                     "included": included, "delivered": landed, "total_s": round(landed - included, 3),
                     "confirmed": watcher.seen[source][sent.block_number + DEFAULT_CONFIRMATIONS]})
        say(f"  {i + 1:2}/{count} {route(source)}: {landed - included:5.2f} s")
    return rows


def add_breakdown(rows: list[dict], home: Path, network: Network) -> None:
    """Each row's seconds waiting for confirmations, then until a quorum had signed (the
    validators' `bridge-attested` lines), then until the delivery's block."""
    signed: dict[tuple[int, int], dict[str, float]] = {}
    for index in BRIDGE_VALIDATORS:
        for e in log_events(home / f"validator-{index}.log", "bridge-attested"):
            signed.setdefault((e["source"], e["nonce"]), {})[devnet_account(index).address] = e["ts"]
    seen = {e["key"]: e["ts"] for e in log_events(home / "relay.log", "bridge-seen")}
    inboxes = {cid: BridgeInbox(Chain(network.chain(cid))) for cid in (HOME, PEER)}
    committees = {cid: (i.weights(), i.threshold_bps()) for cid, i in inboxes.items()}
    for row in rows:
        source = int(row["route"].split("->")[0])
        times = signed.get((source, row["nonce"]), {})
        by_time = sorted(times, key=times.get)
        quorum_at = next((times[by_time[k - 1]] for k in range(1, len(by_time) + 1)
                          if quorum_reached(sorted(by_time[:k], key=lambda a: int(a, 16)),
                                            *committees[other(source)])), None)
        row["confirmations_s"] = round(row["confirmed"] - row["included"], 3)
        if quorum_at is not None:
            row["signatures_s"] = round(quorum_at - row["confirmed"], 3)
            row["delivery_s"] = round(row["delivered"] - quorum_at, 3)
        if f"{source}:{row['nonce']}" in seen:
            row["relayer_saw_s"] = round(seen[f"{source}:{row['nonce']}"] - row["confirmed"], 3)
        for key in ("included", "confirmed", "delivered"):
            del row[key]


def latency_section(rows: list[dict], count: int, seed: int) -> dict:
    parts = ("confirmations_s", "signatures_s", "delivery_s", "relayer_saw_s")
    return {
        "what": "wall-clock seconds from the block that included the source chain's "
                "TokenBridge.send to the block that included BridgeInbox.deliver on the other "
                f"chain, each block timed when a {WATCH_S} s poll of eth_blockNumber first saw it",
        "config": {
            "devnet": f"tessera devnet up --chains 2 --block-time {BLOCK_TIME} (the CLI's "
                      "default): anvil --block-time 1 --mixed-mining, a block per transaction "
                      "at once plus one every second",
            "confirmations": DEFAULT_CONFIRMATIONS,
            "confirmations_from": "protocol.bridge.DEFAULT_CONFIRMATIONS (validators and relayer)",
            "validators": f"{len(BRIDGE_VALIDATORS)} `tessera validator run` processes (devnet "
                          f"accounts {', '.join(map(str, BRIDGE_VALIDATORS))}, equal stake: 2 of "
                          f"3 reach the threshold), [bridge] interval_s {BridgeSection().interval_s}",
            "relayer": f"`tessera bridge relay --interval {RELAY_INTERVAL} --confirmations "
                       f"{DEFAULT_CONFIRMATIONS}`, one process",
            "transfers": count,
            "order": f"one at a time, alternating {route(PEER)} and {route(HOME)}, each after a "
                     f"pause drawn uniformly from 0..{BLOCK_TIME} s (seed {seed})",
            "amounts": "1, 1, 2, 2, 3, 3, ... TUSD (the peer unlocks only what was locked "
                       "there); all under large_threshold, so none is queued"},
        **summary([r["total_s"] for r in rows]),
        "by_route": {r: summary([x["total_s"] for x in rows if x["route"] == r])
                     for r in (route(PEER), route(HOME))},
        "breakdown": {
            "how": f"confirmations_s: inclusion until the source head was {DEFAULT_CONFIRMATIONS} "
                   "blocks past it (the watcher); signatures_s: then until the quorum's last "
                   "attestation was signed (validators' bridge-attested log times: their poll "
                   "interval and signing); delivery_s: then until the delivery's block (the "
                   "relayer's poll interval, fetching signatures over HTTP, the deliver "
                   "transaction). relayer_saw_s: confirmation until the relayer logged "
                   "bridge-seen. Log times and the watcher share the clock but not the poll "
                   "phase, so a part can be off by a poll (50 ms)",
            **{p: summary([r[p] for r in rows if p in r]) for p in parts}},
        "transfers": rows,
    }


# -- 2. gas ---------------------------------------------------------------------------------
class GasBench:
    """Rotates both inboxes to committees of fresh keys and delivers with all of them signing;
    the payer (in no committee) sends every delivery and rotation."""

    def __init__(self, network: Network):
        self.network, self.payer = network, devnet_account(PAYER)
        genesis = BridgeInbox(self.chain(HOME)).weights()
        assert len(set(genesis.values())) == 1, "the genesis committee's weights differ"
        self.weight = next(iter(genesis.values()))
        self.signers = sorted((devnet_account(i) for i in BRIDGE_VALIDATORS),
                              key=lambda a: int(a.address, 16))
        self.sends: dict[str, list[int]] = {"lock": [], "burn": [], "approve": []}

    def chain(self, cid: int, account=None) -> Chain:
        return Chain(self.network.chain(cid), account)

    def inbox(self, cid: int) -> BridgeInbox:
        return BridgeInbox(self.chain(cid, self.payer))

    def rotate(self, size: int, tag: str) -> dict:
        new = sorted((Account.from_key(keccak(f"crosschain bench {tag} {i}".encode()))
                      for i in range(size)), key=lambda a: int(a.address, 16))
        members, weights = [a.address for a in new], [self.weight] * size
        gas = {}
        for cid in (HOME, PEER):
            inbox = self.inbox(cid)
            epoch = inbox.epoch() + 1
            signatures = [sign_rotation(a, cid, inbox.address, epoch, members, weights)
                          for a in self.signers]
            gas[cid] = inbox.rotate(epoch, members, weights, signatures)["gasUsed"]
        self.signers, old = new, len(self.signers)
        return {"signatures": old, "members": size, "gas": gas[HOME], "gas_on_peer": gas[PEER]}

    def send(self, source: int, amount: int) -> SentMessage:
        chain = self.chain(source, devnet_account(SENDER))
        _, receipts = TokenBridge(chain).send(other(source), devnet_account(RECIPIENT).address,
                                              amount)
        self.sends["burn" if source == HOME else "lock"].append(receipts[-1]["gasUsed"])
        self.sends["approve"] += [r["gasUsed"] for r in receipts[:-1]]
        return BridgeOutbox(chain).sent_in(receipts[-1])[0]

    def deliver(self, sent: SentMessage) -> tuple[bool, dict]:
        m = sent.message
        inbox = self.inbox(m.destination_chain)
        # in a later second than the route's last value delivery, as nearly always outside a
        # bench: in the same second the bucket's refill rewrites an unchanged timestamp (cheaper)
        wait_for(lambda: inbox.chain.block_timestamp()
                 > inbox.bucket(m.source_chain, m.sender).updated_at,   # the TokenBridge's bucket
                 10, "the next block's second")
        epoch = inbox.epoch()
        signed = {a.address: sign_attestation(a, m.destination_chain, inbox.address, m.id, epoch)
                  for a in self.signers}
        delivered, receipt = inbox.deliver(m, sent.payload, sort_signatures(signed))
        tx = inbox.chain.w3.eth.get_transaction(receipt["transactionHash"])
        return delivered, {"gas": receipt["gasUsed"], "calldata_bytes": len(bytes(tx["input"]))}

    def order_funding(self) -> dict:
        """An order funded from the peer in one message (docs/bridge.md): send_call's gas on the
        peer, the delivery that opens the order at home, a plain 1-TUSD delivery beside it with
        the same committee, and BridgeOrders.send_back after the order is cancelled."""
        tenant_peer = self.chain(PEER, devnet_account(SENDER))
        orders = BridgeOrders(self.chain(HOME, self.payer))
        terms = OrderTerms(tenant_peer.address, b"\x42" * 32, "", 1, 0, TUSD, 3600, 1)
        message_id, receipts = fund_order(tenant_peer, orders.chain, terms, TUSD)
        [sent] = BridgeOutbox(tenant_peer).sent_in(receipts[-1])
        delivered, measured = self.deliver(sent)
        assert delivered
        order_id = orders.funded_order(message_id, timeout_s=0)
        plain = self.deliver(self.send(PEER, TUSD))[1]["gas"]
        self.sends["lock"].pop()
        Market(self.chain(HOME, devnet_account(SENDER))).cancel_order(order_id)
        _, back = orders.send_back(message_id)
        assert self.deliver(BridgeOutbox(orders.chain).sent_in(back)[0])[0]   # nothing left in flight
        return {"signatures": len(self.signers), "send_call_on_peer": receipts[-1]["gasUsed"],
                "deliver_opening_the_order": measured["gas"], "deliver_plain_transfer": plain,
                "send_back_on_home": back["gasUsed"],
                "note": "1 TUSD deposit for a 1-node, 1-hour order at 1 TUSD/GPU-h; the delivery "
                        "reserves TokenBridge.CALL_GAS (1.5 M) for the call but is charged what "
                        "it uses; send_back: the cancelled order's whole deposit"}

    def queued(self, params: BridgeParams) -> dict:
        """A transfer just over the large threshold each way: deliver (queued), then execute
        once the destination's clock has passed the delay."""
        amount = params.large_threshold + TUSD
        found: dict = {"signatures": len(self.signers), "amount": amount}
        for source in (PEER, HOME):
            sent = self.send(source, amount)
            send_gas = self.sends["burn" if source == HOME else "lock"].pop()   # not a 1-TUSD row
            delivered, first = self.deliver(sent)
            assert not delivered, "a transfer over large_threshold was not queued"
            inbox = self.inbox(other(source))
            provider = inbox.chain.w3.provider
            provider.make_request("evm_increaseTime", [inbox.delay() + 1])
            provider.make_request("evm_mine", [])
            executed = inbox.execute(sent.message, sent.payload)["gasUsed"]
            found[route(source)] = {"send": send_gas, "deliver": first["gas"],
                                    "execute": executed, "total": first["gas"] + executed}
        return found


def gas_section(network: Network, sizes: tuple[int, ...], params: BridgeParams) -> dict:
    bench = GasBench(network)
    # warm-up: no later row takes a balance or counter from or to zero, and the peer keeps
    # a stock of locked TUSD to unlock from
    for source, amount in ((PEER, 1_000 * TUSD), (HOME, 100 * TUSD)):
        assert bench.deliver(bench.send(source, amount))[0]
    bench.sends = {k: [] for k in bench.sends}
    rows, rotations, queued = [], [], {}
    funding = bench.order_funding()   # with the genesis committee
    say(f"  an order funded from {PEER} in one message: deliver "
        f"{funding['deliver_opening_the_order']:,} gas (a plain transfer "
        f"{funding['deliver_plain_transfer']:,})")
    for size in sizes:
        rotations.append(bench.rotate(size, f"size {size}"))
        row = {"signatures": size}
        for source, key in ((PEER, "gas"), (HOME, "gas_on_peer")):
            delivered, measured = bench.deliver(bench.send(source, TUSD))
            assert delivered
            row[key] = measured["gas"]
            row.setdefault("calldata_bytes", measured["calldata_bytes"])
        rows.append(row)
        say(f"  {size:2} signatures: deliver {row['gas']:,} gas (mint on {HOME}), "
            f"{row['gas_on_peer']:,} (unlock on {PEER})")
        if size == QUEUED_AT:
            queued = bench.queued(params)
        if size in ROTATE_SIZES:
            rotations.append(bench.rotate(size, f"again {size}"))
    bare = {f"on {cid}": BridgeOutbox(bench.chain(cid, bench.payer)).send(
        other(cid), devnet_account(RECIPIENT).address, 0, 0, bytes(range(1, 65)))[1]["gasUsed"]
        for cid in (HOME, PEER)}
    median = {k: int(statistics.median(v)) for k, v in bench.sends.items() if v}
    return {
        "what": "receipts' gasUsed on anvil: 21,000 base + calldata + execution",
        "rows_note": f"gas: delivered on the home chain {HOME} (TokenBridge mints); gas_on_peer: "
                     f"delivered on the peer {PEER} (TokenBridge unlocks). A committee of that "
                     "many fresh keys, equal weight, all signing; 1 TUSD to a recipient that "
                     "holds TUSD, after a warm-up transfer each way, each in a later second than the route's "
                     "previous delivery (its bucket's timestamp changes). calldata_bytes: the "
                     "deliver transaction's input (the home one)",
        "rows": rows,
        "queued": {**queued, "note": "amount = large_threshold + 1 TUSD: deliver queues it "
                                     "(no mint or unlock yet); execute, after the delay, does. "
                                     "total = deliver + execute (send apart)"},
        "send": {"TokenBridge.send lock (on peer)": median.get("lock"),
                 "TokenBridge.send burn (on home)": median.get("burn"),
                 "approve before it (not included above)": median.get("approve"),
                 "BridgeOutbox.send, no value, 64-byte payload": bare,
                 "note": f"TokenBridge: medians of the rows' {len(bench.sends['lock'])} lock and "
                         f"{len(bench.sends['burn'])} burn sends (1 TUSD each)"},
        "order_funding": funding,
        "rotate": {"rows": [r for r in rotations if r["signatures"] == r["members"]],
                   "all": rotations,
                   "note": "every member of the current committee signing, a committee of fresh "
                           "keys stored. rows: between committees of one size; all: every "
                           "rotation made (signatures = the old size, members = the new)"},
    }


# -- 3. bucket, 4. model ----------------------------------------------------------------------
def bucket_section(params: BridgeParams, network: Network) -> dict:
    cap, refill, large = params.capacity, params.refill_per_s, params.large_threshold
    bullets = inspect.cleandoc(BridgeParams.__doc__ or "").split("\n- ")[1:]
    stolen = next((" ".join(p.split()) for p in (ROOT / "docs" / "bridge.md").read_text().split("\n\n")
                   if p.startswith("**What a stolen quorum can take.**")), None)
    deployed = {}
    for cid in (HOME, PEER):
        inbox, src = BridgeInbox(Chain(network.chain(cid))), other(cid)
        sender = network.chain(src).address("TokenBridge")   # the route's value sender
        b = inbox.bucket(src, sender)
        deployed[f"inbox on {cid}, from {src}"] = {
            "sender": sender, "capacity": b.capacity, "refill_per_s": b.refill_per_s,
            "large_threshold": inbox.large_threshold(src, sender), "delay": inbox.delay(),
            "max_transfer": TokenBridge(Chain(network.chain(src))).max_transfer(cid)}
    day = refill * 86_400
    return {
        "source": "tessera.chain.bridge_deploy.BridgeParams' defaults, read at run time; "
                  "`deployed`: the same read back from the devnet's two inboxes, for the source "
                  "TokenBridge's bucket (and max_transfer from that TokenBridge)",
        "units": "TUSD base units (6 decimals); delay in seconds",
        "capacity": cap, "refill_per_s": refill, "large_threshold": large, "delay": params.delay,
        "max_transfer": params.max_transfer, "threshold_bps": params.threshold_bps,
        "deployed": deployed,
        "reasoning": {
            "BridgeParams": [" ".join(b.split()) for b in bullets],
            "docs/bridge.md": stolen,
            "arithmetic": {
                "refill_from_empty_s": round(cap / refill, 1),
                "refill_per_hour_tusd": round(refill * 3600 / TUSD, 2),
                "messages_to_empty_without_queueing": math.ceil(cap / large),
                "stolen_quorum_first_day_per_route_tusd": round((cap + day) / TUSD, 2),
                "stolen_quorum_each_later_day_per_route_tusd": round(day / TUSD, 2),
                "explained": (
                    "A stolen quorum forges messages of at most large_threshold each (a larger "
                    "one waits `delay` in the queue, where the guardian cancels it): "
                    f"{math.ceil(cap / large)} of them empty a full bucket at once. It refills "
                    f"at {refill / TUSD:.6f} TUSD/s, full again after {cap / refill / 3600:.2f} h, "
                    f"so unnoticed for a day one route loses capacity + refill_per_s x 86,400 = "
                    f"{(cap + day) / TUSD:,.0f} TUSD, then {day / TUSD:,.0f} TUSD a day. The "
                    "committee is the same on both chains, so the two routes (an unbacked mint "
                    "on the home chain; an unlock of locked TUSD on the peer, also bounded by "
                    "what is locked) can at most double that. An honest max_transfer "
                    f"({params.max_transfer / TUSD:,.0f} TUSD) is over large_threshold: it "
                    f"waits {params.delay} s.")}},
    }


def model_section(rows: list[dict]) -> dict:
    xs = [r["signatures"] for r in rows]
    fits = {}
    for key in ("gas", "gas_on_peer"):
        ys = [r[key] for r in rows]
        b, a = statistics.linear_regression(xs, ys)
        fits[key] = {"a": round(a), "b_per_signature": round(b), "max_residual_gas":
                     round(max(abs(y - a - b * x) for x, y in zip(xs, ys, strict=True)))}
    measured = {r["signatures"]: r["gas"] for r in rows}
    per_delivery = {}
    for n in (3, 32):
        gas = measured.get(n, fits["gas"]["a"] + fits["gas"]["b_per_signature"] * n)
        per_delivery[f"{n} signatures (delivered on home)"] = {
            "gas": gas, "gas_from": "measured row" if n in measured else "the fit",
            **{f"eth_at_{p}_gwei": round(gas * p * 1e-9, 6) for p in PRICES_GWEI}}
    return {"label": "MODEL, not a measurement: a least-squares line gas = a + b x signatures "
                     "through deliver_gas.rows, and gas x an assumed gas price (no ETH price "
                     "is assumed)", "fits": fits, "per_delivery": per_delivery}


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TRANSFERS} transfers, committees of {QUICK_SIZES}")
    parser.add_argument("--transfers", type=int, help=f"default {TRANSFERS} ({QUICK_TRANSFERS} "
                        "with --quick)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--keep", action="store_true", help="keep the logs' temp folder")
    parser.add_argument("--out", type=Path, help="default bench/results/crosschain.json (a temp "
                        "file with --quick)")
    args = parser.parse_args()
    count = args.transfers or (QUICK_TRANSFERS if args.quick else TRANSFERS)
    out = args.out or (Path(tempfile.gettempdir()) / "crosschain_quick.json" if args.quick
                       else RESULTS)
    params = BridgeParams(guardian=devnet_account(1).address)   # only its defaults are read
    load_before, t0 = os.getloadavg(), time.monotonic()
    say(f"load average before: {load_before}")
    home = Path(tempfile.mkdtemp(prefix="tessera-bench-crosschain-"))
    devnet, validators, relay, watcher = Devnet(home / "devnet"), [], None, None
    phases = {}
    try:
        port = free_port_pair()
        up = subprocess.run([sys.executable, "-m", "tessera.cli", "devnet", "up", "--chains", "2",
                             "--port", str(port), "--block-time", str(BLOCK_TIME)], text=True,
                            capture_output=True, env={**os.environ, "TESSERA_HOME": str(home)})
        if up.returncode != 0:
            raise SystemExit(f"tessera devnet up failed: {up.stdout[-2000:]}{up.stderr[-2000:]}")
        network = load_network(devnet.network_file)
        validators, relay = start_daemons(home, devnet.network_file)
        watcher = BlockWatcher({n.chain_id: n.rpc_url for n in network.chains()})
        watcher.start()
        phases["setup_s"] = round(time.monotonic() - t0, 1)
        say(f"[1] latency: {count} transfers (devnet, 3 validators and a relayer up in "
            f"{phases['setup_s']} s; logs in {home})")
        before, started = processes(), time.monotonic()
        rows = transfer_latencies(network, watcher, count, args.seed)
        wall, load_latency = time.monotonic() - started, os.getloadavg()
        use = cpu_use(before, processes(), [os.getpid(), devnet.pid(), devnet.peer_pid()], wall)
        watcher.halt.set()
        for proc in [relay, *(p for p, _ in validators)]:
            stop(proc)
        add_breakdown(rows, home, network)
        latency = latency_section(rows, count, args.seed)
        say(f"  p50 {latency['p50']} s, p95 {latency['p95']} s, max {latency['max']} s")
        say("[2] deliver gas")
        t1 = time.monotonic()
        stake_gas = stake_and_forgery_gas(network, devnet_account(PAYER))   # genesis committee
        say(f"  stake: {stake_gas['stake']}; forgery: {stake_gas['forgery']}")
        gas = gas_section(network, QUICK_SIZES if args.quick else SIZES, params)
        bucket = bucket_section(params, network)
        phases.update(latency_s=round(wall, 1), gas_s=round(time.monotonic() - t1, 1))
    finally:
        if watcher is not None:
            watcher.halt.set()
        for proc in [relay, *(p for p, _ in validators)]:
            if proc is not None:
                stop(proc)
        devnet.down()
        if args.keep:
            say(f"logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    load_after = os.getloadavg()
    contended = load_before[0] > 1.0 or use["other_cores_avg"] > 0.2
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "contracts_sha256": {n: hashlib.sha256((CONTRACTS / f"{n}.vy").read_bytes()).hexdigest()[:16]
                             for n in ("BridgeInbox", "BridgeOutbox", "TokenBridge", "PaymentToken",
                                       "ForgerySlasher", "Validators")},
        "contended": contended,
        "load": {"note": CONTENTION_NOTE, "loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_end_of_latency": [round(x, 2) for x in load_latency],
                 "loadavg_after": [round(x, 2) for x in load_after],
                 "cpu_during_latency": use, "phases": phases},
        "deliver_gas": gas,
        "stake_and_forgery_gas": stake_gas,
        "latency_s": latency,
        "bucket": bucket,
        "model": model_section(gas["rows"]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    say(f"contended: {contended} (load {load_before} -> {load_after}; other processes "
        f"{use['other_cores_avg']} cores during the latency phase); wrote {out}")


if __name__ == "__main__":
    main()
