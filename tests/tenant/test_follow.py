"""The follow loop's decisions (tenant/follow.py): what is retried, how long it waits, when it
gives up, and that a blip or a flapping provider never gets the lease closed on.

The provider's answers come from a script and time from a fake clock: a 300 s grace and its
backoff are checked in milliseconds. The same loop against real processes (a provider killed
with SIGKILL, killed and restarted) is tests/e2e/test_provider_faults.py."""

from __future__ import annotations

import pytest

from tessera.errors import ProviderGone, ProviderUnreachable, TenantError
from tessera.protocol.wire import LeaseStatus
from tessera.tenant.flow import parse_grace
from tessera.tenant.follow import Backoff, Outage, follow_lease, gone_lines

URL = "http://10.0.0.7:7001/leases/3"
PROVIDER = "0x" + "ab" * 20


class Clock:
    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def running(step: int) -> LeaseStatus:
    return LeaseStatus(lease_id=3, status="running", step=step, steps=10)


DONE = LeaseStatus(lease_id=3, status="succeeded", step=10, steps=10)
DOWN = ProviderUnreachable(URL, "ConnectError: [Errno 111] Connection refused")


def run(script, *, grace_s=300.0, timeout_s=3600.0, backoff=Backoff()):
    """Follow a scripted provider; (the result or the exception, notices, sleeps, give-ups)."""
    clock, notices, gave_up = Clock(), [], []
    answers = iter(script)

    def poll() -> LeaseStatus:
        answer = next(answers)
        if callable(answer):
            answer = answer(clock)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def give_up(outage: Outage) -> Exception:
        gave_up.append((clock.now, outage))
        return ProviderGone("gone", settlement=None)

    try:
        result = follow_lease(poll, lease_id=3, provider=PROVIDER, give_up=give_up,
                              notice=notices.append, poll_s=0.5, timeout_s=timeout_s,
                              grace_s=grace_s, backoff=backoff, clock=clock, sleep=clock.sleep)
    except Exception as exc:  # noqa: BLE001 (the test looks at it)
        result = exc
    return result, notices, clock, gave_up


def test_one_refused_connection_does_not_end_the_job():
    result, notices, clock, gave_up = run([running(1), DOWN, running(2), DONE])
    assert result == DONE and gave_up == []
    assert notices[0] == (f"provider {PROVIDER} unreachable at http://10.0.0.7:7001 (attempt 1, "
                          "retrying in 0.5 s): ConnectError: [Errno 111] Connection refused")
    assert notices[1].startswith(f"provider {PROVIDER} answered again after 0.5 s (1 failed")
    assert len(notices) == 2 and clock.sleeps == [0.5, 0.5, 0.5]


def test_backoff_doubles_up_to_its_cap_and_each_try_is_told():
    assert [Backoff(0.5, 15).delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 15, 15]
    assert Backoff(0.5, 15).delay(10**6) == 15    # no overflow on a very long outage
    result, notices, clock, _ = run([DOWN] * 7 + [DONE])
    assert result == DONE
    assert clock.sleeps[:7] == [0.5, 1, 2, 4, 8, 15, 15]
    assert [n.split("(")[1].split(")")[0] for n in notices[:3]] == [
        "attempt 1, retrying in 0.5 s", "attempt 2, retrying in 1.0 s",
        "attempt 3, retrying in 2.0 s"]


def test_after_the_grace_the_lease_is_given_up_once():
    result, notices, clock, gave_up = run([running(1)] + [DOWN] * 100, grace_s=20)
    assert isinstance(result, ProviderGone)
    [(when, outage)] = gave_up
    # first failure at t0 + 0.5; tries at +0.5, +1, +2, +4, +8, then the rest of the grace
    assert outage.since == 1000.5 and when == outage.since + 20
    assert clock.sleeps[1:] == [0.5, 1, 2, 4, 8, 4.5]   # never sleeps past the grace
    assert outage.attempts == 7 and outage.endpoint == "http://10.0.0.7:7001"
    assert "giving up on lease 3" in notices[-1] and "for 20 s (7 attempts; grace 20 s)" \
        in notices[-1]


def test_any_answer_ends_an_outage_and_restarts_the_grace():
    # Down 15 s, back, down 15 s again: never 20 s in a row, so never given up.
    script = [DOWN] * 5 + [running(5)] + [DOWN] * 5 + [running(6), DONE]
    result, notices, _, gave_up = run(script, grace_s=20, backoff=Backoff(1, 4))
    assert result == DONE and gave_up == []
    assert sum("answered again" in n for n in notices) == 2


def test_a_refusal_is_not_retried():
    refused = TenantError("provider refused GET http://10.0.0.7:7001/leases/3: unknown lease")
    result, notices, _, gave_up = run([running(1), refused])
    assert result is refused and notices == [] and gave_up == []


def test_a_flapping_provider_holds_the_loop_only_until_the_timeout():
    """The attack: answer once just before each grace runs out, never finish. Each answer ends
    the outage, so the grace never passes; the loop's timeout ends it instead (and the pay
    for epochs without a heartbeat is claimed by the close that follows either way)."""
    def flap():
        while True:
            yield from [DOWN] * 5          # 0.5 + 1 + 2 + 4 + 8 = 15.5 s down
            yield running(1)
    script = flap()
    result, _, clock, gave_up = run(script, grace_s=20, timeout_s=600)
    assert isinstance(result, TenantError) and "did not finish within 600 s" in str(result)
    assert gave_up == [] and 600 <= clock.now - 1000 <= 600 + 20


def test_a_timeout_during_an_outage_names_the_fault():
    result, _, _, gave_up = run([DOWN] * 50, grace_s=300, timeout_s=10)
    assert isinstance(result, TenantError) and not isinstance(result, ProviderGone)
    assert "did not finish within 10 s" in str(result) and "Connection refused" in str(result)
    assert gave_up == []


@pytest.mark.parametrize("grace", [0, -1, float("nan")])
def test_a_grace_must_be_positive(grace):
    with pytest.raises(ValueError, match="grace_s must be positive"):
        follow_lease(lambda: DONE, lease_id=3, provider=PROVIDER, give_up=lambda o: None,
                     grace_s=grace)


class Settled:
    def __init__(self, tx="0x12", epochs=(), refund=130_833, slashed=0):
        self.tx, self.refund, self.provider_amount = tx, refund, 10_563
        self.downtime_epochs, self.downtime_refund = list(epochs), 25_000
        self.stake_slashed, self.downtime_txs = slashed, ["0x34"]


def test_what_giving_up_did_is_said_in_words():
    outage = Outage(since=0, attempts=5, endpoint="http://10.0.0.7:7001", reason="ReadTimeout")
    lines = gone_lines(3, PROVIDER, outage, 4, Settled(epochs=[1, 2, 3], slashed=3 * 10**18))
    assert lines == [
        f"provider {PROVIDER} unreachable at http://10.0.0.7:7001 for longer than the 4 s grace "
        "(5 attempts; last: ReadTimeout)",
        "lease 3 closed (tx 0x12): unspent budget 0.130833 TUSD refunded to you, provider paid "
        "0.010563 TUSD for its live time",
        "claimed 3 epoch(s) without a heartbeat (epochs 1, 2, 3): downtime refund 0.025 TUSD, "
        "provider stake burned 3.00 TSTK (tx 0x34)"]
    lines = gone_lines(3, PROVIDER, outage, 4, Settled(tx=""))
    assert lines[1:] == ["lease 3 was already closed", "no whole uptime epoch of the lease "
                         "passed without a heartbeat, so no downtime was claimable"]


@pytest.mark.parametrize(("text", "problem"), [
    ("soon", "must look like"), ("0", "positive"), ("-5s", "must look like"),
    ("2d", "limit"), ("1e999999", "must look like"), ("", "must look like")])
def test_a_bad_provider_grace_is_refused_naming_the_option(text, problem):
    with pytest.raises(ValueError, match=problem) as refused:
        parse_grace(text)
    assert str(refused.value).startswith("--provider-grace: ")


def test_a_provider_grace_is_read_as_a_duration():
    assert [parse_grace(t) for t in ("90s", "5m", "1h", "1d", "45")] == [90, 300, 3600, 86400, 45]
