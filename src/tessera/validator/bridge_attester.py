"""The validator's bridge duty (docs/bridge.md): attest every message its source outbox emitted,
once it is buried under `confirmations` blocks, and serve the signatures to relayers.

For each chain of the network (the home chain and its peers), the attester reads `MessageSent`
up to `head - confirmations`, checks that the outbox stores the same id for the nonce at that
block (state, not only a log), and signs `protocol.bridge.attestation_typed_data` for the
destination's inbox and that inbox's *current* committee epoch. Signatures are kept in SQLite
(`bridge.db` in the validator's state folder) and served at
`GET /bridge/attestations?source=CHAIN&nonce=N`.

Never a signature on a message that is not in a confirmed block: that would be a forgery the
moment a reorg removed it (`BridgeOutbox.prove_forgery`). The attester remembers the hash of
the last block it read on each chain; when that block is no longer on the chain (a reorg
deeper than `confirmations`) it withdraws every signature of a message whose id the outbox no
longer stores, and reads the range again. When an inbox rotates to a new committee epoch, the
messages not yet delivered there are signed again for the new epoch. Each poll also runs the
rotation duty (validator/bridge_rotation.py): the hand-over of every inbox to the committee the
home Validators' stake now chooses, served at `GET /bridge/rotations?chain=ID`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from eth_account.signers.local import LocalAccount
from fastapi import APIRouter, HTTPException
from web3.exceptions import BlockNotFound

from tessera.chain.bridge_inbox import BridgeInbox, sign_attestation
from tessera.chain.bridge_outbox import BridgeOutbox, SentMessage
from tessera.chain.client import Chain
from tessera.chain.network import Network
from tessera.http_limits import QueryInt
from tessera.logs import EventLog
from tessera.protocol.bridge import DEFAULT_CONFIRMATIONS
from tessera.validator.bridge_rotation import RotationSigner

REWIND_BLOCKS = 64   # how far back a deep reorg sends the reader (then every id is re-checked)

SCHEMA = """
CREATE TABLE IF NOT EXISTS attestations (
    source_chain INTEGER NOT NULL,
    nonce INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    destination_chain INTEGER NOT NULL,
    inbox TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    signature TEXT NOT NULL,
    block_number INTEGER NOT NULL,
    message TEXT NOT NULL,
    payload TEXT NOT NULL,
    signed_at REAL NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source_chain, nonce)
);
CREATE TABLE IF NOT EXISTS cursors (
    source_chain INTEGER PRIMARY KEY,
    next_block INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);
"""

COLUMNS = ("source_chain", "nonce", "message_id", "destination_chain", "inbox", "epoch",
           "signature", "block_number", "message", "payload", "signed_at", "delivered")


class AttestationStore:
    """What the attester signed, and how far it has read each source chain."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def cursor(self, source_chain: int) -> tuple[int, str] | None:
        with self._lock:
            row = self._db.execute("SELECT next_block, last_hash FROM cursors WHERE source_chain=?",
                                   (source_chain,)).fetchone()
        return (row[0], row[1]) if row else None

    def set_cursor(self, source_chain: int, next_block: int, last_hash: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cursors VALUES (?,?,?)",
                             (source_chain, next_block, last_hash))

    def save(self, row: dict) -> None:
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO attestations ({', '.join(COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(COLUMNS))})",
                             tuple(row[c] for c in COLUMNS))

    def get(self, source_chain: int, nonce: int) -> dict | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM attestations "
                                   "WHERE source_chain=? AND nonce=?", (source_chain, nonce)).fetchone()
        return dict(zip(COLUMNS, row, strict=True)) if row else None

    def rows(self, where: str, args: tuple) -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM attestations WHERE {where} "
                                    "ORDER BY source_chain, nonce", args).fetchall()
        return [dict(zip(COLUMNS, r, strict=True)) for r in rows]

    def withdraw(self, source_chain: int, nonce: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM attestations WHERE source_chain=? AND nonce=?",
                             (source_chain, nonce))

    def mark_delivered(self, source_chain: int, nonce: int) -> None:
        with self._lock:
            self._db.execute("UPDATE attestations SET delivered=1 WHERE source_chain=? AND nonce=?",
                             (source_chain, nonce))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM attestations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _message_json(sent: SentMessage) -> str:
    m = sent.message
    return json.dumps({"version": m.version, "source_chain": m.source_chain,
                       "source_outbox": m.source_outbox, "sender": m.sender, "nonce": m.nonce,
                       "destination_chain": m.destination_chain, "recipient": m.recipient,
                       "kind": m.kind, "amount": str(m.amount),
                       "payload_hash": "0x" + m.payload_hash.hex()})


class BridgeAttester:
    """Signs confirmed messages of every chain of `network` as `account`."""

    def __init__(self, account: LocalAccount, network: Network, state_dir: Path,
                 log: EventLog | None = None, confirmations: int = DEFAULT_CONFIRMATIONS):
        if not network.peers:
            raise ValueError(f"network {network.name!r} names no peer chain: nothing to attest")
        self.account = account
        self.network = network
        self.confirmations = confirmations
        self.log = log or EventLog("bridge-attester")
        self.store = AttestationStore(Path(state_dir) / "bridge.db")
        self.chains = {n.chain_id: Chain(n) for n in network.chains()}
        self.outboxes = {cid: BridgeOutbox(c) for cid, c in self.chains.items()}
        self.inboxes = {cid: BridgeInbox(c) for cid, c in self.chains.items()}
        self.epochs: dict[int, int] = {}
        self.read_to: dict[int, int] = {}   # source chain -> last confirmed block read
        self.rotation = RotationSigner(account, self.chains[network.chain_id], self.inboxes,
                                       self.log)

    @property
    def address(self) -> str:
        return self.account.address

    # -- the loop ------------------------------------------------------------------------
    def poll_once(self) -> None:
        for destination, inbox in self.inboxes.items():
            epoch = inbox.epoch()
            if self.epochs.get(destination) != epoch:
                self.epochs[destination] = epoch
                self._resign(destination, epoch)
        for source in self.chains:
            self._scan(source)
        self.rotation.poll_once()

    def _scan(self, source: int) -> None:
        chain, outbox = self.chains[source], self.outboxes[source]
        confirmed = chain.block_number() - self.confirmations
        if confirmed < 0:
            return
        cursor = self.store.cursor(source)
        start = chain.network.deploy_block if cursor is None else cursor[0]
        if cursor is not None and start > 0 and self._block_hash(source, start - 1) != cursor[1]:
            start = self._rewind(source, start, confirmed)
        if start > confirmed:
            return
        top = self._block_hash(source, confirmed)
        for sent in outbox.messages(start, confirmed):
            self._attest(sent, outbox, top)
        if self._block_hash(source, confirmed) != top:   # the range moved while it was read
            self.log("bridge-reorg-during-read", "warning", source=source, block=confirmed)
            return
        self.store.set_cursor(source, confirmed + 1, top)
        self.read_to[source] = confirmed

    def _block_hash(self, source: int, number: int) -> str | None:
        """The hash of block `number` on chain `source` now (None past the head)."""
        chain = self.chains[source]
        try:
            block = chain.rpc(lambda: chain.w3.eth.get_block(number), what="get block")
        except BlockNotFound:
            return None
        return "0x" + bytes(block["hash"]).hex()

    def _attest(self, sent: SentMessage, outbox: BridgeOutbox, confirmed: str | None) -> None:
        """Sign `sent` if the outbox stores its id at block `confirmed` (a hash: the state of
        exactly the block the range was read up to)."""
        m = sent.message
        if m.destination_chain not in self.inboxes or m.destination_chain == m.source_chain:
            self.log("bridge-unknown-destination", "warning", source=m.source_chain,
                     nonce=m.nonce, destination=m.destination_chain)
            return
        if confirmed is None or outbox.sent(m.nonce, block=confirmed) != m.id:   # state = log
            self.log("bridge-not-stored", "warning", source=m.source_chain, nonce=m.nonce,
                     message_id="0x" + m.id.hex())
            return
        existing = self.store.get(m.source_chain, m.nonce)
        if existing and existing["message_id"] == "0x" + m.id.hex():
            return
        destination = m.destination_chain
        epoch = self.epochs.get(destination)
        if epoch is None:
            epoch = self.epochs[destination] = self.inboxes[destination].epoch()
        inbox = self.inboxes[destination].address
        signature = sign_attestation(self.account, destination, inbox, m.id, epoch)
        self.store.save({"source_chain": m.source_chain, "nonce": m.nonce,
                         "message_id": "0x" + m.id.hex(), "destination_chain": destination,
                         "inbox": inbox, "epoch": epoch, "signature": "0x" + signature.hex(),
                         "block_number": sent.block_number, "message": _message_json(sent),
                         "payload": "0x" + sent.payload.hex(), "signed_at": time.time(),
                         "delivered": 0})
        self.log("bridge-attested", source=m.source_chain, nonce=m.nonce, destination=destination,
                 epoch=epoch, message_id="0x" + m.id.hex(), block=sent.block_number)

    def _rewind(self, source: int, start: int, confirmed: int) -> int:
        """The last block read is gone: a reorg deeper than `confirmations`. Withdraw every
        signature whose message the outbox no longer stores, and read again from further back."""
        outbox = self.outboxes[source]
        back = max(self.chains[source].network.deploy_block, start - REWIND_BLOCKS)
        withdrawn = 0
        for row in self.store.rows("source_chain=? AND block_number>=?", (source, back)):
            at = max(confirmed, 0)
            if outbox.sent(row["nonce"], block=at) != bytes.fromhex(row["message_id"][2:]):
                self.store.withdraw(source, row["nonce"])
                withdrawn += 1
        self.log("bridge-reorg", "error", source=source, rewound_to=back, withdrawn=withdrawn)
        return back

    def _resign(self, destination: int, epoch: int) -> None:
        """The inbox's committee epoch changed: sign what it has not yet delivered again."""
        inbox = self.inboxes[destination]
        for row in self.store.rows("destination_chain=? AND epoch<>? AND delivered=0",
                                   (destination, epoch)):
            message_id = bytes.fromhex(row["message_id"][2:])
            if inbox.delivered(message_id):
                self.store.mark_delivered(row["source_chain"], row["nonce"])
                continue
            row["signature"] = "0x" + sign_attestation(self.account, destination, inbox.address,
                                                       message_id, epoch).hex()
            row["epoch"], row["signed_at"] = epoch, time.time()
            self.store.save(row)
            self.log("bridge-resigned", source=row["source_chain"], nonce=row["nonce"],
                     destination=destination, epoch=epoch)

    # -- reads for the HTTP API ------------------------------------------------------------
    def attestation(self, source_chain: int, nonce: int) -> dict | None:
        row = self.store.get(source_chain, nonce)
        if row is None:
            return None
        return {"source_chain": row["source_chain"], "nonce": row["nonce"],
                "message_id": row["message_id"], "destination_chain": row["destination_chain"],
                "inbox": row["inbox"], "epoch": row["epoch"], "signer": self.address,
                "signature": row["signature"], "block_number": row["block_number"],
                "message": json.loads(row["message"]), "payload": row["payload"]}

    def status(self) -> dict:
        return {"signer": self.address, "confirmations": self.confirmations,
                "attested": self.store.count(),
                "read_to": {str(k): v for k, v in dict(self.read_to).items()},
                "epochs": {str(k): v for k, v in dict(self.epochs).items()}}

    def close(self) -> None:
        self.store.close()


def attestation_routes(attester: BridgeAttester) -> APIRouter:
    """GET /bridge/attestations?source=CHAIN&nonce=N (404 until attested),
    /bridge/rotations?chain=ID (404 while no rotation is due) and /bridge/status."""
    router = APIRouter()

    @router.get("/bridge/rotations")
    def rotations(chain: QueryInt) -> dict:
        if chain not in attester.chains:
            known = ", ".join(str(c) for c in attester.chains)
            raise HTTPException(404, f"chain {chain} is not a chain of this network ({known})")
        doc = attester.rotation.rotation(chain)
        if doc is None:
            raise HTTPException(404, f"no rotation of chain {chain}'s inbox is due (its "
                                "committee is the one the home validators' stake chooses)")
        return doc

    @router.get("/bridge/attestations")
    def attestations(source: QueryInt, nonce: QueryInt) -> dict:
        if source not in attester.chains:
            known = ", ".join(str(c) for c in attester.chains)
            raise HTTPException(404, f"chain {source} is not a chain of this network ({known})")
        doc = attester.attestation(source, nonce)
        if doc is None:
            raise HTTPException(404, f"message {nonce} of chain {source} is not attested "
                                "(not sent, or not yet confirmed)")
        return doc

    @router.get("/bridge/status")
    def status() -> dict:
        return attester.status()

    return router
