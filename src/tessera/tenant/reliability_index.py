"""The tenant's reliability index: bid scores from the logs since the last rental, not since deployment.

One small file per network, chain id and Market address under $TESSERA_HOME/reliability-index/
holds a `ReliabilityBook` state (protocol/reliability_book.py: counts per provider and the leases
a downtime claim can still name, no tx hashes; its size is O(providers + open leases + leases
closed within the Market's claim window), not O(history)) with the block it is folded up to and
that block's hash. Each rental reads only the logs after that block (of the contracts the scores need),
folds the blocks at least `confirmations` deep into the stored state, and the newer ones into
the book in memory only, after saving. If the stored hash is no longer the chain's (a reorg),
or the file is unreadable, of another chain or of another version, the index is rebuilt from the
deploy block and the tenant is told so once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.chain.market import Market
from tessera.errors import ChainError
from tessera.protocol.reliability_book import ReliabilityBook, Values
from tessera.tenant.stored_index import index_file, read_index, write_index

# What the scores and the measured uptime read (protocol/reliability.py, protocol/uptime_book.py):
# registrations (their order: the registry index a liveness report names), slashes and jailings;
# leases, results, closes and downtime claims; the uptime clock, liveness rules, heartbeats,
# validators' liveness reports, receipt claims and inclusion challenges.
CONTRACTS = ("ProviderRegistry", "Market", "Uptime")
INDEX_VERSION = 3     # 3: uptime from reports and claims too (2: a compact ReliabilityBook)
CONFIRMATIONS = 6


@dataclass
class Refresh:
    """What the last refresh read: for tests and for saying why it took what it took."""

    from_block: int
    to_block: int
    stored_block: int
    events_read: int
    rebuilt: str | None        # why it started from the deploy block ("new": no index yet), or None


def index_path(chain: Chain, home: Path | None = None) -> Path:
    return index_file(chain, "reliability-index", "Market", home)


class ReliabilityIndex:
    def __init__(self, chain: Chain, home: Path | None = None, confirmations: int = CONFIRMATIONS,
                 chunk: int = 5_000):
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        self.chain = chain
        self.path = index_path(chain, home)
        self.confirmations = confirmations
        self.reader = EventReader(chain, chunk=chunk, contracts=CONTRACTS)
        self.last: Refresh | None = None
        self._claim_window: int | None = None

    def claim_window(self) -> int:
        """The Market's claim window (immutable): how long after a close a downtime claim can
        still turn a lease's count to failed, so how long the book keeps a closed lease."""
        if self._claim_window is None:
            self._claim_window = Market(self.chain).claim_window()
        return self._claim_window

    def _identity(self) -> dict:
        network = self.chain.network
        return {"version": INDEX_VERSION, "chain_id": network.chain_id,
                "market": network.address("Market").lower(), "contracts": list(CONTRACTS),
                "deploy_block": network.deploy_block, "claim_window": self.claim_window()}

    def _load(self) -> tuple[ReliabilityBook | None, int, str | None, str | None]:
        """(book, block, hash, why not) of the stored index; book None when it must be rebuilt."""
        return read_index(self.path, self._identity(), self.reader, "book",
                          ReliabilityBook.from_json)

    def _save(self, book: ReliabilityBook, block: int, block_hash: str) -> None:
        write_index(self.path, self._identity(), block, block_hash, "book", book.to_json())

    def values(self, console: Console | None = None) -> Values:
        """{(figure name, provider): value} of `uptime.by_provider.*` and
        `reliability.by_provider.*` as of the chain's head block, equal to the values of
        `compute_figures` over every log since the deploy block at that head."""
        book, stored, stored_hash, why = self._load()
        deploy = self.chain.network.deploy_block
        if book is None:
            if why and console is not None:
                console.print(f"reliability index {self.path}: {why}; rebuilding it from the deploy "
                              f"block {deploy}")
            book, stored = ReliabilityBook(self.claim_window()), deploy - 1
        head = self.reader.head()
        head_block = self.reader.block(head)
        if head_block is None:
            raise ChainError(f"block {head} vanished while reading it")
        safe = head - self.confirmations
        start, read = stored + 1, 0
        if safe >= start:
            safe_block = self.reader.block(safe)
            if safe_block is None:
                raise ChainError(f"block {safe} vanished while reading it")
            events = self.reader.events(start, safe)
            read += len(events)
            try:
                book.apply(events)
            except ValueError as exc:   # a history the contracts cannot make: say so, never guess
                raise ChainError(f"reliability index: {exc}") from exc
            book.advance(safe_block[1])
            self._save(book, safe, safe_block[0])
            stored = safe
        tail = self.reader.events(stored + 1, head)    # not final yet: this read only, never saved
        read += len(tail)
        try:
            book.apply(tail)
        except ValueError as exc:   # the chain moved under the read: say so, never guess
            raise ChainError(f"reliability index: {exc}") from exc
        self.last = Refresh(start, head, stored, read, why or ("new" if start == deploy else None))
        return book.values(head_block[1])
