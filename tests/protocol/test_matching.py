from tessera.chain.accounts import devnet_account
from tessera.protocol import messages
from tessera.protocol.matching import (
    OrderRequirements,
    ProviderOffer,
    judge_bid,
    rank,
)
from tessera.protocol.wire import BidMessage
from tessera.provider.pricing import decide_bid

MARKET = "0x" + "ab" * 20
ORDER = OrderRequirements(order_id=7, gpu_model="", min_gpus=1, min_gpu_memory_mb=1000,
                          max_price_per_gpu_hour=3_000_000)


def offer(index, floor=1_000_000, score=100, active=True, memory=4000, model="cpu-x86_64"):
    return ProviderOffer(devnet_account(index).address, active, model, 1, memory, score,
                         f"http://127.0.0.1:{9000 + index}", floor)


def signed_bid(index, price, order_id=7, expiry=10**10, chain_id=31337):
    account = devnet_account(index)
    typed = messages.bid_typed_data(chain_id, MARKET, order_id, account.address, price, 1, expiry)
    return BidMessage(order_id=order_id, provider=account.address, price_per_gpu_hour=price, nonce=1,
                      expiry=expiry, signature=messages.sign(account, typed))


def verdict(bid, provider_offer, now=1000):
    typed = messages.bid_typed_data(31337, MARKET, bid.order_id, bid.provider,
                                    bid.price_per_gpu_hour, bid.nonce, bid.expiry)
    return judge_bid(ORDER, bid, provider_offer, messages.recover(typed, bid.signature), now)


def test_cheapest_valid_bid_wins_ties_to_benchmark():
    a = verdict(signed_bid(2, 2_000_000), offer(2))
    b = verdict(signed_bid(3, 1_500_000), offer(3, score=10))
    c = verdict(signed_bid(4, 1_500_000), offer(4, score=500))
    assert [v.bid.provider for v in rank([a, b, c])] == [c.bid.provider, b.bid.provider,
                                                          a.bid.provider]


def test_invalid_bids_are_rejected_with_reasons():
    cases = {
        "expired": verdict(signed_bid(2, 1_000_000, expiry=10), offer(2)),
        "above": verdict(signed_bid(2, 4_000_000), offer(2)),
        "floor": verdict(signed_bid(2, 1_000_000), offer(2, floor=2_000_000)),
        "active": verdict(signed_bid(2, 1_000_000), offer(2, active=False)),
        "MB": verdict(signed_bid(2, 1_000_000), offer(2, memory=10)),
        "order 8": verdict(signed_bid(2, 1_000_000, order_id=8), offer(2)),
        "signature": verdict(signed_bid(2, 1_000_000, chain_id=1), offer(2)),
        "registered": verdict(signed_bid(2, 1_000_000), None),
    }
    for needle, v in cases.items():
        assert not v.valid
        assert any(needle in p for p in v.problems), (needle, v.problems)
    assert rank(list(cases.values())) == []


def test_forged_signature_does_not_recover_to_provider():
    bid = signed_bid(3, 1_000_000)
    forged = bid.model_copy(update={"provider": devnet_account(2).address})
    assert "signature does not recover to the provider" in verdict(forged, offer(2)).problems


def test_provider_policy_bids_floor_only_when_it_fits():
    assert decide_bid(ORDER, offer(2), 0, 1).price_per_gpu_hour == 1_000_000
    assert decide_bid(ORDER, offer(2, floor=5_000_000), 0, 1).price_per_gpu_hour is None
    assert decide_bid(ORDER, offer(2), 1, 1).price_per_gpu_hour is None
    assert "hardware" in decide_bid(ORDER, offer(2, memory=1), 0, 1).reason
