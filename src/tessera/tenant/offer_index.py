"""The tenant's offer index: every provider's offer, stake and jail, kept from the registry's
events, so that collecting bids asks only the providers whose offer can match the order
without 3N+1 calls to the registry (issue 15).

Kept as tenant/reliability_index.py keeps the bid scores: one small file per network, chain id
and registry address under $TESSERA_HOME/offer-index/, holding the offers folded up to a block
at least `confirmations` deep and that block's hash. Each refresh reads only the registry's logs
after that block; the newer, unconfirmed ones are folded in memory only. A stored hash that is
no longer the chain's (a reorg), an unreadable file, or one of another chain or version makes
it rebuild from the deploy block. Its size is O(providers), never O(history).

Whether a provider is active follows the registry's rule (ProviderRegistry._is_active:
registered, stake at least `min_stake` and above zero, not jailed at the head block's time) on
the stake and jail its events report (a slash takes active stake first: protocol/money.py's
`slash_split`). The index only chooses whom to ask: a chosen bid is judged again against the
registry itself before it is accepted (tenant/bid_collection.py), and the Market checks it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.chain.registry import ProviderRegistry
from tessera.errors import ChainError
from tessera.protocol.events import EventRecord
from tessera.protocol.matching import ProviderOffer, provider_active
from tessera.protocol.money import slash_split
from tessera.tenant.stored_index import index_file, read_index, write_index

INDEX_VERSION = 1
CONFIRMATIONS = 6
FIELDS = ("gpu_model", "gpu_count", "gpu_memory_mb", "benchmark_score", "endpoint", "price_floor")


@dataclass
class Listing:
    """One provider as the registry's events describe it."""

    gpu_model: str
    gpu_count: int
    gpu_memory_mb: int
    benchmark_score: int
    endpoint: str
    price_floor: int
    stake: int = 0
    jailed_until: int = 0

    def to_json(self) -> list:
        return [*(getattr(self, f) for f in FIELDS), self.stake, self.jailed_until]

    @classmethod
    def from_json(cls, raw: list) -> Listing:
        if not isinstance(raw, list) or len(raw) != len(FIELDS) + 2:
            raise ValueError("a listing is a list of 8 values")
        return cls(*raw)


def apply(listings: dict[str, Listing], events: list[EventRecord]) -> None:
    """Fold ProviderRegistry events (in chain order) into `listings` (address -> Listing)."""
    for e in events:
        a = e.args
        address = a.get("provider")
        if e.contract != "ProviderRegistry" or not isinstance(address, str):
            continue
        if e.event == "ProviderRegistered":
            listings[address] = Listing(*(a[f] for f in FIELDS), stake=a["stake"])
            continue
        listing = listings.get(address)
        if listing is None:
            continue
        if e.event == "OfferUpdated":
            for f in FIELDS:
                setattr(listing, f, a[f])
        elif e.event == "StakeAdded":
            listing.stake = a["total_stake"]
        elif e.event == "UnbondRequested":
            listing.stake -= a["amount"]
        elif e.event == "Slashed":
            listing.stake -= slash_split(a["amount"], listing.stake)[0]
        elif e.event == "Jailed":
            listing.jailed_until = a["until"]


def index_path(chain: Chain, home: Path | None = None) -> Path:
    return index_file(chain, "offer-index", "ProviderRegistry", home)


class OfferIndex:
    def __init__(self, chain: Chain, home: Path | None = None, confirmations: int = CONFIRMATIONS,
                 chunk: int = 5_000):
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        self.chain = chain
        self.path = index_path(chain, home)
        self.confirmations = confirmations
        self.reader = EventReader(chain, chunk=chunk, contracts=("ProviderRegistry",))
        self.rebuilt: str | None = None      # why the last refresh started from the deploy block
        self.events_read = 0                 # by the last refresh
        self._min_stake: int | None = None

    def min_stake(self) -> int:
        """The registry's minimum stake (immutable: read once)."""
        if self._min_stake is None:
            self._min_stake = ProviderRegistry(self.chain).min_stake()
        return self._min_stake

    def _identity(self) -> dict:
        network = self.chain.network
        return {"version": INDEX_VERSION, "chain_id": network.chain_id,
                "registry": network.address("ProviderRegistry").lower(),
                "deploy_block": network.deploy_block}

    def _load(self) -> tuple[dict[str, Listing] | None, int, str | None]:
        """(listings, block, why not) of the stored index; listings None when it must be rebuilt
        ("new" when there is none yet)."""
        listings, block, _, why = read_index(
            self.path, self._identity(), self.reader, "listings",
            lambda raw: {str(a): Listing.from_json(v) for a, v in raw.items()})
        return listings, block, why if listings is not None or why else "new"

    def _save(self, listings: dict[str, Listing], block: int, block_hash: str) -> None:
        write_index(self.path, self._identity(), block, block_hash, "listings",
                    {a: v.to_json() for a, v in listings.items()})

    def offers(self) -> dict[str, ProviderOffer]:
        """{checksummed address: offer} of every registered provider as of the chain's head,
        `active` by the registry's rule at the head block's time."""
        listings, stored, why = self._load()
        if listings is None:
            listings, stored = {}, self.chain.network.deploy_block - 1
        self.rebuilt = why
        head = self.reader.head()
        head_block = self.reader.block(head)
        if head_block is None:
            raise ChainError(f"block {head} vanished while reading it")
        safe, read = head - self.confirmations, 0
        try:
            if safe > stored:
                safe_block = self.reader.block(safe)
                if safe_block is None:
                    raise ChainError(f"block {safe} vanished while reading it")
                events = self.reader.events(stored + 1, safe)
                read += len(events)
                apply(listings, events)
                self._save(listings, safe, safe_block[0])
                stored = safe
            tail = self.reader.events(stored + 1, head)   # not final yet: never saved
            read += len(tail)
            apply(listings, tail)
        except (KeyError, TypeError) as exc:   # an event without the fields the ABI gives it
            raise ChainError(f"offer index: unexpected registry event ({exc})") from exc
        self.events_read = read
        now, minimum = head_block[1], self.min_stake()
        return {address: ProviderOffer(
                    address=address,
                    active=provider_active(v.stake, minimum, v.jailed_until, now),
                    gpu_model=v.gpu_model, gpu_count=v.gpu_count, gpu_memory_mb=v.gpu_memory_mb,
                    benchmark_score=v.benchmark_score, endpoint=v.endpoint,
                    price_floor=v.price_floor)
                for address, v in listings.items()}
