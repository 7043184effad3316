"""The audit's money rules that bridged orders touch (pure parts): the home-token supply
(explorer/audit_supply.py: the token's supply against its own mint and burn logs, each bridge
receipt and send against its mint or burn in the same transaction, and what was minted outside
the bridge, shown but not a problem), and the holdings' claimant of a paid-for order."""

from __future__ import annotations

from tessera.explorer.audit_supply import supply_of
from tessera.protocol.events import EventRecord

ZERO = "0x" + "00" * 20
ALICE, BOB, BRIDGE = "0x" + "a1" * 20, "0x" + "b0" * 20, "0x" + "cc" * 20


def ev(tx: str, event: str, **args) -> EventRecord:
    return EventRecord(1, "0x", 0, tx, 0, "TokenBridge", event, args)


def mint(tx: str, to: str, value: int) -> EventRecord:
    return EventRecord(1, "0x", 0, tx, 1, "token", "Transfer",
                       {"sender": ZERO, "receiver": to, "value": value})


def burn(tx: str, owner: str, value: int) -> EventRecord:
    return EventRecord(1, "0x", 0, tx, 1, "token", "Transfer",
                       {"sender": owner, "receiver": ZERO, "value": value})


def check(bridge_events, mints, burns, supply):
    return supply_of(31337, "TUSD", "TokenBridge", bridge_events, mints, burns, supply)


def test_bridge_mints_and_burns_match_and_the_rest_is_outside_the_bridge():
    events = [ev("0x01", "TransferReceived", to=ALICE, amount=500),
              ev("0x02", "TransferSent", sender=ALICE, amount=200),
              ev("0x03", "TransferBounced", to=BOB, amount=50)]
    mints = [mint("0x00", BOB, 1_000),            # the deployer's faucet: outside the bridge
             mint("0x01", ALICE, 500), mint("0x03", BOB, 50)]
    burns = [burn("0x02", ALICE, 200)]
    s = check(events, mints, burns, 1_350)
    assert s.problems == []
    assert (s.minted, s.burned, s.bridged, s.outside_bridge) == (1_550, 200, 350, 1_000)
    assert (s.outside_minted, s.outside_burned) == (1_000, 0)


def test_a_holders_burn_does_not_hide_an_unbacked_mint():
    """Review 13: 300 minted outside the bridge and 300 bridged TUSD burned by their holder net
    to 0 outside the bridge; the split shows both."""
    events = [ev("0x01", "TransferReceived", to=ALICE, amount=300)]
    mints = [mint("0x01", ALICE, 300), mint("0x05", BOB, 300)]
    s = check(events, mints, [burn("0x06", ALICE, 300)], 300)
    assert s.problems == [] and s.outside_bridge == 0
    assert (s.outside_minted, s.outside_burned, s.bridged) == (300, 300, 300)


def test_a_bridge_receipt_without_its_mint_is_a_problem():
    events = [ev("0x01", "TransferReceived", to=ALICE, amount=500)]
    for mints in ([], [mint("0x01", ALICE, 499)], [mint("0x01", BOB, 500)], [mint("0x09", ALICE, 500)]):
        s = check(events, mints, [], sum(m.args["value"] for m in mints))
        assert len(s.problems) == 1 and "has no TUSD mint" in s.problems[0], mints
        assert s.bridged == 0


def test_one_mint_backs_one_receipt_only():
    events = [ev("0x01", "TransferReceived", to=ALICE, amount=5)] * 2
    s = check(events, [mint("0x01", ALICE, 5)], [], 5)
    assert len(s.problems) == 1 and s.bridged == 5


def test_a_send_without_its_burn_is_a_problem():
    s = check([ev("0x02", "TransferSent", sender=ALICE, amount=7)], [mint("0x00", ALICE, 7)], [], 7)
    assert len(s.problems) == 1 and "has no TUSD burn" in s.problems[0]


def test_supply_that_moved_without_a_log_is_a_problem():
    s = check([], [mint("0x00", ALICE, 10)], [], 11)
    assert len(s.problems) == 1 and "supply moved without a log" in s.problems[0]
    assert s.outside_bridge == 11


def test_a_paid_for_orders_deposit_is_claimed_by_its_payer():
    """Holdings (protocol/holdings.py): an order opened by `create_order_for` names its payer,
    not its tenant, as the one whose cancel refunds the deposit; a plain order its tenant."""
    from tessera.protocol.holdings import holdings

    market, payer, tenant = "0x" + "4d" * 20, "0x" + "9a" * 20, ALICE

    def rec(i, event, **args):
        return EventRecord(1, "0x", 0, f"0x{i:02x}", i, "Market", event, args)

    def created(i, oid):
        return rec(i, "OrderCreated", order_id=oid, tenant=tenant, deposit=300)

    def token_in(i):
        return EventRecord(1, "0x", 0, f"0x{i:02x}", 50 + i, "PaymentToken", "Transfer",
                           {"sender": payer, "receiver": market, "value": 300})

    records = [created(1, 1), rec(2, "OrderSponsored", order_id=1, tenant=tenant, payer=payer),
               token_in(1), created(3, 2), token_in(3)]
    [row] = [h for h in holdings(records, {"Market": market}) if h.token == "PaymentToken"]
    claims = {c.call: (c.party, c.address, c.amount) for c in row.claims}
    assert claims == {"Market.cancel_order(1)": ("payer", payer, 300),
                      "Market.cancel_order(2)": ("tenant", tenant, 300)}
