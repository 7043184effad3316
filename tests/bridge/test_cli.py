"""`tessera devnet up --chains 2`, then the bridge from the command line against it: three
`tessera validator run` processes attest (their bridge duty), `tessera bridge relay` delivers,
`tessera bridge send` moves TUSD and a provider's TSTK and `tessera bridge status` shows it; bad
input gets one readable line and exit code 1. TESSERA_HOME is a temporary folder and the ports are free ones.
The daemons are real processes; one-shot commands run in-process (CliRunner), which spares a
2-core machine a Python start per command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from tests.bridge.conftest import HOME, PEER
from tests.support.processes import QUICK_PROBES, ValidatorProcess, wait_until
from typer.testing import CliRunner

from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.client import Chain
from tessera.chain.devnet import BRIDGE_VALIDATORS, free_port_pair
from tessera.chain.network import load_network
from tessera.daemons import stop

QUIET = {**QUICK_PROBES, "outages": {"report": False}, "hardware": {"enabled": False}}


def tessera(home, *args: str):
    """Run one `tessera` command in-process with TESSERA_HOME=home; (exit code, stdout, stderr)."""
    from tessera.cli import app

    result = CliRunner().invoke(app, list(args), env={"TESSERA_HOME": str(home)})
    return result.exit_code, result.stdout, result.stderr


def start_all(daemons) -> None:
    """Start every validator process, then wait for each: they come up side by side."""
    for daemon in daemons:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "validator", "run", "--config", str(daemon.config)],
            stdout=open(daemon.log, "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "TESSERA_HOME": str(daemon.home)})
    for daemon in daemons:
        wait_until(lambda d=daemon: d.health() is not None, 120, f"{daemon.name} healthy")


def test_two_chain_devnet_from_the_command_line(tmp_path):
    home = tmp_path / "home"
    port = free_port_pair()
    code, out, err = tessera(home, "devnet", "up", "--chains", "2", "--port", str(port),
                             "--block-time", "1")
    assert code == 0, err
    processes, relay = [], None
    try:
        assert f"chain {HOME} at http://127.0.0.1:{port}" in out
        assert f"chain {PEER} at http://127.0.0.1:{port + 1}" in out
        code, out, err = tessera(home, "devnet", "status")
        assert code == 0 and f"chain {PEER}" in out, err
        network_file = home / "devnet" / "network.json"
        network = load_network(network_file)

        processes = [ValidatorProcess(tmp_path, network_file, index, name=f"validator-{index}",
                                      tables=QUIET) for index in BRIDGE_VALIDATORS]
        start_all(processes)
        relay = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "bridge", "relay", "--account", "devnet:3"],
            stdout=open(tmp_path / "relay.log", "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "TESSERA_HOME": str(home)})

        for args, said in [
            (("--to-chain", "999", "--amount", "5"), "not a chain of network"),
            (("--to-chain", str(HOME), "--amount", "-5"), "--amount"),
            (("--to-chain", str(HOME), "--amount", "0"), "above zero"),
            (("--to-chain", str(HOME), "--amount", "5", "--recipient", "nope"), "not an address"),
            (("--to-chain", str(HOME), "--amount", "60000"), "over the route's limit"),
            (("--to-chain", str(HOME), "--amount", "5", "--from-chain", str(HOME)), "same chain"),
            (("--to-chain", str(HOME), "--amount", "5", "--token", "DOGE"), "--token must be one of"),
            (("--to-chain", str(HOME), "--amount", "600", "--token", "TSTK"), "over the route's limit"),
            (("--to-chain", str(HOME), "--amount", "0.0000001", "--token", "TUSD"), "--amount"),
        ]:
            code, out, err = tessera(home, "bridge", "send", *args)
            assert code == 1 and said in err, (args, err)
            assert "Traceback" not in err
        # an order paid from a chain the network does not name: refused in words before
        # anything is sent (a DiLoCo job from the peer: tests/e2e/test_demo_chains.py)
        examples = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
        for spec, chain_id, said in (("job.toml", "999", "names no peer chain 999"),
                                     ("diloco.toml", "999", "names no peer chain 999")):
            code, out, err = tessera(home, "job", "submit", os.path.join(examples, spec),
                                     "--pay-from-chain", chain_id)
            assert code == 1 and said in " ".join(err.split()), (spec, err)
            assert "Traceback" not in err

        code, out, err = tessera(home, "bridge", "send", "--to-chain", str(HOME), "--amount", "5")
        mined = time.monotonic()
        assert code == 0, err
        message_id = bytes.fromhex(re.search(r"message 0x([0-9a-f]{64})", out).group(1))
        inbox = BridgeInbox(Chain(network))
        wait_until(lambda: inbox.delivered(message_id), 60, "the transfer delivered", interval=0.05)
        print(f"source transaction to delivery: {time.monotonic() - mined:.2f} s")
        # a provider's stake crosses the same way, through StakeBridge and its own bucket
        code, out, err = tessera(home, "bridge", "send", "--token", "TSTK", "--to-chain",
                                 str(HOME), "--amount", "100", "--account", "devnet:4")
        assert code == 0 and "sent 100.00 TSTK" in out, err
        stake_id = bytes.fromhex(re.search(r"message 0x([0-9a-f]{64})", out).group(1))
        wait_until(lambda: inbox.delivered(stake_id), 60, "the stake delivered", interval=0.05)

        code, out, err = tessera(home, "bridge", "status", "--json")
        assert code == 0, err
        routes = {(r["source_chain"], r["destination_chain"]): r
                  for r in json.loads(out)["routes"]}
        assert routes[(PEER, HOME)]["sent"] == 2 and routes[(PEER, HOME)]["delivered"] == 2
        assert routes[(PEER, HOME)]["attested"] == 2 and routes[(HOME, PEER)]["sent"] == 0
        assert routes[(PEER, HOME)]["value_sent_by"] == {"TokenBridge": 5 * 10**6,
                                                         "StakeBridge": 100 * 10**18}
        buckets = routes[(PEER, HOME)]["buckets"]
        taken = buckets["StakeBridge"]["capacity"] - buckets["StakeBridge"]["available"]
        assert 99 * 10**18 < taken <= 100 * 10**18   # less what refilled since (0.0116 TSTK/s)
        assert buckets["TokenBridge"]["capacity"] - buckets["TokenBridge"]["available"] <= 5 * 10**6
        code, out, err = tessera(home, "bridge", "status")
        assert f"{PEER} -> {HOME}: sent 2 (5.00 TUSD, 100.00 TSTK)" in " ".join(out.split()), err
        assert "StakeBridge bucket" in out
    finally:
        if relay is not None:
            stop(relay)
        for validator in processes:
            validator.stop()
        code, out, err = tessera(home, "devnet", "down")
    assert code == 0 and "devnet stopped" in out
    assert tessera(home, "devnet", "status")[0] == 1
