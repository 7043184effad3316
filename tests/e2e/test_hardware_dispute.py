"""A false hardware report answered, end to end (issue 10: "a reported provider must be able to
answer a hardware report with evidence before it is slashed").

Real parts: a fresh anvil, an honest `tessera provider run` process, and one `tessera validator
run` process (the juror). Two other validators (the test's own keys, staked through the
Validators wrapper) report the honest provider without any challenge, as a cartel would with
`cast`: together they hold two thirds of the validator stake, above the 33.34 % quorum, so a
dispute period opens and the provider's stake is locked. The provider's daemon disputes on its
own; the juror's daemon, which did not report, times the provider afresh, finds it passing and
votes pass; once the vote is over (time moved on anvil) the juror executes the round, which
clears the provider: nothing is slashed, nobody is jailed, and the reporters earn nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.processes import ProviderProcess, ValidatorProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.hardware import HardwareReports, RoundStatus
from tessera.chain.probes import Probes
from tessera.chain.validators import Validators

pytestmark = pytest.mark.e2e

EPOCH = 60
HONEST, JUROR = 3, 9
CARTEL = (7, 8)
STAKE = 100 * 10**18
# the juror times providers as in test_hardware_slashing.py, and never on its own schedule
# here (every 10,000 epochs): only the dispute makes it challenge
VALIDATOR_TABLES = {"probes": {"max_delay_s": 0.5}, "outages": {"report": False},
                    "hardware": {"target_s": 0.5, "slack": 8.0, "allowance_s": 1.0,
                                 "rows_checked": 16, "every_epochs": 10_000}}


@pytest.fixture(scope="module")
def dispute_devnet(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("hardware-dispute")
    with private_devnet(home, epoch_length=EPOCH) as (devnet, network):
        yield home, devnet, network


def events_of(log: Path, name: str) -> list[dict]:
    lines = log.read_text().splitlines()
    return [e for e in (json.loads(x) for x in lines if x.startswith("{")) if e.get("event") == name]


def test_an_honest_provider_disputes_a_false_report_and_is_not_slashed(dispute_devnet):
    home, devnet, network = dispute_devnet
    chain = Chain(network)
    honest = ProviderProcess(home, devnet.network_file, account=HONEST, price="1.00",
                             name="honest")
    honest.start()
    juror = None
    try:
        juror = ValidatorProcess(home, devnet.network_file, JUROR, name="juror",
                                 tables=VALIDATOR_TABLES)
        juror.start(timeout=90)
        for account in CARTEL:
            Validators(Chain(network, devnet_account(account))).register(STAKE)
        epoch = Probes(chain).current_epoch()
        for account in CARTEL:   # no challenge at all: a made-up "no answer"
            HardwareReports(Chain(network, devnet_account(account))).report(
                honest.address, epoch, "no-answer", b"\x01" * 32)
        hw = HardwareReports(chain)
        record = hw.round(honest.address, epoch)
        assert record.reported >= record.quorum          # 200 of 300 TSTK
        assert chain.call(chain.registry.functions.locked_until(honest.address)) > \
            chain.block_timestamp()                      # the provider cannot leave meanwhile
        wait_until(lambda: hw.round(honest.address, epoch).status == RoundStatus.DISPUTED,
                   timeout=90, what="the honest provider's daemon disputing")
        juror_address = devnet_account(JUROR).address
        wait_until(lambda: hw.has_voted(juror_address, honest.address, epoch), timeout=60,
                   what="the juror's vote")
        end = hw.round(honest.address, epoch).vote_deadline
        chain.w3.provider.make_request("evm_setNextBlockTimestamp", [end + 1])
        chain.w3.provider.make_request("evm_mine", [])
        wait_until(lambda: hw.round(honest.address, epoch).status == RoundStatus.CLEARED,
                   timeout=90, what="the juror executing the cleared round")
    finally:
        if juror is not None:
            juror.stop()
        honest.stop()

    record = hw.round(honest.address, epoch)
    assert record.pass_stake == STAKE and record.fail_stake == 0
    p = chain.call(chain.registry.functions.providers(honest.address))
    slashed_total, jailed_until = p[11], p[10]
    assert (slashed_total, jailed_until) == (0, 0)
    assert chain.call(chain.registry.functions.is_active(honest.address))
    assert all(hw.reward_of(devnet_account(a).address, honest.address, epoch) == 0 for a in CARTEL)
    [disputed] = events_of(home / "honest.log", "hardware-disputed")
    assert disputed["epoch"] == epoch
    [vote] = events_of(juror.log, "hardware-jury-vote")
    assert vote["passed"] and vote["outcome"] == "passed", vote
    [executed] = events_of(juror.log, "hardware-executed")
    assert executed["outcome"] == "cleared"
