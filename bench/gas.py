"""Gas of a whole rental, gas of accepting a bid with 1, 10 and 100 bidders, gas of the uptime
penalties (claim_downtime for 1 and 10 missed epochs, report_outage), and the time from order
posted to lease active, all on a fresh local anvil chain in one run.

    .venv/bin/python bench/gas.py [--bidders 1,10,100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from eth_account import Account
from rich.console import Console
from rich.table import Table

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet, free_port
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.chain.uptime import Uptime
from tessera.protocol import messages
from tessera.protocol.matching import OrderRequirements, judge_bid, rank
from tessera.protocol.wire import BidMessage

RESULTS = Path(__file__).parent / "results" / "gas.json"
PRICE_CAP = 5_000_000  # 5 TUSD per GPU-hour
DURATION = 3600


def register_providers(network, count: int) -> list:
    """Fresh provider accounts, funded by the devnet deployer, each registered with stake."""
    funder = Chain(network, devnet_account(0))
    accounts = [Account.create() for _ in range(count)]
    for account in accounts:
        funder.send(funder.stake_token.functions.transfer(account.address, 1000 * 10**18))
        funder.w3.eth.wait_for_transaction_receipt(funder.w3.eth.send_transaction(
            {"from": funder.address, "to": account.address, "value": 10**18}))
    for i, account in enumerate(accounts):
        ProviderRegistry(Chain(network, account)).register(
            100 * 10**18, "cpu-x86_64", 1, 8192, 1000 + i, f"http://127.0.0.1:{10000 + i}",
            1_000_000 + i * 1000)
    return accounts


def signed_bids(network, market_address: str, order_id: int, providers: list) -> list[BidMessage]:
    expiry = int(time.time()) + 3600
    bids = []
    for i, account in enumerate(providers):
        price = 1_000_000 + i * 1000
        typed = messages.bid_typed_data(network.chain_id, market_address, order_id,
                                        account.address, price, order_id, expiry)
        bids.append(BidMessage(order_id=order_id, provider=account.address,
                               price_per_gpu_hour=price, nonce=order_id, expiry=expiry,
                               signature=messages.sign(account, typed)))
    return bids


def best_bid(market: Market, order_id: int, bids: list[BidMessage]) -> BidMessage:
    """What a tenant does off chain: verify every signature and offer, pick by the rule."""
    order = market.order(order_id)
    req = OrderRequirements(order_id, order.gpu_model, order.min_gpus, order.min_gpu_memory_mb,
                            order.max_price_per_gpu_hour)
    verdicts = []
    for b in bids:
        typed = messages.bid_typed_data(market.chain.network.chain_id, market.address,
                                        b.order_id, b.provider, b.price_per_gpu_hour, b.nonce,
                                        b.expiry)
        verdicts.append(judge_bid(req, b, market.registry.provider_offer(b.provider),
                                  messages.recover(typed, b.signature), int(time.time())))
    winner = rank(verdicts)[0].bid
    return next(b for b in bids if b.provider == winner.provider)


def post_order(market: Market) -> tuple[int, dict]:
    order_id, receipts = market.create_order(b"\x01" * 32, "", 1, 0, PRICE_CAP, DURATION, 1,
                                             PRICE_CAP * DURATION // 3600)
    return order_id, receipts[-1]


def advance(market: Market, seconds: int) -> None:
    market.chain.w3.provider.make_request("evm_increaseTime", [seconds])
    market.chain.w3.provider.make_request("evm_mine", [])


def measure_penalties(network, tenant: Market, providers: list) -> dict[str, tuple[int, str]]:
    """Receipts of claim_downtime (the lease's first claim of 1 epoch, a later one of 1 epoch,
    then one of 10, on a lease whose provider sends no heartbeats) and of report_outage
    (jail_after missed epochs), on the devnet's parameters."""
    uptime = Uptime(tenant.chain)
    length, jail_after = uptime.epoch_length(), uptime.jail_after()
    provider = providers[0]  # signed_bids prices a list's first provider at its floor
    order_id, _ = post_order(tenant)
    bid = signed_bids(network, tenant.address, order_id, [provider])[0]
    lease_id, _ = tenant.accept_bid(bid)
    advance(tenant, 14 * length)
    epochs = tenant.missed_epochs(tenant.lease(lease_id))
    claims = [tenant.claim_downtime(lease_id, part)
              for part in (epochs[:1], epochs[1:2], epochs[2:12])]
    gas_first, gas_later, gas_ten = (tenant.chain.w3.eth.get_transaction_receipt(c.tx)["gasUsed"]
                                     for c in claims)
    # A provider registered earlier and silent since: report its first jail_after whole epochs.
    reported = providers[-1]
    registered_at = tenant.registry.provider_record(reported.address)["registered_at"]
    genesis = uptime.genesis()
    first = -(-(registered_at - genesis) // length)
    now = uptime.current_epoch()
    if now - first > 2 * jail_after:  # the report must be recent: take the latest stretch
        first = now - jail_after
    elif now - first < jail_after:
        advance(tenant, (jail_after - (now - first)) * length)
    while not uptime.is_final(first + jail_after - 1):   # a report needs final epochs
        advance(tenant, length)
        if first < uptime.current_epoch() - 2 * jail_after:
            first += 1
    receipt, _ = uptime.report_outage(reported.address, first)
    return {"claim_downtime, 1 epoch, lease's first": (gas_first, "refund + stake slash, burned"),
            "claim_downtime, 1 epoch, later": (gas_later, "refund + stake slash, burned"),
            "claim_downtime, 10 epochs": (gas_ten,
                                          f"{(gas_ten - gas_later) / 9:,.0f} per extra epoch"),
            f"report_outage (jail_after = {jail_after})": (receipt["gasUsed"],
                                                           "jails through the registry")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bidders", default="1,10,100")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    counts = [int(n) for n in args.bidders.split(",")]
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    devnet = Devnet(home / "devnet")
    network = devnet.up(port=free_port())
    try:
        console.print(f"registering {max(counts)} providers on a fresh anvil ...")
        providers = register_providers(network, max(counts))
        tenant = Market(Chain(network, devnet_account(5)))
        tenant.payment_token.ensure_allowance(tenant.address, 10**30)

        accept_gas, select_s = {}, {}
        for n in counts:
            order_id, _ = post_order(tenant)
            bids = signed_bids(network, tenant.address, order_id, providers[:n])
            t0 = time.perf_counter()
            bid = best_bid(tenant, order_id, bids)
            select_s[n] = time.perf_counter() - t0
            lease_id, receipt = tenant.accept_bid(bid)
            accept_gas[n] = receipt["gasUsed"]
            # Close it, so that every measured accept finds the winner with no open lease: the
            # registry's hold on its stake then goes 0 -> 1 each time (a provider that already
            # has an open lease pays ~34,000 gas less), and only the bidder count varies.
            tenant.close_lease(lease_id)

        # One whole rental: order, accept, provider withdraws mid-lease, tenant closes.
        provider = providers[0]
        provider_market = Market(Chain(network, provider))
        order_id, order_receipt = post_order(tenant)
        bid = signed_bids(network, tenant.address, order_id, [provider])[0]
        lease_id, accept_receipt = tenant.accept_bid(bid)
        tenant.chain.w3.provider.make_request("evm_increaseTime", [600])
        tenant.chain.w3.provider.make_request("evm_mine", [])
        withdraw_receipt = provider_market.withdraw(lease_id)
        tenant.chain.w3.provider.make_request("evm_increaseTime", [600])
        close_receipt = tenant.close_lease(lease_id)
        rental = {"create_order": order_receipt["gasUsed"], "accept_bid": accept_receipt["gasUsed"],
                  "withdraw": withdraw_receipt["gasUsed"], "close_lease": close_receipt["gasUsed"]}
        rental["total"] = sum(rental.values())
        penalties = measure_penalties(network, tenant, providers)

        # Order posted -> lease active, with bids already signed (no bid window): chain latency.
        latencies = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            order_id, _ = post_order(tenant)
            bids = signed_bids(network, tenant.address, order_id, providers[:10])
            tenant.accept_bid(best_bid(tenant, order_id, bids))
            latencies.append(time.perf_counter() - t0)
    finally:
        devnet.down()

    table = Table(title="gas on anvil (accept with N bidders: goal = same gas for every N)")
    table.add_column("measure")
    table.add_column("gas", justify="right")
    table.add_column("note")
    for n in counts:
        table.add_row(f"accept_bid, {n} bidders", f"{accept_gas[n]:,}",
                      f"off-chain selection {select_s[n] * 1000:.0f} ms")
    for step, gas in rental.items():
        table.add_row(f"rental: {step}", f"{gas:,}", "register not counted; approve not counted")
    for step, (gas, note) in penalties.items():
        table.add_row(step, f"{gas:,}", note)
    table.add_row("order posted -> lease active", "",
                  f"median {statistics.median(latencies) * 1000:.0f} ms over {len(latencies)} "
                  "(10 signed bids, automine)")
    console.print(table)
    ratio = max(accept_gas.values()) / min(accept_gas.values())
    console.print(f"accept gas max/min over bidder counts: {ratio:.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "accept_gas_by_bidders": accept_gas, "offchain_selection_s": select_s,
        "rental_gas": rental, "order_to_lease_s": latencies,
        "penalty_gas": {step: gas for step, (gas, _) in penalties.items()},
        "order_to_lease_median_s": statistics.median(latencies), "accept_gas_ratio": ratio,
    }, indent=2))
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
