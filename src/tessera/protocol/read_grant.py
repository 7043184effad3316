"""Read grants: who may download a DiLoCo worker's round results and checkpoint states.

Pure: no I/O. `GET /leases/{id}/rounds/{r}/pseudo-gradient` and
`GET /leases/{id}/rounds/{r}/checkpoints/{i}` serve a worker's result and its full states;
served to anyone, they would make copying another worker's round free. A reader sends three
headers with each of those requests:

    X-Tessera-Reader:    the reader's address
    X-Tessera-Expiry:    unix seconds after which the grant is void
    X-Tessera-Signature: the reader's EIP-712 signature over
                         ReadGrant(uint256 leaseId, address reader, uint256 expiry)
                         in the Market's domain (name "TesseraMarket", version "1", chain id,
                         verifying contract: the Market), like the other lease messages

No nonce: a read changes nothing, so a grant used twice reads nothing its reader could not read
anyway. What a nonce would bound, the expiry bounds instead: a provider refuses a grant whose
expiry has passed or lies more than `MAX_READ_GRANT_AHEAD_S` ahead, so headers captured in
transit (plain HTTP) can be reused by whoever captured them for at most that long. The grant
names the lease (its provider is the lease's), not the round: one grant reads every round of
the lease until it expires.

Who may read is the provider's decision, not part of the message: the lease's tenant, and an
active validator while a challenge on that lease and round is open (docs/verification.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from tessera.protocol import messages

HEADER_READER = "X-Tessera-Reader"
HEADER_EXPIRY = "X-Tessera-Expiry"
HEADER_SIGNATURE = "X-Tessera-Signature"
HEADERS = (HEADER_READER, HEADER_EXPIRY, HEADER_SIGNATURE)

MAX_READ_GRANT_AHEAD_S = 600   # a provider refuses an expiry further ahead than this
GRANT_VALIDITY_S = 300         # what a client signs for (half the limit: room for clock skew)
UINT256 = 2**256 - 1

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
DECIMAL = re.compile(r"^[0-9]{1,78}$")
SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
# The two routes a grant opens, matched at the end of a URL path (an endpoint may have a prefix).
PROTECTED = re.compile(r"/leases/([0-9]+)/rounds/[0-9]+/(?:pseudo-gradient|checkpoints/[0-9]+)$")
# A round's answer is public, but a request held for it (`?wait=`) takes one of the provider's
# waiting slots and a look-up every few milliseconds: only a reader with a grant may hold one.
ANSWER = re.compile(r"/leases/([0-9]+)/rounds/[0-9]+$")


@dataclass(frozen=True)
class ReadGrant:
    lease_id: int
    reader: str       # checksummed
    expiry: int       # unix seconds
    signature: str    # 0x + 130 hex

    def headers(self) -> dict[str, str]:
        return {HEADER_READER: self.reader, HEADER_EXPIRY: str(self.expiry),
                HEADER_SIGNATURE: self.signature}


def lease_of_path(path: str) -> int | None:
    """The lease id of a URL path that needs a grant, None for any other path."""
    match = PROTECTED.search(path)
    return int(match.group(1)) if match else None


def lease_of_request(path: str, query: str) -> int | None:
    """The lease id a request must carry a grant for: the two protected routes, and a round's
    answer asked for with `wait` (a long poll); None for any other request."""
    lease = lease_of_path(path)
    if lease is None and "wait" in parse_qs(query, keep_blank_values=True):
        match = ANSWER.search(path)
        lease = int(match.group(1)) if match else None
    return lease


def typed_data(chain_id: int, market: str, lease_id: int, reader: str, expiry: int) -> dict:
    return messages.read_grant_typed_data(chain_id, to_checksum_address(market), lease_id,
                                          to_checksum_address(reader), expiry)


def sign(account: LocalAccount, chain_id: int, market: str, lease_id: int,
         expiry: int) -> ReadGrant:
    """`account`'s grant to itself to read `lease_id`'s results until `expiry`."""
    typed = typed_data(chain_id, market, lease_id, account.address, expiry)
    return ReadGrant(lease_id, account.address, expiry, messages.sign(account, typed))


def missing_headers(headers: Mapping[str, str]) -> list[str]:
    """The grant headers absent from `headers` (names compared case-insensitively)."""
    present = {name.lower() for name in headers}
    return [name for name in HEADERS if name.lower() not in present]


def from_headers(headers: Mapping[str, str], lease_id: int) -> ReadGrant:
    """The grant the request's headers carry for `lease_id` (the lease its path names);
    raises ValueError naming the first missing or malformed header."""
    lower = {name.lower(): value for name, value in headers.items()}
    values = []
    for name, pattern, what in ((HEADER_READER, ADDRESS, "an address (0x + 40 hex)"),
                                (HEADER_EXPIRY, DECIMAL, "unix seconds (decimal digits)"),
                                (HEADER_SIGNATURE, SIGNATURE, "a signature (0x + 130 hex)")):
        value = lower.get(name.lower())
        if value is None:
            raise ValueError(f"missing header {name}")
        if not pattern.match(value):
            raise ValueError(f"header {name} must be {what}")
        values.append(value)
    reader, expiry, signature = values
    if int(expiry) > UINT256:
        raise ValueError(f"header {HEADER_EXPIRY} must be at most 2**256-1")
    return ReadGrant(lease_id, to_checksum_address(reader), int(expiry), signature)


def problem(grant: ReadGrant, chain_id: int, market: str, now: float) -> str | None:
    """What makes the grant void at unix time `now` (expired, too far ahead, not signed by its
    reader for this lease, chain and Market), or None when it holds. Whether its reader may
    read is the caller's decision."""
    if grant.expiry < now:
        return f"the read grant expired at {grant.expiry} (now {int(now)})"
    if grant.expiry > now + MAX_READ_GRANT_AHEAD_S:
        return (f"the read grant's expiry {grant.expiry} is more than "
                f"{MAX_READ_GRANT_AHEAD_S} s ahead")
    typed = typed_data(chain_id, market, grant.lease_id, grant.reader, grant.expiry)
    signer = messages.signer_or_none(typed, grant.signature)
    if signer is None or signer.lower() != grant.reader.lower():
        return (f"the read grant is signed by {signer}, not by its reader {grant.reader}, for "
                f"lease {grant.lease_id} on chain {chain_id} and Market {market}")
    return None
