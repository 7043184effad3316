"""Read grants over HTTP (tessera.protocol.read_grant): `ReadGrantAuth` signs one for every
request to a round's pseudo-gradient or checkpoint states, with the chain's account. (Whether
a challenge on a lease's round is open, the provider's other question, is
`Verification.open_challenge_of`.)

Here, not in a role, because both the tenant (its coordinator's spot checks and downloads) and
the validator (its challenge replays) sign them, and signing needs the account a `Chain` holds.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Generator
from urllib.parse import parse_qs

import httpx

from tessera.chain.client import Chain
from tessera.protocol import read_grant

CHECKPOINT_ROOT = re.compile(r"0x[0-9a-f]{64}")   # `?root=` as our verifiers send it
RENEW_BEFORE_S = 60   # a cached grant is signed again once it has less than this left


class ReadGrantAuth(httpx.Auth):
    """Adds the read-grant headers to requests for `.../leases/{id}/rounds/{r}/pseudo-gradient`
    and `.../checkpoints/{i}`, signed by `chain.account` for the request's lease, valid
    `validity_s`; any other request goes out unchanged, and so does every request when the
    chain has no account. One grant per lease is reused until it nears its expiry."""

    def __init__(self, chain: Chain, validity_s: int = read_grant.GRANT_VALIDITY_S):
        if not 0 < validity_s <= read_grant.MAX_READ_GRANT_AHEAD_S:
            raise ValueError(f"validity_s must be in 1 .. {read_grant.MAX_READ_GRANT_AHEAD_S}")
        self.chain, self.validity_s = chain, validity_s
        self._grants: dict[int, read_grant.ReadGrant] = {}
        self._lock = threading.Lock()

    def grant(self, lease_id: int) -> read_grant.ReadGrant:
        now = time.time()
        with self._lock:
            cached = self._grants.get(lease_id)
            if cached is None or cached.expiry - now < RENEW_BEFORE_S:
                chain = self.chain
                cached = read_grant.sign(chain.account, chain.network.chain_id,
                                         chain.market.address, lease_id,
                                         int(now) + self.validity_s)
                self._grants[lease_id] = cached
            return cached

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        query = request.url.query.decode("ascii", "replace")
        lease_id = read_grant.lease_of_request(request.url.path, query)
        # Our requests carry no query but `wait` and a checkpoint `root`: any other means the
        # path is not ours (an endpoint that ends in `?x=` makes the path we append its query;
        # review 15)
        asked = parse_qs(query, keep_blank_values=True)
        if set(asked) - {"wait", "root"} or \
                not all(CHECKPOINT_ROOT.fullmatch(v) for v in asked.get("root", [])):
            lease_id = None
        if lease_id is not None and self.chain.account is not None:
            request.headers.update(self.grant(lease_id).headers())
        yield request

