"""The tenant's follow loop: poll a lease's job until it ends, riding out a provider that stops
answering for a while and giving up on one that stays away (`Tenant.follow` runs it).

- A poll that fails transiently (`ProviderUnreachable`: connection refused or reset, timeout,
  5xx/408/429, an answer that is not a job status, the provider no longer registered) is
  retried after a backoff that starts at `Backoff.first_s`, doubles and is capped at
  `Backoff.cap_s`, and never sleeps past the grace. Every failed attempt is told to the user:
  `provider <addr> unreachable at <endpoint> (attempt n, retrying in s s): <reason>`.
- Any good answer ends the outage: the loop says the provider is back and carries on. A blip
  (one refused connection, a restart) costs the provider nothing: no close, no claim.
- After `grace_s` seconds of unbroken unreachability the loop calls `give_up` (the Tenant's
  `abandon`: claim every whole Uptime epoch of the lease without a heartbeat that
  `Market.claim_downtime` accepts, close the lease, claim any epoch that ended in between) and
  raises the `ProviderGone` it returns, whose message says what was refunded and slashed.

What an adversary can and cannot do against it:
- a provider that answers 5xx or junk forever is counted as unreachable: closed after the
  grace, like a dead one;
- a provider that keeps sending heartbeats but never answers the tenant is closed after the
  grace (its pay stops), but nothing is claimed: the Market refunds only epochs without a
  heartbeat, which is all the chain knows. The same holds when the fault is the tenant's own
  network: an honest provider then loses the rest of the lease but is neither refunded from
  nor slashed;
- a flapper that answers once every less than `grace_s` seconds resets the outage each time, so
  it holds the loop until `timeout_s`; it still keeps no pay for epochs without a heartbeat,
  because every close the tenant makes claims them first (tests/tenant/test_follow.py);
- the tenant cannot over-claim: the epochs come from `Market.missed_epochs`
  (protocol/lease.claimable_epochs, the Uptime beat bitmap and the Market's claimed bitmap),
  and the Market re-checks every one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tessera.errors import ProviderUnreachable, TenantError
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    show_amount,
)
from tessera.protocol.wire import LeaseStatus

TERMINAL = ("succeeded", "failed", "closed")
DEFAULT_GRACE_S = 300.0   # how long a provider may stay unreachable before the lease is given up
MAX_GRACE_S = 86_400      # longer makes no sense: a closed lease can be claimed on for a day
STATUS_TIMEOUT_S = 10.0   # one status poll; a hung provider counts as unreachable after it


@dataclass(frozen=True)
class Backoff:
    """Seconds before retry `attempt` (1, 2, ...): first_s, doubling, at most cap_s."""
    first_s: float = 0.5
    cap_s: float = 15.0

    def delay(self, attempt: int) -> float:
        return min(self.first_s * 2 ** min(max(attempt, 1) - 1, 32), self.cap_s)


@dataclass
class Outage:
    """An unbroken run of failed polls."""
    since: float          # monotonic time of the first failure
    attempts: int = 0
    endpoint: str = ""
    reason: str = ""


def endpoint_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def follow_lease(poll: Callable[[], LeaseStatus], *, lease_id: int, provider: str,
                 give_up: Callable[[Outage], Exception],
                 on_progress: Callable[[LeaseStatus], None] | None = None,
                 notice: Callable[[str], None] | None = None, poll_s: float = 0.5,
                 timeout_s: float = 3600, grace_s: float = DEFAULT_GRACE_S,
                 backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> LeaseStatus:
    """Poll until the job ends (a TERMINAL status, returned); TenantError after `timeout_s`;
    `give_up(outage)`'s exception after `grace_s` of unbroken ProviderUnreachable. Any other
    error of `poll` (a provider refusing with a 4xx) ends the loop at once."""
    if not grace_s > 0:
        raise ValueError(f"grace_s must be positive, not {grace_s!r}")
    tell = notice or (lambda line: None)
    deadline = clock() + timeout_s
    outage: Outage | None = None
    while True:
        try:
            status = poll()
        except ProviderUnreachable as exc:
            now = clock()
            outage = outage or Outage(since=now)
            outage.attempts += 1
            outage.endpoint, outage.reason = endpoint_of(exc.url), exc.reason
            down_for = now - outage.since
            if down_for >= grace_s:
                tell(f"provider {provider} unreachable at {outage.endpoint} for {down_for:.0f} s "
                     f"({outage.attempts} attempts; grace {grace_s:g} s): giving up on lease "
                     f"{lease_id}: {outage.reason}")
                raise give_up(outage) from None
            if now > deadline:
                raise TenantError(f"lease {lease_id} did not finish within {timeout_s:.0f} s; "
                                  f"its provider is unreachable: {outage.reason}") from None
            wait = min(backoff.delay(outage.attempts), grace_s - down_for)
            tell(f"provider {provider} unreachable at {outage.endpoint} (attempt "
                 f"{outage.attempts}, retrying in {wait:.1f} s): {outage.reason}")
            sleep(wait)
            continue
        if outage is not None:
            tell(f"provider {provider} answered again after {clock() - outage.since:.1f} s "
                 f"({outage.attempts} failed attempt(s)); still following lease {lease_id}")
            outage = None
        if on_progress:
            on_progress(status)
        if status.status in TERMINAL:
            return status
        if clock() > deadline:
            raise TenantError(f"lease {lease_id} did not finish within {timeout_s:.0f} s")
        sleep(poll_s)


def _money(amount: int) -> str:
    return show_amount(amount, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


def _span(epochs: list[int]) -> str:
    return f"epoch {epochs[0]}" if len(epochs) == 1 else \
        f"epochs {', '.join(map(str, epochs))}" if len(epochs) <= 8 else \
        f"epochs {epochs[0]}..{epochs[-1]} ({len(epochs)} of them)"


def gone_lines(lease_id: int, provider: str, outage: Outage, grace_s: float,
               settlement) -> list[str]:
    """What giving up did, in words: the reason, the close and the claims (a `LeaseClose`)."""
    lines = [f"provider {provider} unreachable at {outage.endpoint} for longer than the "
             f"{grace_s:g} s grace ({outage.attempts} attempts; last: {outage.reason})"]
    if settlement.tx:
        lines.append(f"lease {lease_id} closed (tx {settlement.tx}): unspent budget "
                     f"{_money(settlement.refund)} refunded to you, provider paid "
                     f"{_money(settlement.provider_amount)} for its live time")
    else:
        lines.append(f"lease {lease_id} was already closed")
    if settlement.downtime_epochs:
        lines.append(f"claimed {len(settlement.downtime_epochs)} epoch(s) without a heartbeat "
                     f"({_span(settlement.downtime_epochs)}): downtime refund "
                     f"{_money(settlement.downtime_refund)}, provider stake burned "
                     f"{show_amount(settlement.stake_slashed, STAKE_DECIMALS, STAKE_SYMBOL)} "
                     f"(tx {', '.join(settlement.downtime_txs)})")
    else:
        lines.append("no whole uptime epoch of the lease passed without a heartbeat, so no "
                     "downtime was claimable")
    return lines
