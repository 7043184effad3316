"""Who may download a DiLoCo worker's round results and checkpoint states from this node
(`GET /leases/{id}/rounds/{r}/pseudo-gradient`, `.../checkpoints/{i}`): a reader signs a read
grant (tessera.protocol.read_grant); the lease's tenant may always read, a registered validator
only while a Verification challenge on that lease and round is open (it replays the challenged
segment to vote). Anyone else, copying a sibling worker's round included, is refused.

The round's answer (`GET /leases/{id}/rounds/{r}`: hashes and the signed commitment) stays
public: it reveals nothing that lets a worker skip the work."""

from __future__ import annotations

import time
from collections.abc import Mapping

from tessera.chain.verification import Verification
from tessera.errors import ChainError, NetworkError, Refused
from tessera.protocol import read_grant
from tessera.provider.context import NodeContext


def authorize_read(ctx: NodeContext, lease_id: int, round_index: int,
                   headers: Mapping[str, str]) -> str:
    """Who the reader is ("tenant", or "validator, challenge N") when the request's read grant
    lets it read `lease_id`'s round `round_index`; else Refused: 401 for missing grant headers,
    400 for malformed ones, 403 for a void grant (expired, too far ahead, signed by another key,
    for another lease, chain or Market) or a reader who may not read, 503 when the chain cannot
    be asked. The caller has checked the lease is this node's DiLoCo lease (404/409 first)."""
    record = ctx.state.lease(lease_id)
    if record is None:
        raise Refused(404, f"lease {lease_id} is unknown to this provider")
    missing = read_grant.missing_headers(headers)
    if missing:
        ctx.metrics.refused.labels("read-grant-missing").inc()
        raise Refused(401, f"reading lease {lease_id}'s round results needs a read grant: "
                           f"missing header {', '.join(missing)} (docs/verification.md)")
    try:
        grant = read_grant.from_headers(headers, lease_id)
    except ValueError as exc:
        ctx.metrics.refused.labels("read-grant-malformed").inc()
        raise Refused(400, str(exc)) from None
    void = read_grant.problem(grant, ctx.chain.network.chain_id, ctx.market.address, time.time())
    if void is not None:
        ctx.metrics.refused.labels("read-grant-void").inc()
        raise Refused(403, void)
    if grant.reader.lower() == record.tenant.lower():
        return "tenant"
    try:
        validator = ctx.validators.is_validator(grant.reader)
        challenge = Verification(ctx.chain).open_challenge_of(record.order_id, round_index,
                                                              lease_id) if validator else 0
    except (ChainError, NetworkError) as exc:
        raise Refused(503, f"cannot check the reader against the chain: {exc}") from None
    if not validator or challenge == 0:
        ctx.metrics.refused.labels("read-grant-reader").inc()
        raise Refused(403, f"{grant.reader} may not read lease {lease_id}'s round {round_index}: "
                           f"only its tenant {record.tenant} may, and a registered validator "
                           "while a challenge on that round is open")
    return f"validator, challenge {challenge}"
