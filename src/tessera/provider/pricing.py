"""The provider's bidding policy: whether to bid on an order, and at what price."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.protocol.matching import OrderRequirements, ProviderOffer, hardware_problems


@dataclass(frozen=True)
class BidDecision:
    price_per_gpu_hour: int | None
    reason: str


def decide_bid(order: OrderRequirements, offer: ProviderOffer, active_leases: int,
               max_concurrent_leases: int) -> BidDecision:
    """Bid the registered floor when the order fits and there is spare capacity.

    Bidding the floor is what a reverse auction rewards: the tenant takes the cheapest valid bid,
    and the floor is by definition the least this provider will work for.
    """
    problems = hardware_problems(order, offer)
    if problems:
        return BidDecision(None, "hardware does not fit: " + "; ".join(problems))
    if offer.price_floor > order.max_price_per_gpu_hour:
        return BidDecision(None, "order's maximum price is below this provider's floor")
    if active_leases >= max_concurrent_leases:
        return BidDecision(None, f"at capacity ({active_leases} active lease(s))")
    if not offer.active:
        return BidDecision(None, "provider is not active on chain")
    return BidDecision(offer.price_floor, "bid the floor price")
