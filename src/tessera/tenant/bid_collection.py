"""Collecting the bids for an order: ask, all at once, only the providers whose registered offer
can match it, each with its own deadline, and finish within the order's bid window however
many of them are dead or slow (issue 15).

- Whom: the tenant's offer index (tenant/offer_index.py: the registry's events since the last
  rental, not 3N+1 calls) gives the active providers whose hardware fits and whose floor is at
  or below the order's maximum; no one else could make a valid bid.
- How: one asyncio loop, at most `max_in_flight` requests at once, each bounded in all (connect,
  headers and a body of at most MAX_BID_BYTES) by a per-provider deadline: a third of the window,
  between 1 and 2 s. A provider is asked at most twice for an order: after a refusal or a failed
  connection it is asked once more, a quarter of the window later (up to 1 s), since a 404 may
  only mean it has not seen the order yet; one that let its deadline pass is not asked again.
  The collection ends when every candidate has answered or given up, and in any case at the
  window's end.
- Checks: each bid is judged by protocol/matching.py's rule against the indexed offer
  (signature, expiry, price, active, hardware); the signatures, the costly part, are recovered
  while the slow providers are still waited for (in the lulls, never during a burst of
  answers). Then the best valid bids, as many as the order has nodes and more while some
  fail, are judged again against the registry's own record, so that what the tenant accepts
  never rests on the index alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from web3 import Web3

from tessera.chain.market import Market
from tessera.protocol import messages
from tessera.protocol.matching import (
    BidVerdict,
    OrderRequirements,
    ProviderOffer,
    can_match,
    judge_bid,
    rank,
)
from tessera.protocol.wire import BidMessage
from tessera.tenant.offer_index import OfferIndex

MAX_BID_BYTES = 16_384       # a bid is a few hundred bytes; more is not read
MAX_IN_FLIGHT = 256
STRIKES = 2                  # answers without a bid before a provider is not asked again
LULL_S = 0.05                # no request started or ended for this long: recover signatures


def per_provider_s(window_s: float) -> float:
    """One request's deadline: a third of the window, between 1 and 2 s."""
    return min(2.0, max(1.0, window_s / 3))


def retry_after_s(window_s: float) -> float:
    """The pause before a provider without a bid is asked again: a quarter of the window, at
    most 1 s."""
    return min(1.0, window_s / 4)


@dataclass
class Gathered:
    """What asking the candidates brought: their bids, and why the others gave none."""

    bids: dict[str, BidMessage] = field(default_factory=dict)          # address -> bid
    signers: dict[str, str | None] = field(default_factory=dict)       # address -> recovered
    failures: dict[str, list[str]] = field(default_factory=dict)       # address -> reasons
    asked: int = 0
    requests: int = 0
    seconds: float = 0.0


async def _ask_once(session: aiohttp.ClientSession, url: str) -> BidMessage | str:
    """The provider's bid, or why there is none (a word for the tenant's log)."""
    async with session.get(url, allow_redirects=False) as response:
        if response.status != 200:
            return f"HTTP {response.status}"
        body = b""
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > MAX_BID_BYTES:
                return f"answer over {MAX_BID_BYTES} bytes"
    try:
        return BidMessage.model_validate_json(body)
    except ValueError:
        return "answer is not a bid"


def bid_signer(chain_id: int, market: str, bid: BidMessage) -> str | None:
    """Who signed the bid (EIP-712, protocol/messages.py), or None for an unusable signature
    or values no signature can cover (a number past uint256)."""
    try:
        typed = messages.bid_typed_data(chain_id, market, bid.order_id, bid.provider,
                                        bid.price_per_gpu_hour, bid.nonce, bid.expiry)
    except Exception:   # eth-abi refuses out-of-range values with several exception types
        return None
    return messages.signer_or_none(typed, bid.signature)


async def _gather(targets: dict[str, str], order_id: int, window_s: float, max_in_flight: int,
                  recover: Callable[[BidMessage], str | None] | None) -> Gathered:
    out = Gathered(asked=len(targets))
    arrived: deque[str] = deque()
    start = time.monotonic()
    last_io = [start]       # when a request last started or ended
    deadline = start + window_s
    timeout, pause = per_provider_s(window_s), retry_after_s(window_s)
    gate = asyncio.Semaphore(max_in_flight)

    async def ask(session: aiohttp.ClientSession, address: str, endpoint: str) -> None:
        url = f"{endpoint.rstrip('/')}/orders/{order_id}/bid"
        reasons = out.failures.setdefault(address, [])
        while len(reasons) < STRIKES:
            left = deadline - time.monotonic()
            if left <= 0.05:
                reasons.append("the bid window closed")
                return
            async with gate:
                out.requests += 1
                last_io[0] = time.monotonic()
                try:
                    answer = await asyncio.wait_for(_ask_once(session, url), min(timeout, left))
                except TimeoutError:
                    reasons.append(f"no answer within {min(timeout, left):.2f} s")
                    return   # its deadline spent: not asked again
                except Exception as exc:   # whatever a bad endpoint does, it only loses its bid
                    answer = type(exc).__name__
                finally:
                    last_io[0] = time.monotonic()
            if isinstance(answer, BidMessage) and answer.provider.lower() != address.lower():
                answer = "the bid names another provider"
            if isinstance(answer, BidMessage):
                out.bids[address] = answer
                del out.failures[address]
                arrived.append(address)
                return
            reasons.append(answer)
            if len(reasons) < STRIKES:
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    async def check() -> None:
        """Recover signatures while the slow providers are waited for, when the CPU is idle:
        only after LULL_S without a request starting or ending (never during the burst of
        answers: a recovery holds the loop, up to 8 ms without coincurve), one bid at a time."""
        while True:
            if arrived and time.monotonic() - last_io[0] >= LULL_S:
                address = arrived.popleft()
                out.signers[address] = recover(out.bids[address])
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(LULL_S)

    checker = asyncio.create_task(check()) if recover is not None else None
    # aiohttp, not httpx: a third of the CPU per request (httpx's pool also rescans all its
    # connections on every request), which is what a collection from many providers costs.
    connector = aiohttp.TCPConnector(limit=max_in_flight, force_close=True)
    async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=timeout + 1)) as session:
        tasks = [asyncio.create_task(ask(session, a, e)) for a, e in targets.items()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    if checker is not None:
        checker.cancel()
        await asyncio.gather(checker, return_exceptions=True)
    for reasons in out.failures.values():
        if not reasons:
            reasons.append("the bid window closed")
    out.seconds = time.monotonic() - start
    return out


def gather_bids(targets: dict[str, str], order_id: int, window_s: float, *,
                max_in_flight: int = MAX_IN_FLIGHT,
                recover: Callable[[BidMessage], str | None] | None = None) -> Gathered:
    """Ask every `targets` endpoint (address -> endpoint) for its bid on `order_id`, concurrently,
    within `window_s` seconds; `recover(bid)`, when given, runs on the bids as they arrive (into
    `signers`). Runs its own event loop (in a thread of its own when the caller is inside one
    already)."""
    job = _gather(targets, order_id, window_s, max_in_flight, recover)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(job)
    box: list = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(job)), daemon=True)
    thread.start()
    thread.join()
    return box[0]


def judge_all(chain_id: int, market: str, order: OrderRequirements, bids: dict[str, BidMessage],
              offers: dict[str, ProviderOffer], now: int,
              signers: dict[str, str | None] | None = None) -> list[BidVerdict]:
    """Every bid judged against `offers` (protocol/matching.py); `signers`: signatures already
    recovered (by `bid_signer`), by address asked."""
    verdicts = []
    signers = signers or {}
    for address, bid in bids.items():
        signer = signers[address] if address in signers else bid_signer(chain_id, market, bid)
        try:
            provider = Web3.to_checksum_address(bid.provider)
        except ValueError:
            provider = bid.provider
        bid = bid.model_copy(update={"provider": provider})
        verdicts.append(judge_bid(order, bid, offers.get(provider), signer, now))
    return verdicts


def confirm_best(verdicts: list[BidVerdict], order: OrderRequirements, nodes: int,
                 read_offer: Callable[[str], ProviderOffer | None], now: int) -> int:
    """Judge the best valid bids again against the registry (`read_offer`), best first, until
    `nodes` of them hold or none is left; verdicts are replaced in place. The registry reads."""
    reads, confirmed = 0, 0
    index = {id(v): i for i, v in enumerate(verdicts)}
    for verdict in rank(verdicts):
        if confirmed >= nodes:
            break
        offer = read_offer(verdict.bid.provider)
        reads += 1
        # the signature was checked by judge_all: it recovered to the provider
        again = judge_bid(order, verdict.bid, offer, verdict.bid.provider, now)
        verdicts[index[id(verdict)]] = again
        confirmed += again.valid
    return reads


def collect_bids(market: Market, order_id: int, window_s: float, *,
                 offer_index: OfferIndex | None = None,
                 emit: Callable[[str, dict], None] | None = None) -> list[BidVerdict]:
    """Ask the providers that can take the order for their bids, within `window_s` seconds
    from now, and judge them (module docstring)."""
    started = time.monotonic()
    chain = market.chain
    order = market.order(order_id)
    requirements = OrderRequirements(order_id, order.gpu_model, order.min_gpus,
                                     order.min_gpu_memory_mb, order.max_price_per_gpu_hour)
    index = offer_index or OfferIndex(chain)
    offers = index.offers()
    targets = {a: o.endpoint for a, o in offers.items() if can_match(requirements, o)}
    indexed = time.monotonic()
    chain_id = chain.network.chain_id
    gathered = gather_bids(targets, order_id, max(0.0, window_s - (indexed - started)),
                           recover=lambda bid: bid_signer(chain_id, market.address, bid))
    now = int(time.time())
    verdicts = judge_all(chain_id, market.address, requirements, gathered.bids, offers, now,
                         gathered.signers)
    judged = time.monotonic()
    reads = confirm_best(verdicts, requirements, order.nodes, market.registry.provider_offer, now)
    if emit is not None:
        done = time.monotonic()
        emit("bids-collected", {
            "order_id": order_id, "count": len(verdicts), "providers_asked": len(targets),
            "providers_indexed": len(offers), "requests": gathered.requests,
            "without_bid": len(gathered.failures), "registry_reads": reads,
            "signatures_during_gather": len(gathered.signers),
            "index_events_read": index.events_read, "seconds": round(done - started, 3),
            "index_s": round(indexed - started, 3), "gather_s": round(gathered.seconds, 3),
            "judge_s": round(judged - indexed - gathered.seconds, 3),
            "confirm_s": round(done - judged, 3)})
    return verdicts
