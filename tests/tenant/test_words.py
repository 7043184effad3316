"""Words that mislead (issue 12), each pinned by a test that would have caught it: the bid line's
uptime, a CPU's memory, a DiLoCo lease's status, the slash split and jail time, the money of a
verified lease, the job spec's [escrow] section and the units of JSON summaries."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from tessera.demo_cheater import print_act
from tessera.errors import SpecError
from tessera.protocol.jobspec import EscrowSpec, parse_job_spec
from tessera.protocol.ledger import LeaseLedger
from tessera.protocol.matching import ProviderOffer
from tessera.protocol.reliability import Inputs, score
from tessera.protocol.wire import LeaseStatus
from tessera.tenant.bidding import device_text, reliability_text
from tessera.tenant.escrow import duration_text
from tessera.tenant.lease_money import UNITS, LeaseMoney, money_json, money_lines, short_line
from tessera.tenant.lease_views import job_lines, single_job_line

TENANT, PROVIDER = "0x" + "aa" * 20, "0x" + "bb" * 20


def bid_score(up: int, epochs: int) -> dict[str, int]:
    s = score(Inputs(up=up, epochs=epochs))
    return {"bps": s.bps, "uptime_bps": s.uptime_bps, "finished": 0, "failed": 0, "slashes": 0,
            "up": up, "epochs": epochs}


def test_a_bid_shows_the_measured_uptime_and_names_the_smoothed_one():
    """3 heartbeats in 3 epochs: the explorer's page says 100 %, the score's smoothed part
    55.55 %. The bid line used to say 'uptime 55.55%' alone."""
    text = reliability_text(bid_score(3, 3))
    assert "uptime 100.00% = 3/3 epochs, 55.55% smoothed" in text
    assert not re.search(r"uptime \d+\.\d+%[,;)]", text.replace("100.00% =", ""))
    assert "no epoch owed yet, 50.00% smoothed" in reliability_text(bid_score(0, 0))
    assert reliability_text(None) == "?"


def test_a_cpu_providers_memory_is_called_system_memory():
    cpu = ProviderOffer(PROVIDER, True, "cpu-x86_64", 1, 15_843, 1000, "http://p", 1)
    gpu = ProviderOffer(PROVIDER, True, "NVIDIA H100 80GB HBM3", 8, 81_559, 10**9, "http://p", 1)
    assert device_text(cpu) == "cpu-x86_64, 15,843 MB system memory"
    assert device_text(gpu) == "NVIDIA H100 80GB HBM3, 81,559 MB GPU memory"
    assert "GPU memory" not in device_text(cpu)


DILOCO_LOGS = [{"event": "start", "worker": 1, "workers": 3, "inner_steps": 50,
                "resumed_after_round": -1}] + [
    {"event": "progress", "round": r, "step": r + 1, "train_loss": 2.0} for r in range(10)]


def test_a_diloco_lease_shows_rounds_and_how_it_ended():
    """Its provider says 'step 10/0 ... closed on chain while running': a DiLoCo worker serves
    rounds until the tenant closes the lease after the last one."""
    job = {"config": {"rounds": 10}, "finished": True,
           "workers": [{"lease_id": 7, "fault": None, "reason": ""}]}
    lines = job_lines(7, DILOCO_LOGS, lease_open=False, closed_by=TENANT, tenant=TENANT,
                      diloco=job)
    assert lines[0] == "job: DiLoCo worker 1 of 3, 50 inner steps a round; answered 10/10 rounds"
    assert lines[1] == "state: finished: the tenant closed the lease after the job's last round"
    unknown = job_lines(7, DILOCO_LOGS, lease_open=False, closed_by=TENANT, tenant=TENANT,
                        diloco=None)
    assert "answered 10 rounds" in unknown[0] and "serves rounds until then" in unknown[1]
    dropped = {**job, "workers": [{"lease_id": 7, "fault": "spot-check", "reason": "replay"}]}
    assert "dropped by the coordinator (spot-check" in job_lines(
        7, DILOCO_LOGS, False, TENANT, TENANT, dropped)[1]
    assert job_lines(7, [{"event": "start", "steps": 200}], True, "", TENANT, None) == []


def test_the_slash_split_and_the_jail_end_read_as_amounts_and_dates():
    console = Console(record=True, width=300)
    tstk = 10**18
    act = {"cheater": PROVIDER, "stake_before": 100 * tstk, "stake_after": 0,
           "jailed_until": 1_797_032_361, "challenges": [{
               "challenge_id": 1, "lease_id": 4, "segment": 0, "kind": "payload",
               "outcome": "UPHELD", "open_tx": "0x1", "vote_txs": ["0x2"], "resolve_tx": "0x3",
               "claim_txs": [], "case": {}, "slashed": 100 * tstk, "to_voters": 5 * tstk - 2,
               "to_challenger": 23_750_000_000_000_000_000, "to_tenant": 47_500_000_000_000_000_000,
               "burned": 23_750_000_000_000_000_002}]}
    print_act(console, act)
    text = console.export_text()
    assert "4.999999999999999998" not in text and "≈5.00 TSTK to the voters" in text
    assert "23.75 TSTK to the challenger" in text and "≈23.75 TSTK burned" in text
    assert "block time" not in text and "jailed until 2026-12-11 23:39:21 UTC" in text


def verified_ledger(**parts) -> LeaseMoney:
    led = LeaseLedger(5, tenant=TENANT, provider=PROVIDER, verified=True, closed=True,
                      closed_at=1, budget=150_000, **parts)
    return LeaseMoney(led, withdrawn=parts.get("provider_paid", 0), withdrawn_fee=0,
                      withdraw_txs=(), closed_by=TENANT)


def test_a_verified_leases_money_names_round_refunds_and_held_pay():
    """The cheater's lease: budget 0.15 = paid 0.00025 + refund 0.14625 + the 0.0035 of its
    proven round, which the explorer's page and the demo's 'tenant paid' line left out."""
    m = verified_ledger(provider_paid=250, refunded=146_250, round_refunded=3_500)
    lines = money_lines(m)
    assert "  refunded to you for rounds proven bad 0.0035 TUSD" in lines
    assert any(line.startswith("  held for Settlement 0.00 TUSD") for line in lines)
    assert lines[-1] == "  = 0.15 TUSD: adds up to the budget"
    assert short_line(m) == ("lease 5: budget 0.15 TUSD = provider 0.00025 TUSD + fees 0.00 TUSD + "
                             "refunded 0.14625 TUSD + proven rounds refunded 0.0035 TUSD + held "
                             "for Settlement 0.00 TUSD")
    short = verified_ledger(provider_paid=250, refunded=146_250)
    assert "does NOT add up" in money_lines(short)[-1] and "0.0035 TUSD unaccounted" in \
        money_lines(short)[-1]


def test_a_cheaters_forfeited_rounds_are_named():
    """Issue 11: once a cheat is proven for a lease, every round of its pay still held comes
    back as well, flagged forfeited: the tenant's lines say how much of the rounds' refund that
    is, and the sum still adds up (the forfeited part is in the rounds' refund, not beside it)."""
    m = verified_ledger(refunded=146_000, round_refunded=4_000, forfeited_refunded=3_000)
    lines = money_lines(m)
    assert ("  refunded to you for rounds proven bad 0.004 TUSD (of it 0.003 TUSD forfeited: a "
            "cheat was proven in another round, so none of the provider's pay still held is "
            "released)") in lines
    assert lines[-1] == "  = 0.15 TUSD: adds up to the budget"
    assert "proven rounds refunded 0.004 TUSD (of it 0.003 TUSD forfeited)" in short_line(m)
    assert money_json(m)["round_forfeited"] == 3_000 and money_json(m)["round_refunded"] == 4_000
    assert "forfeited" not in " ".join(money_lines(verified_ledger(refunded=146_500,
                                                                   round_refunded=3_500)))


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (45, "45s"), (750, "12m 30s"),
                                           (3_840, "1h 04m"), (183_600, "2d 03h")])
def test_time_left_reads_in_two_units(seconds, text):
    assert duration_text(seconds) == text


SPEC = 'name = "t"\n[order]\nmax_price_per_gpu_hour = "3.00"\nduration = "10m"\n' \
       '[workload]\nkind = "train-charlm"\n'


def test_the_escrow_section_is_money_in_integers_and_refuses_what_makes_no_sense():
    spec = parse_job_spec(SPEC + '[escrow]\nwarn_within = "30m"\ntop_up = "0.50"\n'
                          'top_up_when_left = "1h"\ntop_up_ceiling = "5"\n', "job.toml")
    assert spec.escrow == EscrowSpec(warn_within=1800, top_up=500_000, top_up_when_left=3600,
                                     top_up_ceiling=5_000_000)
    assert spec.escrow.top_up_below == 3600
    # a saved spec (a DiLoCo job's job.json, read back by `job resume`) reads back the same
    for saved in (spec, parse_job_spec(SPEC, "job.toml")):
        assert type(saved).model_validate(saved.model_dump(mode="json")) == saved
    assert EscrowSpec(top_up="1", top_up_ceiling="1").top_up_below == EscrowSpec().warn_within
    # the escrow policy is the tenant's, not the job: the order's hash does not move with it
    assert spec.spec_hash() == parse_job_spec(SPEC, "job.toml").spec_hash()
    for bad, words in (('top_up = "1"', "top_up needs top_up_ceiling"),
                       ('top_up_ceiling = "1"', "without top_up does nothing"),
                       ('top_up = "2"\ntop_up_ceiling = "1"', "below top_up"),
                       ('top_up = "0"\ntop_up_ceiling = "1"', "above zero"),
                       ('top_up = 0.5\ntop_up_ceiling = "1"', "escrow.top_up"),
                       ('warn_within = "0s"', "escrow.warn_within"),
                       ('top_up = "1.0000001"\ntop_up_ceiling = "2"', "6 decimal places")):
        with pytest.raises(SpecError, match=re.escape(words)):
            parse_job_spec(SPEC + "[escrow]\n" + bad + "\n", "job.toml")


def test_json_summaries_name_their_units():
    assert "base units of TUSD (10^-6 TUSD)" in UNITS["money"]
    assert "base units of TSTK (10^-18 TSTK)" in UNITS["stake"]


def test_a_finished_jobs_closed_lease_reads_in_order():
    done = LeaseStatus(lease_id=1, status="closed", detail="closed on chain while succeeded",
                       step=200, steps=200, train_loss=2.4213)
    assert single_job_line(done) == \
        "job: succeeded (step 200/200, loss 2.4213), then its lease was closed on chain"
    cut = LeaseStatus(lease_id=1, status="closed", detail="closed on chain while running", step=7)
    assert single_job_line(cut) == \
        "job: stopped at step 7: its lease was closed on chain while it was running"
    assert single_job_line(LeaseStatus(lease_id=1, status="running", step=3, steps=10)) == \
        "job: running, step 3/10"


def test_resume_refuses_a_pay_from_chain_that_is_not_a_chain_id(tmp_path):
    """A job funded from a peer chain records the chain in job.json (its replacements are funded
    from there after a resume too); anything else there is refused before any connection."""
    import json

    from tessera.errors import TenantError
    from tessera.tenant.coordinator import STATE_FILE, STATE_VERSION
    from tessera.tenant.multinode import resume_job

    for bad in ("31338", -1, 0, True, 1.5):
        (tmp_path / STATE_FILE).write_text(json.dumps(
            {"version": STATE_VERSION, "finished": False, "job": {"pay_from_chain": bad}}))
        with pytest.raises(TenantError, match="pay_from_chain is .* not a chain id"):
            resume_job(tmp_path, tmp_path / "no-network.json", "devnet:5", Console())
