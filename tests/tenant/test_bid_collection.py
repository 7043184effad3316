"""Bid collection with dead, slow and junk providers (issue 15), over real HTTP: a farm of
provider identities each on its own port (tests/tenant/many_providers.py).

- Without a chain: `gather_bids` asks 60 endpoints, a third of them dead, slow or junk, and
  returns every live bid well inside the window, asking no one more than twice.
- On a devnet: `collect_bids` on 36 registered providers (some dead or slow, some whose offer
  cannot match, one jailed, one slashed below the minimum) asks only those that can match,
  judges their bids, and its offer index agrees with the registry on every provider.
"""

from __future__ import annotations

import time

import httpx
import pytest
from eth_account import Account
from tests.tenant.many_providers import Farm, Identity, register

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.protocol.lease import order_deposit
from tessera.protocol.matching import OrderRequirements, ProviderOffer, rank
from tessera.tenant.bid_collection import collect_bids, gather_bids, judge_all, per_provider_s
from tessera.tenant.client import Tenant
from tessera.tenant.offer_index import OfferIndex

MARKET = "0x" + "42" * 20
PRICE = 1_000_000


def identities(kinds: dict[str, int], seed: str) -> list[Identity]:
    out = []
    for kind, count in kinds.items():
        for i in range(count):
            key = "0x" + Account.create(f"{seed}-{kind}-{i}").key.hex().removeprefix("0x")
            out.append(Identity(key, kind, PRICE + len(out)))
    return out


def test_gather_returns_every_live_bid_within_the_window_whatever_the_rest_do():
    kinds = {"live": 36, "notyet": 4, "refused": 6, "blackhole": 4, "slow": 4,
             "junk-500": 1, "junk-text": 1, "junk-huge": 1, "junk-other": 3}
    ids = identities(kinds, "gather")
    farm = Farm(ids, 31337, MARKET, slow_s=30).start_in_thread()
    targets = {i.address: e for i, e in zip(ids, farm.endpoints(), strict=True)}
    window = 6.0
    t0 = time.monotonic()
    got = gather_bids(targets, 7, window)
    took = time.monotonic() - t0
    live = {i.address for i in ids if i.kind in ("live", "notyet")}
    assert set(got.bids) == live
    assert set(got.failures) == set(targets) - live
    # the slow and the silent use up their deadline (2 s) once, and nothing waits for them
    # longer: the collection ends well before the window does
    assert per_provider_s(window) < took < window - 1.5, took
    assert all(n <= 2 for n in farm.asked.values()), farm.asked
    for n, identity in enumerate(ids):
        if identity.kind in ("blackhole", "slow"):
            assert farm.asked.get(n) == 1            # a deadline passed: not asked again
        if identity.kind == "notyet":
            assert farm.asked.get(n) == 2            # "not yet", then the bid
    offers = {i.address: ProviderOffer(i.address, True, "H100", 1, 81_920, 1, targets[i.address],
                                       i.price) for i in ids}
    verdicts = judge_all(31337, MARKET, OrderRequirements(7, "H100", 1, 1, 2 * PRICE),
                         got.bids, offers, int(time.time()))
    assert len(verdicts) == len(live) and all(v.valid for v in verdicts)
    forged = {a: b.model_copy(update={"price_per_gpu_hour": b.price_per_gpu_hour - 1})
              for a, b in list(got.bids.items())[:3]}
    assert not any(v.valid for v in judge_all(31337, MARKET, OrderRequirements(
        7, "H100", 1, 1, 2 * PRICE), forged, offers, int(time.time())))


def test_gather_with_nothing_answering_ends_at_the_window():
    ids = identities({"blackhole": 5}, "silent")
    farm = Farm(ids, 31337, MARKET).start_in_thread()
    t0 = time.monotonic()
    got = gather_bids({i.address: e for i, e in zip(ids, farm.endpoints(), strict=True)}, 1, 0.8)
    assert time.monotonic() - t0 < 1.5 and not got.bids and len(got.failures) == 5


@pytest.fixture(scope="module")
def market(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("bid-collection")
    with private_devnet(home) as (devnet, network):
        ids = identities({"live": 20, "notyet": 2, "refused": 3, "blackhole": 2, "slow": 3},
                         "chain")
        other = identities({"live": 6}, "other-model")     # an offer that cannot match
        chain = Chain(network)
        farm = Farm(ids + other, network.chain_id, network.address("Market"),
                    slow_s=30).start_in_thread()
        endpoints = farm.endpoints()
        work = register(network, ids[:-2], endpoints[:len(ids) - 2], gpu_model="H100",
                        slasher=True)
        register(network, ids[-2:] + other, endpoints[len(ids) - 2:], gpu_model="A100")
        jailed, slashed = ids[0].address, ids[1].address
        work._rpc("evm_setAutomine", [False])
        work.now = chain.block_timestamp()
        work.send(work.deployer, work.registry, "jail", jailed, work.now + 10**6)
        work.send(work.deployer, work.registry, "slash", slashed, 10**18, work.deployer)
        work.mine()
        work._rpc("evm_setAutomine", [True])
        yield network, chain, ids, other, farm


def test_collect_asks_only_matching_active_providers_and_judges_their_bids(market, tmp_path):
    network, chain, ids, other, farm = market
    tenant = Tenant(Chain(network, devnet_account(5)))
    order_id, _ = tenant.market.create_order(b"\x01" * 32, "H100", 1, 1, 3 * PRICE, 600, 2,
                                            order_deposit(3 * PRICE, 1, 2, 600))
    events = []
    index = OfferIndex(chain, home=tmp_path, confirmations=3)
    t0 = time.monotonic()
    verdicts = collect_bids(tenant.market, order_id, 3.0, offer_index=index,
                            emit=lambda e, d: events.append(d))
    took = time.monotonic() - t0
    assert took < 3.0, took
    # H100 offers only (the last two identities and `other` registered A100), active ones only
    # (ids[0] is jailed, ids[1] slashed below the minimum stake)
    matching = [i for i in ids[2:-2]]
    asked = {ids_n for ids_n, n in farm.asked.items() if n}
    everyone = ids + other
    assert {everyone[n].address for n in asked} <= {i.address for i in matching}
    live = {i.address for i in matching if i.kind in ("live", "notyet")}
    assert {v.bid.provider for v in verdicts} == live and all(v.valid for v in verdicts)
    [summary] = events
    assert summary["providers_asked"] == len(matching)
    assert summary["providers_indexed"] == len(everyone)
    assert summary["registry_reads"] == 2          # the two best, judged again on chain
    best = rank(verdicts)[:2]
    assert [v.bid.price_per_gpu_hour for v in best] == sorted(
        i.price for i in matching if i.kind in ("live", "notyet"))[:2]

    # the index says what the registry says, for every provider
    registry = ProviderRegistry(chain)
    offers = OfferIndex(chain, home=tmp_path, confirmations=3).offers()
    assert offers == {i.address: registry.provider_offer(i.address) for i in everyone}
    assert not offers[ids[0].address].active and not offers[ids[1].address].active


def test_collect_survives_an_endpoint_that_is_not_a_url(market, tmp_path):
    network, chain, *_ = market
    got = gather_bids({"0x" + "11" * 20: "not a url", "0x" + "22" * 20: "ftp://127.0.0.1:1"},
                      3, 1.0)
    assert not got.bids and set(got.failures) == {"0x" + "11" * 20, "0x" + "22" * 20}
    with httpx.Client() as client:   # the farm still answers afterwards
        assert client.get(f"http://127.0.0.1:{market[4].control}/stats").status_code == 200
