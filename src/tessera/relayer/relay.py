"""The relayer (docs/bridge.md): carries confirmed messages and the committee's signatures from
each chain's outbox to the destination's inbox. Any party may run one; it can forge neither a
message (the inbox hashes the fields itself) nor a signature (it checks each one it is given
and the inbox recovers every signer).

One `poll_once`:
1. On each chain, read `MessageSent` from the cursor up to `head - confirmations`; the new
   messages join the open set, and the cursor moves, in one atomic write of the state file.
2. For each open message, in (source, nonce) order: if the inbox already has it, it is done
   (or queued); else ask the committee members' validator endpoints (the home Validators
   contract publishes them) for their attestations, keep those that recover to a member for
   this message and the inbox's current epoch, and deliver once they reach the quorum
   (`protocol.bridge.quorum_reached`). A queued message is executed once its delay is over.
3. On the home chain, what BridgeOrders owes the senders of bridged orders (their refunds) is
   sent back to their chain (relayer/order_refunds.py).

The state file (`$TESSERA_HOME/relayer/<network>-<chain>.json` by default) is written after
every step, so a relayer killed at any point and restarted loses nothing (a message seen is in
the open set until the inbox has it) and delivers nothing twice (the inbox refuses a second
delivery, and "already delivered" is read as done).
"""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydantic_core
from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.chain.accounts import tessera_home
from tessera.chain.bridge_committee import CommitteeWatch, DueRotation
from tessera.chain.bridge_inbox import (
    TRANSIENT,
    BridgeInbox,
    attestation_signer,
    refusal,
    rotation_signer,
)
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain, tx_hash
from tessera.chain.network import Network
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.validators import Validators
from tessera.errors import BridgeError
from tessera.files import write_atomic
from tessera.http_deadline import DeadlineClient, raw_chunks, within
from tessera.logs import EventLog
from tessera.protocol.bridge import (
    DEFAULT_CONFIRMATIONS,
    KIND_TRANSFER_CALL,
    Message,
    decode_transfer_call_payload,
    quorum_reached,
    sort_signatures,
)
from tessera.relayer.order_refunds import CHECK_S, OrderRefunds

STATE_VERSION = 1
# After a refusal that time alone will not lift ("over capacity", "unknown peer", a recipient
# that reverts), the next try waits RETRY_S, then twice as long each time up to MAX_RETRY_S:
# anyone can send junk messages through an outbox, and each must not cost a deliver attempt
# every 30 s for ever.
RETRY_S = 30.0
MAX_RETRY_S = 3_600.0
# A validator's answer is a few hundred bytes; anything longer is refused unread, and each ask
# has a deadline for the whole answer (a member trickling one byte a second, or answering with
# a 100 kB `[[[[...` that would crash Python's JSON parser, must not stop the relayer).
ATTESTATION_BYTES = 4_096
NOT_SERVED_KEPT = 100   # messages not carried: the latest kept by id in the state, the rest counted
ATTESTATION_DEADLINE_S = 3.0


def default_state_file(network: Network) -> Path:
    return tessera_home() / "relayer" / f"{network.name}-{network.chain_id}.json"


def message_to_json(m: Message) -> dict:
    return {"version": m.version, "source_chain": m.source_chain, "source_outbox": m.source_outbox,
            "sender": m.sender, "nonce": m.nonce, "destination_chain": m.destination_chain,
            "recipient": m.recipient, "kind": m.kind, "amount": str(m.amount),
            "payload_hash": "0x" + m.payload_hash.hex()}


def message_from_json(d: dict) -> Message:
    return Message(source_chain=int(d["source_chain"]), source_outbox=d["source_outbox"],
                   sender=d["sender"], nonce=int(d["nonce"]),
                   destination_chain=int(d["destination_chain"]), recipient=d["recipient"],
                   kind=int(d["kind"]), amount=int(d["amount"]),
                   payload_hash=bytes.fromhex(d["payload_hash"].removeprefix("0x")),
                   version=int(d["version"]))


@dataclass
class Committee:
    """One inbox's current committee, read once per poll."""
    epoch: int
    weights: dict[str, int]
    threshold_bps: int


class Collector:
    """Gathers a message's attestations from the committee members' validator endpoints (the
    home Validators contract publishes them), keeping only signatures that recover to a member
    of the destination inbox's current epoch for exactly this message."""

    def __init__(self, inboxes: dict[int, BridgeInbox], validators: Validators,
                 log: EventLog, timeout: float = 2.0):
        self.inboxes, self.validators, self.log = inboxes, validators, log
        self.http = DeadlineClient(timeout=timeout)   # every answer whole by its deadline
        self._committees: dict[int, Committee] = {}
        self._endpoints: dict[str, str] = {}
        self._unreachable: set[str] = set()   # endpoints that failed this poll: not asked again

    def forget(self) -> None:
        """Read committees and endpoints again (once per poll: they change by rotation)."""
        self._committees.clear()
        self._endpoints.clear()
        self._unreachable.clear()

    def committee(self, destination: int) -> Committee:
        if destination not in self._committees:
            inbox = self.inboxes[destination]
            epoch = inbox.epoch()
            self._committees[destination] = Committee(epoch, inbox.weights(epoch),
                                                      inbox.threshold_bps())
        return self._committees[destination]

    def endpoint(self, member: str) -> str:
        if member not in self._endpoints:
            self._endpoints[member] = self.validators.record(member)["endpoint"]
        return self._endpoints[member]

    def collect(self, m: Message) -> list[bytes] | None:
        """Signatures of the destination's current committee for `m`, sorted by signer, once
        they reach the quorum; None (logged) before that."""
        committee = self.committee(m.destination_chain)
        inbox = self.inboxes[m.destination_chain].address
        signed: dict[str, bytes] = {}
        heaviest = sorted(committee.weights, key=lambda a: -committee.weights[a])
        for member in heaviest:
            signature = self._fetch(member, m, committee.epoch)
            if signature is None:
                continue
            signer = attestation_signer(m.destination_chain, inbox, m.id, committee.epoch, signature)
            if signer is None or Web3.to_checksum_address(signer) != member:
                self.log("bridge-bad-attestation", "warning", member=member, nonce=m.nonce,
                         source=m.source_chain)
                continue
            signed[member] = signature
            ordered = sorted(signed, key=lambda a: int(a, 16))
            if quorum_reached(ordered, committee.weights, committee.threshold_bps):
                return sort_signatures(signed)
        return None

    def collect_rotation(self, chain_id: int, due: DueRotation) -> list[bytes] | None:
        """Signatures of `chain_id`'s current committee for the hand-over `due`
        (chain/bridge_committee.py), sorted by signer, once they reach the quorum; None before.
        Each member's proposal (validator/bridge_rotation.py) is checked as the inbox would
        check it, and must be exactly `due`."""
        committee = self.committee(chain_id)
        if due.epoch != committee.epoch + 1:
            return None
        inbox = self.inboxes[chain_id].address
        signed: dict[str, bytes] = {}
        for member in sorted(committee.weights, key=lambda a: -committee.weights[a]):
            doc = self._ask(member, "/bridge/rotations", {"chain": chain_id})
            try:
                if (int(doc["epoch"]), [Web3.to_checksum_address(m) for m in doc["members"]],
                        [int(w) for w in doc["weights"]]) != (due.epoch, due.members, due.weights):
                    continue   # another committee (read at another moment), or none yet
                signature = bytes.fromhex(str(doc["signature"]).removeprefix("0x"))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            signer = rotation_signer(chain_id, inbox, due.epoch, due.members, due.weights,
                                     signature)
            if signer is None or Web3.to_checksum_address(signer) != member:
                self.log("bridge-bad-rotation", "warning", member=member, chain=chain_id)
                continue
            signed[member] = signature
            if quorum_reached(sorted(signed, key=lambda a: int(a, 16)), committee.weights,
                              committee.threshold_bps):
                return sort_signatures(signed)
        return None

    def _fetch(self, member: str, m: Message, epoch: int) -> bytes | None:
        doc = self._ask(member, "/bridge/attestations", {"source": m.source_chain, "nonce": m.nonce})
        try:
            if doc.get("message_id") != "0x" + m.id.hex() or doc.get("epoch") != epoch:
                return None   # not attested yet, or for another epoch (it signs again)
            return bytes.fromhex(str(doc["signature"]).removeprefix("0x"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def _ask(self, member: str, path: str, params: dict) -> dict:
        """`member`'s endpoint's JSON answer at `path` ({} for none: no endpoint, not found,
        junk; an endpoint that is down, slow or too long is not asked again this poll)."""
        endpoint = self.endpoint(member)
        if not endpoint or endpoint in self._unreachable:
            return {}
        body = self._get_bounded(f"{endpoint.rstrip('/')}{path}", params)
        if body is None:
            self._unreachable.add(endpoint)
            self.log("bridge-endpoint-refused", "warning", member=member, endpoint=endpoint)
            return {}
        try:
            doc = pydantic_core.from_json(body) if body else {}
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def _get_bounded(self, url: str, params: dict) -> bytes | None:
        """The body of a 200 answer (b"" for any other status), or None when the endpoint is
        down, slower than ATTESTATION_DEADLINE_S for the whole answer (headers included: a
        member dripping them held the relayer), or longer than ATTESTATION_BYTES."""
        deadline = time.monotonic() + ATTESTATION_DEADLINE_S
        try:
            with within(deadline), self.http.stream("GET", url, params=params) as reply:
                if reply.status_code != 200:
                    return b""
                chunks, size = [], 0
                for chunk in raw_chunks(reply):
                    size += len(chunk)
                    if size > ATTESTATION_BYTES or time.monotonic() > deadline:
                        return None
                    chunks.append(chunk)
                return b"".join(chunks)
        except (httpx.HTTPError, ValueError):    # ValueError: an encoded body
            return None

    def close(self) -> None:
        self.http.close()


class Relayer:
    def __init__(self, network: Network, account: LocalAccount, state_file: Path | None = None,
                 confirmations: int = DEFAULT_CONFIRMATIONS, log: EventLog | None = None,
                 timeout: float = 2.0, refund_check_s: float = CHECK_S):
        if not network.peers:
            raise BridgeError(f"network {network.name!r} names no peer chain: there is no route "
                              "to relay (start one with `tessera devnet up --chains 2`)")
        self.network = network
        self.confirmations = confirmations
        self.log = log or EventLog("relayer")
        self.chains = {n.chain_id: Chain(n, account) for n in network.chains()}
        self.outboxes = {cid: BridgeOutbox(c) for cid, c in self.chains.items()}
        self.inboxes = {cid: BridgeInbox(c) for cid, c in self.chains.items()}
        self.validators = Validators(self.chains[network.chain_id])
        self.state_file = Path(state_file) if state_file else default_state_file(network)
        self.collector = Collector(self.inboxes, self.validators, self.log, timeout)
        self.committees = CommitteeWatch(self.chains[network.chain_id], self.inboxes)
        self.state = self._load()
        home = self.chains[network.chain_id]
        self.refunds = (OrderRefunds(home, self.state, self.save, self.log, self.route_open,
                                     refund_check_s, confirmations)
                        if "BridgeOrders" in network.contracts else None)

    # -- state -----------------------------------------------------------------------------
    def _load(self) -> dict:
        fresh = {"version": STATE_VERSION, "network": self.network.name,
                 "home_chain": self.network.chain_id, "scanned": {}, "open": {}, "done": {}}
        if not self.state_file.exists():
            return fresh
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BridgeError(f"relayer state {self.state_file} cannot be read: {exc}") from None
        if state.get("version") != STATE_VERSION or state.get("home_chain") != self.network.chain_id:
            raise BridgeError(f"relayer state {self.state_file} belongs to another network or "
                              "version: pass another --state")
        return state

    def route_open(self, chain_id: int) -> bool:
        """Whether value can arrive on `chain_id` now (its TokenBridge and inbox unpaused)."""
        chain = self.chains.get(chain_id)
        return (chain is not None and not self.inboxes[chain_id].paused()
                and not TokenBridge(chain).paused())

    def serves(self, m: Message, payload: bytes) -> str | None:
        """Why this relayer does not carry `m` (None: it does). It carries the bridge's own
        routes only: a TokenBridge (or StakeBridge) to its peer, and a peer outbox's forgery
        report to the home ForgerySlasher; anyone can send any message through an outbox, and
        its delivery's gas (a recipient may burn millions) would be the relayer's (review 13).
        A transfer with a call goes to the destination's BridgeOrders only: its delivery leaves
        TokenBridge.CALL_GAS (1.5 M) for the call (review 12). The sender of any other message
        can deliver it itself."""
        source = self.chains[m.source_chain].network.contracts
        destination = self.chains[m.destination_chain].network.contracts
        pairs = [(source.get(app), destination.get(app)) for app in ("TokenBridge", "StakeBridge")]
        pairs.append((source.get("BridgeOutbox"), destination.get("ForgerySlasher")))
        route = (m.sender.lower(), m.recipient.lower())
        if not any(a and b and route == (a.lower(), b.lower()) for a, b in pairs):
            return (f"a message from {m.sender} to {m.recipient}: not one of the bridge's own "
                    "routes")
        if m.kind != KIND_TRANSFER_CALL:
            return None
        if route[0] != (source.get("TokenBridge") or "").lower():
            return "a transfer with a call from another app than the TokenBridge"
        known = destination.get("BridgeOrders")
        try:
            to, _, _ = decode_transfer_call_payload(payload)
        except ValueError:
            return "a transfer with a call whose payload does not decode"
        if known is None or to.lower() != known.lower():
            return f"a transfer with a call to {to}, not to BridgeOrders"
        return None

    def save(self, durable: bool = True) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_file, json.dumps(self.state, indent=1), durable=durable)

    def _done(self, key: str, how: str, **fields) -> None:
        entry = self.state["open"].pop(key)
        self.state["done"][how] = self.state["done"].get(how, 0) + 1
        self.save()
        self.log(f"bridge-{how}", key=key, message_id=entry["id"], **fields)

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop, interval: float = 0.5) -> None:
        """Poll until `stop` (a threading.Event) is set; one relayer per state file (a lock)."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file.with_suffix(".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BridgeError(f"another relayer uses {self.state_file}") from None
            delay = interval
            while not stop.is_set():
                try:
                    self.poll_once()
                    delay = interval
                except Exception as exc:   # keep relaying; the error is logged
                    delay = min(delay * 2, 10.0)
                    self.log("relay-error", "error", error=f"{type(exc).__name__}: {exc}")
                stop.wait(delay)

    def poll_once(self) -> None:
        self.collector.forget()
        for source in self.chains:
            self._scan(source)
        for key in sorted(self.state["open"], key=lambda k: tuple(map(int, k.split(":")))):
            self._advance(key)
        try:
            due = self.committees.due()
        except Exception as exc:   # rotations wait; deliveries and refunds go on (reviews 17, 18)
            self.log("bridge-committee-error", "warning", error=f"{type(exc).__name__}: {exc}")
            due = {}
        for chain_id, rotation in due.items():   # asks members only while due
            self._rotate(chain_id, rotation)
        if self.refunds:
            self.refunds.poll()

    def _rotate(self, chain_id: int, due: DueRotation) -> None:
        """Carry the hand-over `due`, once its current members signed it, to the inbox."""
        signatures = self.collector.collect_rotation(chain_id, due)
        if signatures is None:
            return
        epoch, members, weights = due.epoch, due.members, due.weights
        try:
            receipt = self.inboxes[chain_id].rotate(epoch, members, weights, signatures)
        except BridgeError as exc:   # another relayer was first, or the committee moved on
            self.log("bridge-rotation-refused", "warning", chain=chain_id, epoch=epoch,
                     reason=str(exc))
            return
        self.collector.forget()   # a new committee: read it again
        self.log("bridge-rotated", chain=chain_id, epoch=epoch, members=len(members),
                 tx=tx_hash(receipt))

    def _scan(self, source: int) -> None:
        chain = self.chains[source]
        confirmed = chain.block_number() - self.confirmations
        start = self.state["scanned"].get(str(source), chain.network.deploy_block)
        if start > confirmed:
            return
        # one atomic write records the new messages and the moved cursor together: a crash
        # before it reads the range again, after it finds them in the open set
        new = 0
        for sent in self.outboxes[source].messages(start, confirmed):
            m = sent.message
            if m.destination_chain not in self.inboxes:
                continue
            key = f"{m.source_chain}:{m.nonce}"
            reason = self.serves(m, sent.payload)
            if reason is not None:
                # a count, and the latest few (anyone can send such messages for ~50k gas)
                skipped = self.state.setdefault("not_served", {"count": 0, "latest": {}})
                if key not in skipped["latest"]:
                    skipped["count"] += 1
                    skipped["latest"][key] = reason
                    while len(skipped["latest"]) > NOT_SERVED_KEPT:
                        skipped["latest"].pop(next(iter(skipped["latest"])))
                    self.log("bridge-not-served", "warning", key=key, reason=reason,
                             message_id="0x" + m.id.hex())
                continue
            if key not in self.state["open"]:
                self.state["open"][key] = {"message": message_to_json(m),
                                           "payload": "0x" + sent.payload.hex(),
                                           "id": "0x" + m.id.hex(), "block": sent.block_number,
                                           "tx": sent.tx, "status": "waiting", "note": "",
                                           "retry_at": 0.0, "seen_at": time.time()}
                new += 1
                self.log("bridge-seen", key=key, destination=m.destination_chain,
                         amount=m.amount, message_id="0x" + m.id.hex())
        self.state["scanned"][str(source)] = confirmed + 1
        self.save(durable=new > 0)   # a cursor lost in a crash only means a range read twice

    def _advance(self, key: str) -> None:
        entry = self.state["open"][key]
        if entry["retry_at"] > time.time():
            return
        m = message_from_json(entry["message"])
        payload = bytes.fromhex(entry["payload"][2:])
        inbox = self.inboxes[m.destination_chain]
        if inbox.delivered(m.id):
            self._settled(key, m, inbox, payload)
            return
        if self.outboxes[m.source_chain].sent(m.nonce) != m.id:   # a reorg removed it
            self.state["scanned"][str(m.source_chain)] = min(
                entry["block"], self.state["scanned"].get(str(m.source_chain), entry["block"]))
            self._done(key, "dropped", reason="the source outbox no longer stores it")
            return
        signatures = self.collector.collect(m)
        if signatures is None:
            return
        try:
            delivered, receipt = inbox.deliver(m, payload, signatures)
        except BridgeError as exc:
            self._refused(key, entry, refusal(exc))
            return
        if delivered:
            sent_at = self.chains[m.source_chain].block_timestamp(entry["block"])
            self._done(key, "delivered", tx=tx_hash(receipt),
                       since_source_block_s=round(time.time() - sent_at, 2))
        else:
            entry.update(status="queued", note="", release_at=inbox.pending(m.id))
            self.save()
            self.log("bridge-queued", key=key, release_at=entry["release_at"], tx=tx_hash(receipt))

    def _settled(self, key: str, m: Message, inbox: BridgeInbox, payload: bytes) -> None:
        """The inbox has the message: delivered, cancelled, or queued (execute it when due)."""
        entry = self.state["open"][key]
        if inbox.cancelled(m.id):
            self._done(key, "cancelled")
            return
        release = inbox.pending(m.id)
        if release == 0:
            self._done(key, "delivered" if entry["status"] != "queued" else "executed")
            return
        if entry["status"] != "queued":
            entry.update(status="queued", release_at=release)
            self.save()
        if self.chains[m.destination_chain].block_timestamp() < release:
            return
        try:
            receipt = inbox.execute(m, payload)
        except BridgeError as exc:
            self._refused(key, entry, refusal(exc))
            return
        self._done(key, "executed", tx=tx_hash(receipt))

    def _refused(self, key: str, entry: dict, reason: str) -> None:
        if reason == "already delivered":   # another relayer, or ours before a restart
            entry["note"] = reason
            return
        entry["note"] = reason
        if reason not in TRANSIENT:
            tries = entry.get("tries", 0)
            entry["tries"] = tries + 1
            entry["retry_at"] = time.time() + min(RETRY_S * 2**tries, MAX_RETRY_S)
        self.save()
        self.log("bridge-refused", "warning" if reason in TRANSIENT else "error", key=key,
                 reason=reason)

    def close(self) -> None:
        self.collector.close()
