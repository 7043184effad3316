"""The tenant's reliability index on a real anvil: the indexed bid scores equal a full recompute,
a second rental reads only the new blocks, and a corrupt file, another chain or a reorged block
make it rebuild from the deploy block."""

from __future__ import annotations

import json
import time

import pytest
from rich.console import Console

from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.explorer.simulate import TSTK, Workload
from tessera.protocol.figures import compute_figures
from tessera.tenant.bidding import bid_reliability
from tessera.tenant.reliability_index import CONTRACTS, ReliabilityIndex, index_path

SCORES = ("uptime.by_provider.", "reliability.by_provider.")


@pytest.fixture(scope="module")
def market_run(tmp_path_factory, private_devnet):
    """The explorer tests' market: ~40 leases over six providers (seeded), a slash and an unbond."""
    home = tmp_path_factory.mktemp("bid-index")
    with private_devnet(home) as (devnet, network):
        work = Workload(network, seed=7)
        work.run(leases=40, orders_per_round=8)
        provider = next(iter(work.providers.values()))
        work.send(work.deployer, work.registry, "slash", provider.address, 30 * TSTK, work.deployer)
        work.mine(120)
        yield home, network, work


def full(chain: Chain) -> tuple[dict, float, int]:
    """The scores recomputed from every log since the deploy block (the old way), its seconds and
    how many events it read."""
    t0 = time.perf_counter()
    reader = EventReader(chain, contracts=CONTRACTS)
    head = reader.head()
    events = reader.events(chain.network.deploy_block, head)
    figs = compute_figures(events, reader.block(head)[1])
    return ({k: f.value for k, f in figs.items() if k[0].startswith(SCORES)},
            time.perf_counter() - t0, len(events))


def test_index_equals_a_full_recompute_and_reads_only_new_blocks(market_run, tmp_path):
    _, network, work = market_run
    chain = Chain(network)
    index = ReliabilityIndex(chain, home=tmp_path, confirmations=3)
    first = index.values()
    expected, full_s, total = full(chain)
    assert first == expected and len(first) >= 10 * len(work.providers)
    assert index.last.rebuilt == "new" and index.last.events_read == total
    stored = json.loads(index_path(chain, tmp_path).read_text())
    assert stored["block"] == chain.block_number() - 3

    work.round(4, 600)       # a few more rentals
    work.mine()
    again = ReliabilityIndex(chain, home=tmp_path, confirmations=3)   # as a new process would
    t0 = time.perf_counter()
    second = again.values()
    second_s = time.perf_counter() - t0
    expected, full_s, total = full(chain)
    assert second == expected
    new_events = len(EventReader(chain, contracts=CONTRACTS).events(stored["block"] + 1,
                                                                     chain.block_number()))
    assert again.last.rebuilt is None and again.last.from_block == stored["block"] + 1
    assert again.last.events_read == new_events < total
    print(f"\nbid scores, explorer test market ({len(work.leases)} leases, {total} events of "
          f"{', '.join(CONTRACTS)}): full recompute {full_s * 1000:.0f} ms, indexed second call "
          f"{second_s * 1000:.0f} ms reading {new_events} new events")

    # Nothing new: the third call reads only the unconfirmed tail.
    third = ReliabilityIndex(chain, home=tmp_path, confirmations=3)
    assert third.values() == expected and third.last.from_block > stored["block"] + 1


@pytest.mark.parametrize("damage, words", [
    (lambda raw: "{not json", "unreadable"),
    (lambda raw: json.dumps({**json.loads(raw), "chain_id": 1}), "made for chain_id 1"),
    (lambda raw: json.dumps({**json.loads(raw), "block_hash": "0x" + "00" * 32}), "a reorg"),
    (lambda raw: json.dumps({**json.loads(raw), "book": {"version": 1}}), "unreadable"),
])
def test_a_damaged_or_foreign_index_is_rebuilt_and_said_once(market_run, tmp_path, damage, words):
    _, network, _ = market_run
    chain = Chain(network)
    ReliabilityIndex(chain, home=tmp_path, confirmations=2).values()
    path = index_path(chain, tmp_path)
    path.write_text(damage(path.read_text()))
    out = Console(record=True, width=300)
    index = ReliabilityIndex(chain, home=tmp_path, confirmations=2)
    assert index.values(out) == full(chain)[0]
    assert words in index.last.rebuilt
    said = " ".join(out.export_text().split())
    assert said.count("rebuilding it from the deploy block") == 1 and words in said
    again = ReliabilityIndex(chain, home=tmp_path, confirmations=2)
    again.values(out)
    assert again.last.rebuilt is None and "rebuilding" not in out.export_text()


def test_a_real_reorg_below_the_stored_block_rebuilds(market_run, tmp_path):
    _, network, work = market_run
    chain = Chain(network)
    snap = work.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        work.round(2, 600)
        for _ in range(4):
            work.mine()
        index = ReliabilityIndex(chain, home=tmp_path, confirmations=1)
        index.values()
    finally:
        work.w3.provider.make_request("evm_revert", [snap])
    for _ in range(8):            # another history at the same heights
        work.mine()
    index = ReliabilityIndex(chain, home=tmp_path, confirmations=1)
    assert index.values() == full(chain)[0]
    assert "a reorg" in index.last.rebuilt


def test_bid_reliability_uses_the_index_under_tessera_home(market_run, tmp_path, monkeypatch):
    _, network, _ = market_run
    chain = Chain(network)
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    scores = bid_reliability(chain, Console(quiet=True))
    assert index_path(chain).exists() and str(index_path(chain)).startswith(str(tmp_path))
    expected = full(chain)[0]
    for (name, address), value in expected.items():
        part = name.split(".")[-1]
        if name.startswith("reliability.") or part in ("up", "epochs"):
            assert scores[address.lower()][part] == value


def close_all(work: Workload, chain: Chain) -> int:
    """The tenant closes every lease still open on chain (the workload's own record can be off
    after another test's evm_revert); how many it closed."""
    events = EventReader(chain, contracts=("Market",)).events(chain.network.deploy_block,
                                                               chain.block_number())
    closed = {e.args["lease_id"] for e in events if e.event == "LeaseClosed"}
    open_ = [e.args for e in events if e.event == "LeaseCreated" and e.args["lease_id"] not in closed]
    for lease in open_:
        work.send(lease["tenant"], work.market, "close_lease", lease["lease_id"])
        if lease["lease_id"] in work.leases:
            work.leases[lease["lease_id"]].closed = True
    work.mine()
    return len(open_)


def test_the_index_file_does_not_grow_with_closed_leases(market_run, tmp_path):
    """The stored state keeps counts per provider and only the leases a downtime claim can still
    name: after twice as many closed leases (each batch closed and past the Market's claim
    window) the file is the same size, give or take a few digits."""
    _, network, work = market_run
    chain = Chain(network)
    snap = work.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        index = ReliabilityIndex(chain, home=tmp_path, confirmations=0)
        window = index.claim_window()
        sizes, closed, leases = [], [], []
        for _ in range(2):        # N leases, then 2N, all closed
            target = 2 * len(work.leases) if sizes else len(work.leases) + 20
            for _ in range(40):
                if len(work.leases) >= target:
                    break
                work.round(6, 600)
            closed.append(close_all(work, chain))
            work.mine(window + 1)
            work.mine()
            assert index.values() == full(chain)[0]
            stored = json.loads(index_path(chain, tmp_path).read_text())
            assert stored["book"]["evidence"]["leases"] == []       # all closed, window over
            sizes.append(index_path(chain, tmp_path).stat().st_size)
            leases.append(len(work.leases))
        assert sum(closed) > 0 and leases[1] >= 1.9 * leases[0]
        assert abs(sizes[1] - sizes[0]) <= 200 and sizes[1] < 400 * len(work.providers) + 1_000, sizes
        print(f"\nindex file: {sizes[0]} bytes after {leases[0]} leases, {sizes[1]} bytes after "
              f"{leases[1]} ({len(work.providers)} providers)")
    finally:
        work.w3.provider.make_request("evm_revert", [snap])
