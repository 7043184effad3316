"""Uptime end to end: a provider process with no validator to receipt its beats heartbeats on
chain every epoch (the fallback, provider/heartbeats.py), is stopped for a few epochs, comes
back, and once the gap is final (report_delay + 1 + answer_epochs epochs later) the explorer's
figures (indexer and audit alike) show exactly the gap. With validators: test_liveness.py."""

from __future__ import annotations

import httpx
import pytest
from tests.support.processes import ProviderProcess, wait_until
from web3 import Web3

from tessera.chain.client import Chain
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.indexer import Indexer, database_figures
from tessera.protocol.figures import epoch_at

EPOCH = 30   # seconds; time is moved with evm_increaseTime, so the test does not wait for it
STOPPED_EPOCHS = 3
SETTLE = 3   # an epoch is final this many epochs after it ends (devnet liveness rules)


@pytest.fixture
def short_epoch_devnet(tmp_path, private_devnet):
    with private_devnet(tmp_path, epoch_length=EPOCH) as (devnet, network):
        yield devnet, network


def next_epoch(w3: Web3) -> None:
    w3.provider.make_request("evm_increaseTime", [EPOCH])
    w3.provider.make_request("evm_mine", [])


def test_provider_uptime_is_recomputable(short_epoch_devnet, tmp_path):
    devnet, network = short_epoch_devnet
    chain = Chain(network)
    uptime, w3 = chain.uptime, chain.w3
    assert uptime.functions.epoch_length().call() == EPOCH
    node = ProviderProcess(tmp_path, devnet.network_file, account=3, price="1.00", name="p-up")

    def current() -> int:
        return uptime.functions.current_epoch().call()

    def beat_now() -> bool:
        return uptime.functions.beats(node.address, current()).call()

    node.start()
    try:
        for _ in range(3):
            wait_until(beat_now, timeout=60, what="a heartbeat in the current epoch")
            next_epoch(w3)
        wait_until(beat_now, timeout=60, what="a heartbeat in the current epoch")
        metrics = httpx.get(f"{node.url}/metrics", timeout=5).text
        assert 'tessera_provider_heartbeats_total{outcome="sent"}' in metrics
        node.stop()
        stopped_from = current() + 1
        for _ in range(STOPPED_EPOCHS + 1):  # down for STOPPED_EPOCHS whole epochs, back in the next
            next_epoch(w3)
        assert not beat_now()
        resumed = current()
        node.start()
        wait_until(beat_now, timeout=60, what="a heartbeat after the restart")
        next_epoch(w3)
        wait_until(beat_now, timeout=60, what="a heartbeat in the epoch after the restart")
    finally:
        node.stop()
    for _ in range(SETTLE):   # the gap becomes final (the epochs after the stop are pending)
        next_epoch(w3)

    # What the contract itself says, epoch by epoch: owed are the final epochs and those
    # already up by a heartbeat (an epoch not final and without one is pending).
    genesis = uptime.functions.genesis().call()
    registered = chain.registry.functions.providers(node.address).call()[9]  # registered_at
    first, now = epoch_at(registered, genesis, EPOCH), current()
    beaten = [e for e in range(first, now + 1) if uptime.functions.beats(node.address, e).call()]
    owed = [e for e in range(first, now + 1)
            if e in beaten or uptime.functions.is_final(e).call()]
    missed = [e for e in owed if e not in beaten]
    up_anyway = {e: (uptime.functions.is_final(e).call(), uptime.functions.beats(node.address, e).call())
                 for e in missed if uptime.functions.is_up(node.address, e).call()}
    assert not up_anyway, (f"final epochs without a heartbeat counted up: {up_anyway} "
                           f"(is_final, beats); first {first}, now {now}, stopped from "
                           f"{stopped_from}, resumed {resumed}, beaten {beaten}")
    # Stopped for STOPPED_EPOCHS warped epochs; wall-clock time can add one more.
    assert STOPPED_EPOCHS <= len(missed) <= STOPPED_EPOCHS + 1
    assert all(stopped_from - 1 <= e < resumed for e in missed)

    # The explorer: index everything (no confirmations needed on a devnet), then audit.
    engine = db.make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    Indexer(chain, engine, confirmations=0).sync()
    figures, cursor = database_figures(engine)
    assert epoch_at(cursor.last_timestamp, genesis, EPOCH) == now
    epochs = figures[("uptime.by_provider.epochs", node.address)].value
    beats = figures[("uptime.by_provider.heartbeats", node.address)]
    bps = figures[("uptime.by_provider.bps", node.address)].value
    assert epochs == len(owed) and beats.value == len(beaten)
    assert epochs - beats.value == len(missed)
    assert bps == len(beaten) * 10_000 // epochs
    logs = chain.events("Uptime", "Heartbeat", network.deploy_block,
                        argument_filters={"provider": node.address})
    assert sorted("0x" + log["transactionHash"].hex().removeprefix("0x") for log in logs) == \
        list(beats.txs)
    report = audit(chain, engine)
    assert report.agrees, report.problems

    # Gas per heartbeat, from the receipts (docs/uptime.md).
    gas = [w3.eth.get_transaction_receipt(log["transactionHash"])["gasUsed"] for log in logs]
    print(f"heartbeat gasUsed per tx: {gas}")
    assert max(gas) <= 60_000 and max(gas[1:]) <= 45_000
