"""Cross-chain transfers from the bridge's logs of every chain: one row per message id, and the
bridge's conservation rule (docs/explorer.md, "The bridge"). Pure: events in, rows and problems out.

A message's life, by the events that name its id (a message id names its source chain, outbox,
nonce and destination, protocol/bridge.py, so it is one route once):
- `sent`: `MessageSent` on the source (with `TransferSent` for a token transfer: who sent what
  to whom);
- `queued`: `MessageQueued` on the destination (a large transfer waits the delay);
- `delivered`: `MessageDelivered` (and `TransferReceived`: the tokens unlocked or minted);
- `cancelled`: `MessageCancelled` on the destination (the guardian): its bounce is on the way;
- `bounced`: `TransferBounced` on the source after the cancellation (the sender refunded; a
  refund of a transfer never cancelled leaves its state where it was, and breaks the sum).
A bounce is itself a message (kind 2), listed with `bounce_of` its transfer.

Two token bridges may share the outbox and inbox (docs/bridge.md, "Stake on another chain"):
TokenBridge moves TUSD, StakeBridge TSTK (`BRIDGE_TOKENS`). A message's `token` is the one whose
bridge sent it: its MessageSent's `sender` is that bridge's address on the source chain (a
delivery nobody sent: its recipient, the bridge it was delivered to). A message whose sender is
neither bridge has no token (None); one of those that carries value is a problem once delivered
(the inbox refuses it: only the bridges are value senders).

Conservation, per direction S -> D and per token: the tokens TransferSent locked or burned on S
= TransferReceived on D from S + in flight (sent, queued or cancelled and not yet bounced) +
refunded on S by TransferBounced, each sum over that token's bridge's events (an event's token is
the contract that emitted it). Each delivery must have its send: a MessageDelivered whose id no
MessageSent of its source chain carries is a message nobody sent (a stolen quorum, a bad outbox),
and what it released has no lock behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from eth_utils import keccak

from tessera.protocol.bridge import KIND_BOUNCE, TRANSFER_KINDS, Message
from tessera.protocol.events import EventRecord
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    format_amount,
)

STATES = ("sent", "queued", "delivered", "cancelled", "bounced")
IN_FLIGHT = ("sent", "queued", "cancelled")
BRIDGE_EVENTS = {"MessageSent", "TransferSent", "MessageQueued", "MessageDelivered",
                 "TransferReceived", "MessageCancelled", "TransferCancelled", "TransferBounced"}
# The token bridges by their network-file name, and the token each moves (in this order).
BRIDGE_TOKENS = {"TokenBridge": PAYMENT_SYMBOL, "StakeBridge": STAKE_SYMBOL}
TOKEN_DECIMALS = {PAYMENT_SYMBOL: PAYMENT_DECIMALS, STAKE_SYMBOL: STAKE_DECIMALS}
TOKEN_ORDER = tuple(BRIDGE_TOKENS.values())
# chain id -> {token bridge address, lower-case: the token it moves} (bridge_index.bridge_tokens)
Bridges = dict[int, dict[str, str]]


@dataclass(frozen=True)
class ChainEvent:
    """A bridge event and the chain it was emitted on."""

    chain_id: int
    record: EventRecord


def exact(value: int, token: str | None) -> str:
    """An amount exactly, with its token's symbol ('5 TUSD'); 'N base units' with no token."""
    return format_amount(value, TOKEN_DECIMALS[token], token) if token in TOKEN_DECIMALS else \
        f"{value} base units"


def token_of(bridges: Bridges, chain_id: int | None, address: object) -> str | None:
    """The token of the token bridge at `address` on `chain_id` (None: neither bridge)."""
    if chain_id is None or not isinstance(address, str):
        return None
    return bridges.get(chain_id, {}).get(address.lower())


def message_of(record: EventRecord) -> str | None:
    """The message id an event is about (`TransferBounced`: the transfer it refunds)."""
    args = record.args
    if record.event == "TransferBounced":
        return args.get("cancelled_id")
    value = args.get("message_id")
    return value if isinstance(value, str) else None


@dataclass
class TransferRow:
    """One row of `explorer_crosschain_transfers` (db_bridge.CrossChainTransfer)."""

    message_id: str
    kind: int = 0
    source_chain: int | None = None
    destination_chain: int | None = None
    nonce: int | None = None
    sender: str | None = None
    recipient: str | None = None
    amount: int = 0
    token: str | None = None       # "TUSD" or "TSTK": whose bridge sent it (None: neither)
    state: str = "sent"
    source_tx: str | None = None
    source_timestamp: int = 0
    queued_tx: str | None = None
    release_at: int | None = None
    delivery_chain: int | None = None
    delivery_tx: str | None = None
    delivered_at: int | None = None
    received: int = 0
    cancelled_tx: str | None = None
    bounce_id: str | None = None
    bounce_tx: str | None = None
    refunded: int = 0
    bounce_of: str | None = None
    deliveries: int = 0

    def values(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


COLUMNS = tuple(f.name for f in fields(TransferRow))


@dataclass
class _Facts:
    sent: ChainEvent | None = None
    transfer: ChainEvent | None = None
    queued: ChainEvent | None = None
    delivered: list[ChainEvent] = field(default_factory=list)
    received: list[ChainEvent] = field(default_factory=list)
    cancelled: ChainEvent | None = None
    bounce_id: str | None = None
    bounce_of: str | None = None
    bounced: list[ChainEvent] = field(default_factory=list)


def _facts(events: Iterable[ChainEvent]) -> dict[str, _Facts]:
    facts: dict[str, _Facts] = {}
    ordered = sorted(events, key=lambda c: (c.chain_id, c.record.block_number, c.record.log_index))
    for item in ordered:
        r = item.record
        if r.event not in BRIDGE_EVENTS:
            continue
        mid = message_of(r)
        if mid is None:
            continue
        f = facts.setdefault(mid, _Facts())
        if r.event == "MessageSent" and f.sent is None:
            f.sent = item
        elif r.event == "TransferSent" and f.transfer is None:
            f.transfer = item
        elif r.event == "MessageQueued" and f.queued is None:
            f.queued = item
        elif r.event == "MessageDelivered":
            f.delivered.append(item)
        elif r.event == "TransferReceived":
            f.received.append(item)
        elif r.event == "MessageCancelled" and f.cancelled is None:
            f.cancelled = item
        elif r.event == "TransferCancelled":
            f.bounce_id = r.args["bounce_id"]
            facts.setdefault(f.bounce_id, _Facts()).bounce_of = mid
        elif r.event == "TransferBounced":
            f.bounced.append(item)
    return facts


def transfers(events: Iterable[ChainEvent], bridges: Bridges) -> dict[str, TransferRow]:
    """{message id: its row} from the bridge events of every indexed chain (any order);
    `bridges` names each chain's token bridges (a row's `token`)."""
    rows: dict[str, TransferRow] = {}
    for mid, f in _facts(events).items():
        row = TransferRow(message_id=mid, bounce_id=f.bounce_id, bounce_of=f.bounce_of,
                          deliveries=len(f.delivered))
        if f.sent:
            a = f.sent.record.args
            row.kind, row.source_chain, row.nonce = a["kind"], f.sent.chain_id, a["nonce"]
            row.destination_chain, row.amount = a["destination_chain"], a["amount"]
            row.sender, row.recipient = a["sender"], a["recipient"]
            row.source_tx, row.source_timestamp = f.sent.record.tx_hash, f.sent.record.timestamp
            row.token = token_of(bridges, f.sent.chain_id, a["sender"])
        elif f.delivered:      # delivered, never sent: what the delivery says
            a = f.delivered[0].record.args
            row.kind, row.source_chain, row.recipient, row.amount = (a["kind"], a["source_chain"],
                                                                     a["recipient"], a["amount"])
            row.destination_chain = f.delivered[0].chain_id
            row.token = token_of(bridges, f.delivered[0].chain_id, a["recipient"])
        if f.transfer:         # a token transfer: the person who sent it and whom it is for
            row.sender, row.recipient = f.transfer.record.args["sender"], f.transfer.record.args["to"]
        elif f.received:
            row.recipient = f.received[0].record.args["to"]
        if f.queued:
            row.queued_tx, row.release_at = f.queued.record.tx_hash, f.queued.record.args["release_at"]
        if f.delivered:
            first = f.delivered[0]
            row.delivery_chain, row.delivery_tx, row.delivered_at = (first.chain_id, first.record.tx_hash,
                                                                     first.record.timestamp)
        row.received = sum(int(c.record.args["amount"]) for c in f.received)
        if f.cancelled:
            row.cancelled_tx = f.cancelled.record.tx_hash
        if f.bounced:
            row.bounce_tx = f.bounced[0].record.tx_hash
            row.refunded = sum(int(c.record.args["amount"]) for c in f.bounced)
        # a refund counts as the end only after a cancellation: a refund of a transfer never
        # cancelled leaves it in flight where it is (and refunded: the sum breaks)
        row.state = ("bounced" if f.bounced and f.cancelled else "cancelled" if f.cancelled else
                     "delivered" if f.delivered else "queued" if f.queued else "sent")
        rows[mid] = row
    return rows


@dataclass
class Direction:
    """The conservation of one direction S -> D of one token, in that token's base units."""

    source: int
    destination: int
    token: str = PAYMENT_SYMBOL
    locked: int = 0          # TransferSent on S toward D
    received: int = 0        # TransferReceived on D from S
    in_flight: int = 0       # transfers S -> D sent, queued or cancelled, not yet bounced
    refunded: int = 0        # TransferBounced on S of transfers toward D
    transfers: int = 0

    @property
    def adds_up(self) -> bool:
        return self.locked == self.received + self.in_flight + self.refunded

    def to_json(self) -> dict:
        return {"source": self.source, "destination": self.destination, "token": self.token,
                "locked": self.locked, "received": self.received, "in_flight": self.in_flight,
                "refunded": self.refunded, "transfers": self.transfers, "adds_up": self.adds_up}


def _order(key: tuple[int, int, str]) -> tuple:
    source, destination, token = key
    return (source, destination, TOKEN_ORDER.index(token) if token in TOKEN_ORDER else len(TOKEN_ORDER),
            token)


def directions(events: list[ChainEvent], rows: dict[str, TransferRow],
               bridges: Bridges) -> dict[tuple[int, int, str], Direction]:
    """Each direction's sums per token, keyed (source, destination, token) in that order (TUSD
    before TSTK): one per pair of indexed chains and token bridge of the source, and any other
    the logs name. The locked, received and refunded sides come straight from the events (an
    event's token is its emitting bridge's), the in-flight part from the rows' states and tokens,
    so that a release with no send, or a send released as the other token, breaks a sum."""
    chains = sorted(bridges)
    out = {(s, d, t): Direction(s, d, t) for s in chains for d in chains if s != d
           for t in TOKEN_ORDER if t in bridges[s].values()}

    def at(source, destination, token) -> Direction:
        return out.setdefault((source, destination, token), Direction(source, destination, token))

    for item in events:
        r, a = item.record, item.record.args
        token = BRIDGE_TOKENS.get(r.contract)
        if token is None:
            continue
        if r.event == "TransferSent":
            at(item.chain_id, a["destination_chain"], token).locked += int(a["amount"])
        elif r.event == "TransferReceived":
            at(a["source_chain"], item.chain_id, token).received += int(a["amount"])
        elif r.event == "TransferBounced":
            row = rows.get(a["cancelled_id"])
            toward = row.destination_chain if row and row.destination_chain is not None else -1
            at(item.chain_id, toward, token).refunded += int(a["amount"])
    for row in rows.values():
        if (row.kind in TRANSFER_KINDS and row.source_tx and row.source_chain is not None
                and row.token is not None):
            d = at(row.source_chain, row.destination_chain, row.token)
            d.transfers += 1
            if row.state in IN_FLIGHT:
                d.in_flight += row.amount
    return dict(sorted(out.items(), key=lambda kv: _order(kv[0])))


def _sent_checks(item: ChainEvent, outbox: str | None) -> list[str]:
    """A MessageSent's fields must hash to the id it carries (with its chain's outbox)."""
    a = item.record.args
    if outbox is None:
        return []
    message = Message(source_chain=item.chain_id, source_outbox=outbox, sender=a["sender"],
                      nonce=a["nonce"], destination_chain=a["destination_chain"], recipient=a["recipient"],
                      kind=a["kind"], amount=a["amount"],
                      payload_hash=keccak(bytes.fromhex(str(a["payload"]).removeprefix("0x"))))
    if "0x" + message.id.hex() != a["message_id"]:
        return [f"MessageSent nonce {a['nonce']} on chain {item.chain_id} (tx {item.record.tx_hash}): its "
                f"fields hash to 0x{message.id.hex()}, not the id {a['message_id']} it carries"]
    return []


def problems(events: list[ChainEvent], rows: dict[str, TransferRow], outboxes: dict[int, str],
             bridges: Bridges) -> list[str]:
    """Every break of the bridge's rules the logs of the indexed chains show (`outboxes`: chain id
    -> its BridgeOutbox address; a chain not in it was not indexed; `bridges`: its token
    bridges)."""
    out: list[str] = []
    for item in events:
        if item.record.event == "MessageSent":
            out += _sent_checks(item, outboxes.get(item.chain_id))
    for mid, row in sorted(rows.items()):
        out += _row_problems(mid, row, outboxes)
    facts = _facts(events)
    for mid, f in sorted(facts.items()):
        for d in f.delivered:
            a = d.record.args
            if row_sent := f.sent:
                s = row_sent.record.args
                if (a["source_chain"], a["kind"], a["amount"], a["recipient"]) != (
                        row_sent.chain_id, s["kind"], s["amount"], s["recipient"]):
                    out.append(f"message {mid}: delivered on chain {d.chain_id} (tx {d.record.tx_hash}) "
                               "with a source, kind, amount or recipient other than its MessageSent's")
        if f.transfer and f.sent and f.transfer.record.args["amount"] != f.sent.record.args["amount"]:
            out.append(f"message {mid}: TransferSent amount {f.transfer.record.args['amount']} differs from "
                       f"its MessageSent's {f.sent.record.args['amount']}")
    for (source, destination, token), d in directions(events, rows, bridges).items():
        if not d.adds_up:
            out.append(f"conservation {source} -> {destination} ({token}): locked {d.locked} != received "
                       f"{d.received} + in flight {d.in_flight} + refunded {d.refunded} ({token} base "
                       f"units; {d.received + d.in_flight + d.refunded - d.locked:+} released without a "
                       "lock)")
    return out


def _row_problems(mid: str, row: TransferRow, outboxes: dict[int, str]) -> list[str]:
    out = []
    if row.deliveries and not row.source_tx:
        where = (f"no MessageSent of chain {row.source_chain}'s outbox carries it"
                 if row.source_chain in outboxes else
                 f"its source chain {row.source_chain} is not one the network file names")
        out.append(f"message {mid}: delivered on chain {row.delivery_chain} (tx {row.delivery_tx}) but never "
                   f"sent: {where}")
    if row.deliveries > 1:
        out.append(f"message {mid}: delivered {row.deliveries} times")
    if row.source_tx and row.deliveries and row.delivery_chain != row.destination_chain:
        out.append(f"message {mid}: sent to chain {row.destination_chain} but delivered on chain "
                   f"{row.delivery_chain} (tx {row.delivery_tx})")
    if row.received and row.received != row.amount:
        out.append(f"message {mid}: {row.received} received for {row.amount} sent")
    if row.refunded and (row.refunded != row.amount or row.cancelled_tx is None or row.deliveries):
        out.append(f"message {mid}: refunded {row.refunded} (tx {row.bounce_tx}) though "
                   + ("it was delivered" if row.deliveries else "never cancelled" if row.cancelled_tx is None
                      else f"{row.amount} was sent"))
    # a token bridge's bounce answers a cancellation; anyone else's "bounce" is just a kind
    # number in a message that moves nothing (one transaction must not break the audit)
    if row.kind == KIND_BOUNCE and row.source_tx and row.bounce_of is None and row.token:
        out.append(f"message {mid}: a bounce no TransferCancelled sent")
    # Anyone may emit a value message from a contract of their own; the inbox refuses to deliver
    # it (not a value sender), so only a delivered one is a break (else one transaction's gas
    # would make the audit disagree for ever).
    if row.source_tx and row.amount and row.token is None and row.deliveries:
        out.append(f"message {mid}: carries {row.amount} base units (tx {row.source_tx} on chain "
                   f"{row.source_chain}) from {row.sender}, which is neither the TokenBridge nor the "
                   f"StakeBridge there, and was delivered on chain {row.delivery_chain}: value no "
                   "token bridge locked")
    return out


def differences(label: str, stored: dict, rows: dict, columns: tuple[str, ...]) -> list[str]:
    """Each row of a derived table (`stored`, by key) that differs from the one recomputed from
    the logs (`rows`: objects with `values()`), column by column; each missing on either side."""
    out = []
    for key in sorted(set(rows) | set(stored)):
        if key not in stored or key not in rows:
            where = ("in the logs, not in the database" if key not in stored else
                     "in the database, not in the logs")
            out.append(f"{label} {key}: {where}")
            continue
        want = rows[key].values()
        for column in columns:
            have = getattr(stored[key], column)
            if have != want[column]:
                out.append(f"{label} {key}: {column} is {have!r} in the database, {want[column]!r} "
                           "by the logs")
    return out
