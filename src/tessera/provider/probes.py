"""Liveness probes from validators (docs/validators.md): a signed receipt for a registered
validator's own signed probe of this provider in the current epoch, in time; nothing signed
otherwise.

How a caller would get round it, and why it fails: naming a registered validator without its
key (the request must be signed by the validator it names: 403); replaying a validator's
request to another provider (the signature covers the provider: 400) or chain or Probes
deployment (the EIP-712 domain: the signer recovers to someone else, 403); holding a signed
request to use later (the deadline is its expiry, and one more than `MAX_PROBE_AHEAD_S` ahead
is refused: 400); sending the same request twice (its challenge is remembered until its
deadline: 409)."""

from __future__ import annotations

import threading
import time

from web3 import Web3

from tessera.errors import ChainError, Refused
from tessera.protocol import messages
from tessera.protocol.probes import (
    MAX_PROBE_AHEAD_S,
    ProbeReceipt,
    ProbeRequest,
    receipt_typed_data,
    request_signer,
)
from tessera.provider.context import NodeContext

# (provider, validator, challenge) answered -> its deadline; forgotten once the deadline passes.
# Only requests signed by a registered validator get here, each at most MAX_PROBE_AHEAD_S.
_answered: dict[tuple[str, str, str], int] = {}
_answered_lock = threading.Lock()


def answer_probe(ctx: NodeContext, request: ProbeRequest) -> ProbeReceipt:
    """Sign a ProbeReceipt for a registered validator's probe, signed by that validator and
    naming this provider, of the current epoch, whose deadline (unix seconds) has not passed
    and is at most MAX_PROBE_AHEAD_S ahead, once per challenge; refuse anything else without
    signing."""
    chain, probes, metric = ctx.chain, ctx.probes, ctx.metrics.probes
    now = time.time()
    if request.deadline <= now:
        metric.labels("late").inc()
        raise Refused(400, f"probe deadline {request.deadline} has passed")
    if request.deadline > now + MAX_PROBE_AHEAD_S:
        metric.labels("too-far-ahead").inc()
        raise Refused(400, f"probe deadline {request.deadline} is more than "
                           f"{MAX_PROBE_AHEAD_S} s ahead")
    if request.provider.lower() != ctx.address.lower():
        metric.labels("wrong-provider").inc()
        raise Refused(400, f"probe names provider {request.provider}, not {ctx.address}")
    validator = Web3.to_checksum_address(request.validator)
    signer = request_signer(request, chain.network.chain_id, probes.address)
    if signer is None or signer.lower() != validator.lower():
        metric.labels("bad-signature").inc()
        raise Refused(403, f"probe is signed by {signer}, not by the validator {validator}")
    try:
        epoch = probes.current_epoch()
        is_validator = ctx.validators.is_validator(validator)
    except ChainError as exc:
        raise Refused(503, f"cannot check the probe against the chain: {exc}") from None
    if request.epoch != epoch:
        metric.labels("wrong-epoch").inc()
        raise Refused(409, f"probe names epoch {request.epoch}; the current epoch is {epoch}")
    if not is_validator:
        metric.labels("not-validator").inc()
        raise Refused(403, f"{validator} is not a registered validator")
    key = (ctx.address.lower(), validator.lower(), request.challenge)
    with _answered_lock:
        for seen in [k for k, deadline in _answered.items() if deadline < now]:
            del _answered[seen]
        if key in _answered:
            metric.labels("replayed").inc()
            raise Refused(409, f"challenge {request.challenge} was already answered")
        _answered[key] = request.deadline
    typed = receipt_typed_data(chain.network.chain_id, probes.address, ctx.address,
                               validator, request.epoch, request.challenge, request.deadline)
    metric.labels("answered").inc()
    return ProbeReceipt(provider=ctx.address, validator=validator, epoch=request.epoch,
                        challenge=request.challenge, deadline=request.deadline,
                        signature=messages.sign(ctx.account, typed))
