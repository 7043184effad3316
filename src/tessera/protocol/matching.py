"""Choosing among bids: the rule a tenant applies, written down so it can be shown."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from tessera.protocol.wire import BidMessage

SELECTION_RULE = (
    "cheapest valid bid; a bid is valid if its signature recovers to the bidding provider, it has "
    "not expired, its price is within the order's maximum and at or above the provider's floor, "
    "and the provider is active (staked, not jailed) with hardware that meets the order and a "
    "plain http(s) endpoint; ties go to the higher benchmark score, then the lower address"
)

MAX_ENDPOINT_CHARS = 512
# A provider's endpoint as clients append paths to it: a scheme, a host (a name, an IPv4 or a
# bracketed IPv6 literal), an optional port and path, and nothing else. No query, fragment, user
# info, percent-escape, backslash or space: the registry takes any string, and an endpoint
# ending in `?x=` turned the path a client appended into a query, so that the tenant signed a
# read grant for the lease the endpoint named, another worker's (review 15).
ENDPOINT = re.compile(r"https?://(?:([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?)|\[([0-9A-Fa-f:.]+)\])"
                      r"(?::([0-9]{1,5}))?(?:/[A-Za-z0-9._~/-]*)?")


def endpoint_problem(endpoint: str) -> str | None:
    """Why a provider's (or validator's) registered endpoint is not one a client may call
    (None: it may)."""
    if not endpoint:
        return "no endpoint published"
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        return f"endpoint longer than {MAX_ENDPOINT_CHARS} characters"
    match = ENDPOINT.fullmatch(endpoint)   # the whole string: `$` would let a final newline by
    bracketed = match and match.group(2)
    if match and bracketed:
        try:
            ipaddress.IPv6Address(bracketed)
        except ValueError:
            match = None
    if match and match.group(3) is not None and not 0 < int(match.group(3)) < 65536:
        match = None
    if not match:
        return ("endpoint is not a plain http(s) URL (scheme, host, port, path; no query, "
                "fragment, user info or escapes)")
    return None


@dataclass(frozen=True)
class ProviderOffer:
    """What the registry says about a provider."""

    address: str
    active: bool
    gpu_model: str
    gpu_count: int
    gpu_memory_mb: int
    benchmark_score: int
    endpoint: str
    price_floor: int


@dataclass(frozen=True)
class OrderRequirements:
    order_id: int
    gpu_model: str
    min_gpus: int
    min_gpu_memory_mb: int
    max_price_per_gpu_hour: int


@dataclass
class BidVerdict:
    bid: BidMessage
    offer: ProviderOffer | None
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


def provider_active(stake: int, min_stake: int, jailed_until: int, now: int) -> bool:
    """ProviderRegistry._is_active on a provider's stake and jail: stake at least the minimum
    (and above zero) and not jailed at `now` (a block's time)."""
    return stake >= min_stake and stake > 0 and now >= jailed_until


def can_match(order: OrderRequirements, offer: ProviderOffer) -> bool:
    """Whether a bid from this provider could be valid for the order (what judge_bid checks of
    the offer: active, hardware that fits, a floor at or below the order's maximum), so that
    a tenant asks only those providers."""
    return (offer.active and offer.price_floor <= order.max_price_per_gpu_hour
            and not hardware_problems(order, offer))


def hardware_problems(order: OrderRequirements, offer: ProviderOffer) -> list[str]:
    problems = []
    if offer.gpu_count < order.min_gpus:
        problems.append(f"has {offer.gpu_count} devices, order needs {order.min_gpus}")
    if offer.gpu_memory_mb < order.min_gpu_memory_mb:
        problems.append(f"has {offer.gpu_memory_mb} MB, order needs {order.min_gpu_memory_mb} MB")
    if order.gpu_model and offer.gpu_model != order.gpu_model:
        problems.append(f"device {offer.gpu_model!r} is not {order.gpu_model!r}")
    return problems


def judge_bid(order: OrderRequirements, bid: BidMessage, offer: ProviderOffer | None,
              signer: str | None, now: int) -> BidVerdict:
    verdict = BidVerdict(bid, offer)
    problems = verdict.problems
    if bid.order_id != order.order_id:
        problems.append(f"bid is for order {bid.order_id}")
    if signer is None or signer.lower() != bid.provider.lower():
        problems.append("signature does not recover to the provider")
    if bid.expiry < now:
        problems.append("bid expired")
    if bid.price_per_gpu_hour > order.max_price_per_gpu_hour:
        problems.append("price above the order's maximum")
    if offer is None:
        problems.append("provider is not registered")
        return verdict
    if not offer.active:
        problems.append("provider is not active (stake, jail)")
    if bid.price_per_gpu_hour < offer.price_floor:
        problems.append("price below the provider's registered floor")
    problems.extend(hardware_problems(order, offer))
    endpoint = endpoint_problem(offer.endpoint)
    if endpoint:
        problems.append(endpoint)
    return verdict


def rank(verdicts: list[BidVerdict]) -> list[BidVerdict]:
    """Valid bids, best first, by SELECTION_RULE."""
    valid = [v for v in verdicts if v.valid]
    return sorted(valid, key=lambda v: (v.bid.price_per_gpu_hour,
                                        -(v.offer.benchmark_score if v.offer else 0),
                                        v.bid.provider.lower()))
