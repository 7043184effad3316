"""The validator's one cache of providers' registry indices (validator/registry_indices.py),
shared by the liveness duty, its watch and its answers, against a registry that counts the
reads made of it (what ProviderRegistry.vy answers: `index_of` is 0 for an unregistered
address). The cache in a running duty and watch: tests/validator/test_liveness.py and
test_liveness_watch.py."""

from __future__ import annotations

import threading
from collections import Counter

from web3 import Web3

from tessera.validator.registry_indices import TAIL_READS, RegistryIndices


def address(n: int) -> str:
    return Web3.to_checksum_address(f"0x{n:040x}")


class CountingRegistry:
    """ProviderRegistry's four views over an append-only list, each read counted."""

    def __init__(self, n: int = 0):
        self.providers = [address(i + 1) for i in range(n)]
        self.reads: Counter = Counter()

    def register(self, count: int = 1) -> None:
        n = len(self.providers)
        self.providers += [address(n + i + 1) for i in range(count)]

    def provider_count(self) -> int:
        self.reads["provider_count"] += 1
        return len(self.providers)

    def provider_at(self, index: int) -> str:
        self.reads["provider_at"] += 1
        assert index < len(self.providers), "registry: index out of range"
        return self.providers[index]

    def is_registered(self, provider: str) -> bool:
        self.reads["is_registered"] += 1
        return provider in self.providers

    def index_of(self, provider: str) -> int:
        self.reads["index_of"] += 1
        return self.providers.index(provider) if provider in self.providers else 0


def test_an_unregistered_address_is_none_never_the_contracts_zero():
    """Adversary: a beat signed by a fresh key, hoping to be receipted as index 0 (the
    contract's index_of for an address it does not know, some other provider's bit). The
    cache answers None (the duty refuses it 403), in both of its paths: the whole registry
    known (no index_of read at all), and a long tail still unread (is_registered asked
    first). A flood of such beats costs one provider_count read each, no tail read again."""
    registry = CountingRegistry(3)
    indices = RegistryIndices(registry)
    assert indices.index_of(address(99)) is None
    assert registry.reads == {"provider_count": 1, "provider_at": 3}
    for _ in range(5):
        assert indices.index_of(address(99)) is None
    assert registry.reads == {"provider_count": 6, "provider_at": 3}
    long = CountingRegistry(TAIL_READS + 10)
    assert RegistryIndices(long).index_of(address(10**6)) is None
    assert long.reads["is_registered"] == 1 and long.reads["index_of"] == 0


def test_each_index_is_read_once_and_only_the_new_tail_after_registrations():
    """The registry only appends: what was read stays, and after new registrations a lookup
    reads only the indices past the last count, whichever direction (provider -> index,
    index -> provider) and whichever user asked first."""
    registry = CountingRegistry(5)
    indices = RegistryIndices(registry)
    assert indices.index_of(address(3)) == 2
    assert [indices.provider_at(i) for i in range(5)] == [address(i + 1) for i in range(5)]
    assert registry.reads["provider_at"] == 5
    registry.register(2)
    assert indices.provider_at(6) == address(7) and indices.index_of(address(6)) == 5
    assert registry.reads["provider_at"] == 7                 # indices 5 and 6, once each
    assert indices.provider_at(7) is None                     # past the registry
    assert indices.index_of(address(7)) == 6 and registry.reads["provider_at"] == 7


def test_a_long_tail_is_read_a_bounded_piece_a_lookup():
    """A validator starting on a large registry: a beat's lookup reads at most TAIL_READS
    indices (the HTTP request waits on it) and asks the contract directly past that; the
    following lookups read the rest of the tail, skipping what is known already. Adversary:
    registering many providers to stall the validator's beat route costs a stake each and
    stalls each lookup by TAIL_READS reads at most."""
    n = 2 * TAIL_READS + 10
    registry = CountingRegistry(n)
    indices = RegistryIndices(registry)
    last = address(n)
    assert indices.index_of(last) == n - 1
    assert registry.reads["provider_at"] == TAIL_READS
    assert (registry.reads["is_registered"], registry.reads["index_of"]) == (1, 1)
    assert indices.index_of(address(TAIL_READS + 5)) == TAIL_READS + 4
    assert indices.index_of(address(n - 1)) == n - 2          # the third piece: found there
    assert registry.reads["provider_at"] == n - 1             # the last one never read again
    assert indices.provider_at(n - 1) == last and registry.reads["index_of"] == 1


def test_threads_sharing_it_agree_and_read_no_index_twice():
    """The HTTP beat route, the liveness loop and the watch loop share one cache: concurrent
    lookups give the same answers and read the tail once."""
    registry = CountingRegistry(300)
    indices = RegistryIndices(registry)
    found: list[list] = []

    def look() -> None:
        found.append([indices.index_of(address(i)) for i in range(1, 301, 7)])
    threads = [threading.Thread(target=look) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(f == [i - 1 for i in range(1, 301, 7)] for f in found)
    assert registry.reads["provider_at"] + registry.reads["index_of"] <= 300 + 8


def test_a_chain_younger_than_the_confirmations_has_no_provider_yet(tmp_path, private_devnet):
    """Read `confirmations` below the head of a devnet younger than that, the registry has no
    code yet: no provider is registered there (not an error that would stop the validator);
    a registration reads once it is that deep, not before."""
    from tessera.chain.accounts import devnet_account
    from tessera.chain.client import Chain
    from tessera.chain.registry import ProviderRegistry

    with private_devnet(tmp_path) as (_, network):
        chain = Chain(network)
        provider = devnet_account(2)
        ProviderRegistry(Chain(network, provider)).register(
            100 * 10**18, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        young = RegistryIndices(ProviderRegistry(chain), 10**6, chain.block_number)
        assert young.index_of(provider.address) is None and young.provider_at(0) is None
        deep = RegistryIndices(ProviderRegistry(chain), 2, chain.block_number)
        assert deep.index_of(provider.address) is None          # registered 0 blocks deep
        for _ in range(2):
            chain.w3.provider.make_request("evm_mine", [])
        index = ProviderRegistry(chain).index_of(provider.address)
        assert deep.index_of(provider.address) == index and deep.provider_at(index) == \
            provider.address
