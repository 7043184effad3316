"""The provider's offer on chain: registered with its stake on first start, updated when the
listing tenants see (hardware, endpoint, price floor) changes."""

from __future__ import annotations

from tessera.chain.client import tx_hash
from tessera.errors import ChainError
from tessera.protocol.matching import ProviderOffer
from tessera.provider.context import NodeContext
from tessera.provider.hardware import Hardware


def _listing(offer: ProviderOffer) -> tuple:
    """The parts of an offer that matter to tenants (the benchmark varies run to run)."""
    return (offer.gpu_model, offer.gpu_count, offer.gpu_memory_mb, offer.endpoint,
            offer.price_floor)


def register_or_update_offer(ctx: NodeContext, hw: Hardware) -> None:
    """Register with the configured stake if new; update the offer if its listing changed."""
    cfg = ctx.config
    wanted = ProviderOffer(ctx.address, True, hw.gpu_model, hw.gpu_count, hw.gpu_memory_mb,
                           hw.benchmark_score, cfg.provider.endpoint,
                           cfg.pricing.price_per_gpu_hour)
    offer_args = (wanted.gpu_model, wanted.gpu_count, wanted.gpu_memory_mb,
                  wanted.benchmark_score, wanted.endpoint, wanted.price_floor)
    current = ctx.market.registry.provider_offer(ctx.address)
    if current is None:
        receipt = ctx.market.registry.register(cfg.provider.stake_base_units, *offer_args)
        ctx.log("registered", tx=tx_hash(receipt), stake=cfg.provider.stake_base_units)
    elif _listing(current) != _listing(wanted):
        receipt = ctx.market.registry.update_offer(*offer_args)
        ctx.log("offer-updated", tx=tx_hash(receipt))


def registered_offer(ctx: NodeContext) -> ProviderOffer:
    offer = ctx.market.registry.provider_offer(ctx.address)
    if offer is None:
        raise ChainError("this provider is not registered")
    return offer
