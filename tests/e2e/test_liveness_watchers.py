"""Honest validators watching each other never challenge (issue 15: honest parties are never
punished), with real processes: anvil, two `tessera validator run` (their `[liveness] watch` on,
as by default) and a `tessera provider run`. Chain time jumps from epoch to epoch.

Validator B starts after the provider's first beat, so B lacks the beat of that epoch while A
names the provider in its report. Once A's report window has closed, B's watch has to decide:
it asks A for the beat (`GET /liveness/{epoch}/beats/{provider}`), finds it valid and sends no
challenge. The adversary this guards against is B's own watch turning on an honest colleague
(a false challenge costs B an answer fee per beat, and A or the provider an answer
transaction): with every report true, no `InclusionsChallenged` may ever appear, and every
epoch counts as up once final."""

from __future__ import annotations

import httpx
import pytest
from tests.e2e.test_liveness import QUIET, jump, proven
from tests.support.processes import ProviderProcess, ValidatorProcess, wait_until

from tessera.chain.client import Chain
from tessera.chain.uptime import Uptime

pytestmark = pytest.mark.e2e

PROVIDER, FIRST, SECOND = 3, 7, 8


def checks(validator: ValidatorProcess, outcome: str) -> float:
    """The validator's watch checks with this outcome (beat: a valid beat fetched or held)."""
    text = httpx.get(f"{validator.url}/metrics", timeout=5).text
    line = f'tessera_validator_liveness_watch_checks_total{{outcome="{outcome}"}} '
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line))


def test_honest_watchers_fetch_the_beat_and_never_challenge(tmp_path, private_devnet):
    with private_devnet(tmp_path) as (devnet, network):
        chain = Chain(network)
        uptime = Uptime(chain)
        a = ValidatorProcess(tmp_path, devnet.network_file, FIRST, name="validator-a",
                             tables=QUIET)
        b = ValidatorProcess(tmp_path, devnet.network_file, SECOND, name="validator-b",
                             tables=QUIET)
        node = ProviderProcess(tmp_path, devnet.network_file, account=PROVIDER, price="1.00",
                               name="p-watched")

        def reported(epoch: int) -> set[str]:
            return {r["args"]["validator"] for r in chain.events(
                "Uptime", "LivenessReported", network.deploy_block,
                argument_filters={"epoch": epoch})}

        a.start()
        node.start()
        try:
            first = jump(uptime)
            wait_until(lambda: proven(node, first), timeout=90, what=f"epoch {first} receipted")
            b.start()     # B never saw the provider's beat of `first`
            assert httpx.get(f"{b.url}/liveness/{first}/beats/{node.address}",
                             timeout=5).status_code == 404
            epoch = first
            for _ in range(4):   # `first` reported by A, then watched by B, then final
                epoch = jump(uptime)
                wait_until(lambda e=epoch: proven(node, e), timeout=90, what=f"epoch {epoch}")
                wait_until(lambda e=epoch - 1: a.address in reported(e), timeout=90,
                           what=f"A's report of epoch {epoch - 1}")
            assert reported(first) == {a.address}          # B holds no beat of it: no report
            wait_until(lambda: (b.health() or {}).get("liveness_watch", {})
                       .get("examined_epoch") is not None
                       and b.health()["liveness_watch"]["examined_epoch"] >= first,
                       timeout=90, what=f"B's watch through epoch {first}")
            # B asked A for the beat and found it good (the check behind "no challenge")
            assert checks(b, "beat") >= 1 and checks(b, "unproven") == 0
            assert chain.events("Uptime", "InclusionsChallenged", network.deploy_block) == []
            assert uptime.is_final(first)
            assert all(uptime.is_up(node.address, e) for e in range(first, epoch)
                       if uptime.is_final(e))
            assert [v.health()["liveness_watch"]["challenges"] for v in (a, b)] == [{}, {}]
        finally:
            node.stop()
            a.stop()
            b.stop()
