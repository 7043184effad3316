"""Providers' registry indices, both ways, for the validator's liveness duty, its watch and
its answers (validator/liveness.py, liveness_watch.py, liveness_answers.py): one cache,
constructed once by the node and shared.

A provider's registry index is its bit in liveness reports and challenges (registration
order, `ProviderRegistry.provider_at` / `index_of`). The registry only appends (once per
address, never removed), so what is read once stays true and only indices not yet known are
ever read: the tail past the last `provider_count` read, by `provider_at`.

`index_of` answers None for an address that is not registered: the contract's `index_of` says
0 for it, which is some other provider's index (provider/inclusion_answers.py), so the
contract's answer is taken only after `is_registered`. A validator starting on a large
registry reads at most TAIL_READS of the tail in one lookup (a beat's HTTP request waits on
it) and asks the contract about the address directly past that; the rest of the tail is read
by the lookups that follow.

Reorgs: with `confirmations` > 0 every index is read `confirmations` blocks below the head, so
a cached index is one no reorg the node allows for can change (an outside review's finding: a
registration a reorg drops and mines again behind another one would leave the validator
reporting one provider's beat under the other's index, and slashed for it, until it
restarts). A provider registered less than `confirmations` blocks ago reads as unregistered
meanwhile: its beats are refused (403) and it heartbeats on chain for those minutes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from web3 import Web3
from web3.exceptions import BadFunctionCallOutput

from tessera.chain.registry import ProviderRegistry

TAIL_READS = 256   # provider_at reads one lookup makes at most (the rest: the next lookups)


class RegistryIndices:
    """provider <-> registry index, read from the registry once each (module docstring).
    Shared by threads: the HTTP beat route, the liveness loop and the watch loop."""

    def __init__(self, registry: ProviderRegistry, confirmations: int = 0,
                 head: Callable[[], int] | None = None):
        self.registry = registry
        self.confirmations = confirmations
        self.head = head                 # the chain's block number (needed with confirmations)
        self._at: dict[int, str] = {}    # registry index -> provider (checksummed)
        self._of: dict[str, int] = {}    # provider -> registry index
        self._count = 0                  # provider_count, as last read
        self._known_below = 0            # every index below this is in _at
        self._lock = threading.Lock()    # one tail read at a time

    def index_of(self, provider: str) -> int | None:
        """The provider's registry index; None if it is not registered (as of the head)."""
        provider = Web3.to_checksum_address(provider)
        if (index := self._of.get(provider)) is not None:
            return index
        count = self._read("provider_count")
        with self._lock:
            self._count = max(self._count, count)
            self._read_tail()
            if (index := self._of.get(provider)) is not None or self._known_below >= count:
                return index   # every registered provider is known: None means unregistered
        if not self._read("is_registered", provider):   # a long tail left to read
            return None
        index = self._read("index_of", provider)
        self._keep(index, provider)
        return index

    def provider_at(self, index: int) -> str | None:
        """The provider with this registry index; None if no provider has it (yet)."""
        if (provider := self._at.get(index)) is not None:
            return provider
        if index >= self._count:
            count = self._read("provider_count")
            with self._lock:
                self._count = max(self._count, count)
            if index >= count:
                return None
        provider = Web3.to_checksum_address(self._read("provider_at", index))
        self._keep(index, provider)
        return provider

    def _read_tail(self) -> None:
        """Read up to TAIL_READS indices not yet known below the last count (lock held)."""
        reads = 0
        while self._known_below < self._count and reads < TAIL_READS:
            index = self._known_below
            if index not in self._at:
                self._keep(index, Web3.to_checksum_address(self._read("provider_at", index)))
                reads += 1
            self._known_below += 1

    def _read(self, view: str, *args):
        """A registry view at the head, or `confirmations` blocks below it (where a chain
        younger than that has no registry yet: no provider there)."""
        if not self.confirmations:
            return getattr(self.registry, view)(*args)
        block = max(0, self.head() - self.confirmations)
        try:
            return getattr(self.registry, view)(*args, block=block)
        except BadFunctionCallOutput:   # no code at that block: deployed later
            if view in ("provider_count", "is_registered"):
                return 0
            raise

    def _keep(self, index: int, provider: str) -> None:
        self._at[index] = provider
        self._of[provider] = index
