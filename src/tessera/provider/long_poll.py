"""Long polls of a DiLoCo round's answer: `GET /leases/{id}/rounds/{r}?wait=S` (provider/api.py)
is held until the worker's answer exists (200 at once) or S seconds have passed (202, as
without `wait`), instead of the tenant's coordinator asking every 20 ms for the whole round
(tenant/worker_rounds.py). Without `wait`, or with `wait=0`, the route answers at once as before.

The route is public (anyone may ask for a round's answer; it reveals nothing that saves work),
but holding a request needs a read grant (the lease's tenant, or a validator deciding its
case): 64 held slots cost the node ~3,000 look-ups a second, and a stranger holding them cost
the node ~1,500 times what they cost the stranger (review 9). What one costs and what bounds them:
- each waiter is one sleeping coroutine and one local look-up (a row and two small files, in
  the thread pool) every WAIT_CHECK_S: cheaper than the request it replaces;
- at most MAX_WAITERS_PER_LEASE waiters per lease and MAX_WAITERS in all; beyond that 429 with
  Retry-After. A request without `wait` is never refused for it, so filling every slot only
  returns the tenants to polling, today's behaviour (their coordinator falls back on a 429);
- a waiter ends when its client disconnects (a killed or impatient client frees its slot) or
  the node stops (a shutdown never waits for a stranger's 30 s);
- only a lease this node runs a DiLoCo worker for can be waited on: the first look-up refuses
  any other (404/409) before a slot is taken.
A lease that ends or a round whose parameters are replaced while a request waits is answered
with whatever the look-up says then, as without `wait`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from tessera.errors import Refused

MAX_WAIT_S = 30                  # the longest `wait` a request may ask for
WAIT_CHECK_S = 0.02              # how often a waiting request looks for the answer
MAX_WAITERS = 64                 # requests waiting at once, all leases together
MAX_WAITERS_PER_LEASE = 4        # ... for one lease (its coordinator needs one)
RETRY_AFTER_S = 1                # what a 429 tells the client to wait before waiting again
_WAIT = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,3})?$")


def parse_wait(raw: str | None) -> float:
    """The `wait` query parameter in seconds (0 when absent); Refused (400) for anything but a
    plain decimal from 0 to MAX_WAIT_S with at most 3 decimals (no sign, exponent, NaN or inf)."""
    if raw is None:
        return 0.0
    if not _WAIT.match(raw) or float(raw) > MAX_WAIT_S:
        raise Refused(400, f"wait must be a number of seconds from 0 to {MAX_WAIT_S} "
                           f"(like 10 or 2.5), not {raw[:40]!r}")
    return float(raw)


class Waiters:
    """How many long polls wait, per lease and in all. Used from the event loop only, so
    without a lock."""

    def __init__(self, most: int = MAX_WAITERS, most_per_lease: int = MAX_WAITERS_PER_LEASE):
        self.most, self.most_per_lease = most, most_per_lease
        self.total = 0
        self.by_lease: dict[int, int] = {}

    def enter(self, lease_id: int) -> str | None:
        """Take a slot for `lease_id`; None when taken, else why not (the 429's detail)."""
        if self.total >= self.most:
            return f"{self.most} requests already wait for round answers at this node"
        if self.by_lease.get(lease_id, 0) >= self.most_per_lease:
            return f"{self.most_per_lease} requests already wait for lease {lease_id}'s answers"
        self.total += 1
        self.by_lease[lease_id] = self.by_lease.get(lease_id, 0) + 1
        return None

    def leave(self, lease_id: int) -> None:
        self.total -= 1
        left = self.by_lease[lease_id] - 1
        if left:
            self.by_lease[lease_id] = left
        else:
            del self.by_lease[lease_id]


async def wait_for(lookup: Callable[[], Awaitable], wait_s: float,
                   stop: Callable[[], Awaitable[bool]]):
    """`await lookup()` every WAIT_CHECK_S until it gives something other than None, `wait_s`
    have passed or `await stop()` is true; its last answer (None when there is none yet)."""
    until = time.monotonic() + wait_s
    while True:
        left = until - time.monotonic()
        if left <= 0 or await stop():
            return None
        await asyncio.sleep(min(WAIT_CHECK_S, left))
        result = await lookup()
        if result is not None:
            return result
