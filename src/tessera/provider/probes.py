"""Liveness probes from validators (docs/validators.md): a signed receipt for a registered
validator's probe of the current epoch, in time; nothing signed otherwise."""

from __future__ import annotations

import time

from web3 import Web3

from tessera.errors import ChainError, Refused
from tessera.protocol import messages
from tessera.protocol.probes import ProbeReceipt, ProbeRequest, receipt_typed_data
from tessera.provider.context import NodeContext


def answer_probe(ctx: NodeContext, request: ProbeRequest) -> ProbeReceipt:
    """Sign a ProbeReceipt for a registered validator's probe of the current epoch whose
    deadline (unix seconds) has not passed; refuse anything else without signing."""
    chain, probes, metric = ctx.chain, ctx.probes, ctx.metrics.probes
    if request.deadline <= time.time():
        metric.labels("late").inc()
        raise Refused(400, f"probe deadline {request.deadline} has passed")
    validator = Web3.to_checksum_address(request.validator)
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
    typed = receipt_typed_data(chain.network.chain_id, probes.address, ctx.address,
                               validator, request.epoch, request.challenge, request.deadline)
    metric.labels("answered").inc()
    return ProbeReceipt(provider=ctx.address, validator=validator, epoch=request.epoch,
                        challenge=request.challenge, deadline=request.deadline,
                        signature=messages.sign(ctx.account, typed))
