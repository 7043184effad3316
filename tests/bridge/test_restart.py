"""The relayer killed mid-way and restarted: every message is delivered, each exactly once.

Killed in-process at exact points (after collecting a quorum, before sending the delivery;
after the delivery, before its state file is written), and as a real `tessera bridge relay`
process killed with SIGKILL as soon as it has delivered something."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from tests.bridge.conftest import HOME, PEER, SENDER, TUSD
from tests.support.processes import wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so nothing catches it)."""


def deliveries(bridge, chain_id: int) -> dict[bytes, int]:
    """How many MessageDelivered each message id has on `chain_id`'s inbox."""
    chain = Chain(bridge.net(chain_id))
    counts: dict[bytes, int] = {}
    for log in chain.events("BridgeInbox", "MessageDelivered", 0):
        key = bytes(log["args"]["message_id"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def send_three(bridge) -> list[bytes]:
    ids = [bridge.send(PEER, SENDER, (i + 1) * TUSD) for i in range(3)]
    bridge.mine(PEER)
    bridge.attest()
    return ids


@pytest.mark.parametrize("when", ["before-deliver", "after-deliver"])
def test_relayer_killed_mid_way_delivers_each_message_once(bridge, when):
    sender = devnet_account(SENDER).address
    home_before = bridge.tusd(HOME, sender)
    ids = send_three(bridge)
    first = bridge.relayer()
    inbox = first.inboxes[HOME]
    real_deliver = inbox.deliver
    calls = []

    def dying_deliver(message, payload, signatures):
        calls.append(message.nonce)
        if len(calls) == 2:           # the first message went through; die on the second
            if when == "after-deliver":
                real_deliver(message, payload, signatures)
            raise Killed
        return real_deliver(message, payload, signatures)

    inbox.deliver = dying_deliver
    with pytest.raises(Killed):
        first.poll_once()
    on_disk = json.loads(first.state_file.read_text())
    assert sorted(on_disk["open"]) == [f"{PEER}:1", f"{PEER}:2"]   # nonce 1 died in flight
    assert bridge.inbox(HOME).delivered(ids[1]) == (when == "after-deliver")

    second = bridge.relayer()            # same state file: a restart
    bridge.settle(second)
    assert second.state["open"] == {}
    assert deliveries(bridge, HOME) == {i: 1 for i in ids}
    assert bridge.tusd(HOME, sender) == home_before + 6 * TUSD


def test_relayer_process_killed_and_restarted(bridge, tmp_path):
    sender = devnet_account(SENDER).address
    home_before = bridge.tusd(HOME, sender)
    ids = send_three(bridge)
    state = tmp_path / "relay-state.json"
    cmd = [sys.executable, "-m", "tessera.cli", "bridge", "relay", "--account", "devnet:3",
           "--network", str(bridge.env.devnet.network_file), "--state", str(state),
           "--interval", "0.1"]
    env = {**os.environ, "TESSERA_HOME": str(tmp_path)}
    log = open(tmp_path / "relay.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        home = bridge.inbox(HOME)
        wait_until(lambda: proc.poll() is not None or any(home.delivered(i) for i in ids), 60,
                   "the relayer's first delivery", interval=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before_kill = sum(home.delivered(i) for i in ids)
        assert done_before_kill >= 1, (tmp_path / "relay.log").read_text()[-2000:]

        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: all(home.delivered(i) for i in ids), 60, "every delivery")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert deliveries(bridge, HOME) == {i: 1 for i in ids}
    assert bridge.tusd(HOME, sender) == home_before + 6 * TUSD
