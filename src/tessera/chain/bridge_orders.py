"""BridgeOrders.vy: a Market order funded from a peer chain in one message (docs/bridge.md, "An
order funded in one message"). The tenant's side is `fund_order` on the peer chain (a
`TokenBridge.send_call` to the home chain's BridgeOrders with the order's terms); once the
relayer delivers it, `funded_order` names the order opened for the tenant; `fund_top_up` adds to
a lease of that order the same way (`topped_up` waits for it). The order's refunds
collect in BridgeOrders, and anyone sends them back to the sender's chain (`send_back`; the
relayer does it as a duty) or the sender takes them at home (`claim_here`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.client import Chain
from tessera.chain.contract import ZERO_ADDRESS, ContractWrapper
from tessera.chain.market import Market
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.tokens import PaymentToken
from tessera.errors import BridgeError, TxRefused
from tessera.protocol.bridge import (
    OrderTerms,
    cancel_call_data,
    claim_call_data,
    order_call_data,
    top_up_call_data,
)
from tessera.protocol.lease import order_deposit


@dataclass(frozen=True)
class Funding:
    """A deposit that came over the bridge, as BridgeOrders records it."""
    sender: str          # on source_chain; every refund goes back to it
    source_chain: int
    amount: int
    order_id: int        # 0: no order was opened or topped up (the whole amount is owed back)
    returned: int
    added_to: bytes      # a top-up: the funding of the order it added to (else 32 zero bytes)


def fund_order(peer: Chain, home: Chain, terms: OrderTerms,
               deposit: int) -> tuple[bytes, list[TxReceipt]]:
    """On the peer chain: send `deposit` to the home chain's BridgeOrders with the order's
    terms, which opens the order on delivery. Refuses here what would not open the order at
    once (review 12): a deposit below the order's worst case (the Market would refuse it, and it
    would come back only after two more crossings), or one the home inbox would hold for its
    delay (over the route's large-transfer threshold) or could not take now (over what its
    bucket has left). Returns the TokenBridge message id (it names the funding)."""
    least = order_deposit(terms.max_price_per_gpu_hour, terms.min_gpus, terms.nodes, terms.duration)
    if deposit < least:
        raise ValueError(f"the deposit {deposit} is below the order's worst case {least} "
                         "(max price x GPUs x nodes x duration / 3600)")
    _check_route(peer, home, deposit, "the order opens")
    return TokenBridge(peer).send_call(home.network.chain_id, BridgeOrders(home).address, deposit,
                                       order_call_data(terms))


def fund_top_up(peer: Chain, home: Chain, lease_id: int,
                amount: int) -> tuple[bytes, list[TxReceipt]]:
    """On the peer chain: send `amount` to the home chain's BridgeOrders to top up lease
    `lease_id`, a lease of an order this account paid for from this chain (BridgeOrders refuses
    any other, and the amount is then owed back whole: refused here first). What is left of it
    at the lease's close comes back with the order's refunds. Returns the TokenBridge message id."""
    if amount <= 0:
        raise ValueError("a top-up must be above zero")
    orders = BridgeOrders(home)
    lease = Market(home).lease(lease_id)
    funding_id = orders.funding_of(lease.order_id) if lease.order_id else bytes(32)
    if funding_id == bytes(32):
        raise BridgeError(f"lease {lease_id}'s order was not funded through BridgeOrders on chain "
                          f"{home.network.chain_id}: top it up at home (tessera job top-up)")
    _senders_own(peer, orders.funding(funding_id), f"lease {lease_id}'s order was funded",
                 "tops it up")
    _check_route(peer, home, amount, "the lease is topped up")
    return TokenBridge(peer).send_call(home.network.chain_id, orders.address, amount,
                                       top_up_call_data(lease_id))


CANCEL_CARRIER = 1   # base units a cancel or claim message carries (a transfer moves something)


def fund_cancel(peer: Chain, home: Chain, funding_id: bytes) -> tuple[bytes, list[TxReceipt]]:
    """On the peer chain: send BridgeOrders a message that cancels the order funding
    `funding_id` opened, as `cancel_order` does at home (for a sender with no gas there, and
    the one way for a sender that is a contract). Refused here first when BridgeOrders would
    refuse it: the funding is not this account's from this chain, opened no order, or the order
    is already closed. The message's own CANCEL_CARRIER base units are owed back. Returns the
    TokenBridge message id."""
    orders = BridgeOrders(home)
    funding = orders.funding(funding_id)
    _senders_own(peer, funding, f"deposit 0x{bytes(funding_id).hex()} was sent",
                 "cancels its order")
    if funding.order_id == 0 or funding.added_to != bytes(32):
        raise BridgeError(f"deposit 0x{bytes(funding_id).hex()} opened no order: nothing to cancel")
    if not Market(home).order(funding.order_id).open:
        raise BridgeError(f"order {funding.order_id} is already closed")
    _check_route(peer, home, CANCEL_CARRIER, "the order is cancelled")
    return TokenBridge(peer).send_call(home.network.chain_id, orders.address, CANCEL_CARRIER,
                                       cancel_call_data(funding_id))


def fund_claim(peer: Chain, home: Chain, funding_id: bytes,
               to: str) -> tuple[bytes, list[TxReceipt]]:
    """On the peer chain: send BridgeOrders a message that pays what funding `funding_id` is
    owed to `to` on the home chain, as `claim_here` does there (for a sender with no gas there,
    and the one way for a sender that is a contract when the route back takes nothing). Refused
    here first when the funding is not this account's from this chain or nothing is owed. The
    message's own CANCEL_CARRIER base units are owed back. Returns the TokenBridge message id."""
    orders = BridgeOrders(home)
    _senders_own(peer, orders.funding(funding_id), f"deposit 0x{bytes(funding_id).hex()} was sent",
                 "claims it")
    if orders.owed(funding_id) == 0:
        raise BridgeError(f"deposit 0x{bytes(funding_id).hex()} is owed nothing now")
    _check_route(peer, home, CANCEL_CARRIER, "the claim is paid")
    return TokenBridge(peer).send_call(home.network.chain_id, orders.address, CANCEL_CARRIER,
                                       claim_call_data(funding_id, Web3.to_checksum_address(to)))


def _senders_own(peer: Chain, funding: Funding, what: str, does: str) -> None:
    """Refuse, before anything is sent, a message BridgeOrders would refuse because `funding`
    is not this account's from this chain (BridgeOrders checks the message's sender and chain)."""
    if (funding.sender.lower(), funding.source_chain) != (peer.address.lower(),
                                                          peer.network.chain_id):
        raise BridgeError(f"{what} by {funding.sender} from chain {funding.source_chain}: only "
                          f"that sender {does}, from there")


def _check_route(peer: Chain, home: Chain, amount: int, then: str) -> None:
    """Refuse an amount the home inbox would hold for its delay (over the route's large-transfer
    threshold) or could not take now (over what its bucket has left)."""
    source, here = peer.network.chain_id, home.network.chain_id
    sender, inbox = TokenBridge(peer).address, BridgeInbox(home)
    fmt = PaymentToken(peer).format
    held_over = inbox.large_threshold(source, sender)
    if amount > held_over:
        raise BridgeError(f"a deposit of {fmt(amount)} is over the {fmt(held_over)} that chain "
                          f"{here}'s inbox delivers at once from chain {source}: it would be held "
                          f"{inbox.delay()} s before {then}. Bridge the TUSD first "
                          "(tessera bridge send) and pay at home")
    room = inbox.available(source, sender)
    if amount > room:
        raise BridgeError(f"chain {here}'s inbox takes {fmt(room)} from chain {source} now (its "
                          f"bucket refills over time): a deposit of {fmt(amount)} would wait; "
                          "try again later or with less")


class BridgeOrders(ContractWrapper):
    NAME = "BridgeOrders"

    def funding(self, message_id: bytes) -> Funding:
        record = self._struct("fundings", bytes(message_id))
        if record["sender"] == ZERO_ADDRESS:
            raise BridgeError(f"no funding 0x{bytes(message_id).hex()} has arrived at BridgeOrders "
                              f"on chain {self.chain.network.chain_id}")
        return Funding(**{**{k: record[k] for k in Funding.__dataclass_fields__},
                          "added_to": bytes(record["added_to"])})

    def arrived(self, message_id: bytes) -> bool:
        """Whether the funding `message_id` has been delivered here (whatever it did then)."""
        return self._struct("fundings", bytes(message_id))["sender"] != ZERO_ADDRESS

    def funding_of(self, order_id: int) -> bytes:
        """The funding that opened order `order_id` (32 zero bytes: none)."""
        return bytes(self._call("funding_of", order_id))

    def owed(self, message_id: bytes) -> int:
        """What the funding's sender is owed now (base units)."""
        return self._call("owed", bytes(message_id))

    def funded_order(self, message_id: bytes, timeout_s: float = 60.0, poll_s: float = 0.5) -> int:
        """The order opened by the funding `message_id`, waiting up to `timeout_s` for its
        delivery. Raises BridgeError if it arrived and the Market refused the terms (the deposit
        is then owed back), or if it has not arrived in time (saying what happens when it does,
        and how to cancel)."""
        mid = "0x" + bytes(message_id).hex()
        return self._delivered_order(
            message_id, timeout_s, poll_s,
            refused=f"the deposit {mid} arrived but the Market refused its order",
            late=f"the deposit {mid} has not been delivered to chain {self.chain.network.chain_id} "
                 f"after {timeout_s:.0f} s: is a relayer running (tessera bridge relay)? When it "
                 f"is delivered it opens your order there: `tessera bridge order-status {mid}` "
                 f"shows it, and `tessera bridge order-cancel {mid}` cancels the order (its "
                 f"deposit comes back)")

    def topped_up(self, message_id: bytes, timeout_s: float = 60.0, poll_s: float = 0.5) -> int:
        """The order whose lease the top-up `message_id` added to, waiting up to `timeout_s` for
        its delivery; BridgeError if BridgeOrders refused it (then owed back whole) or it has
        not arrived in time."""
        mid = "0x" + bytes(message_id).hex()
        return self._delivered_order(
            message_id, timeout_s, poll_s,
            refused=f"the top-up {mid} arrived but was refused (the lease closed or ran out "
                    f"meanwhile)",
            late=f"the top-up {mid} has not been delivered to chain {self.chain.network.chain_id} "
                 f"after {timeout_s:.0f} s: is a relayer running (tessera bridge relay)? When it "
                 f"is delivered it tops up the lease (or, if the lease has ended, is owed back: "
                 f"`tessera bridge order-status {mid}`)")

    def _delivered_order(self, message_id: bytes, timeout_s: float, poll_s: float, *,
                         refused: str, late: str) -> int:
        """The order id a funding's delivery recorded, polled for up to `timeout_s`;
        BridgeError(`refused` + what is owed back) if it recorded none, BridgeError(`late`) if
        it has not been delivered by then."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self._struct("fundings", bytes(message_id))
            if record["sender"] != ZERO_ADDRESS:
                if record["order_id"] == 0:
                    raise BridgeError(f"{refused}: {record['amount']} base units are owed back "
                                      f"to {record['sender']} on chain {record['source_chain']} "
                                      "(send_back)")
                return record["order_id"]
            if time.monotonic() >= deadline:
                raise BridgeError(late)
            time.sleep(poll_s)

    def _act(self, function: str, *args) -> TxReceipt:
        """Send `function`; a refusal becomes a BridgeError naming it."""
        try:
            return self._send(function, *args)
        except TxRefused as exc:
            raise BridgeError(f"BridgeOrders.{function}: {exc}") from None

    def send_back(self, message_id: bytes) -> tuple[bytes, TxReceipt]:
        """Send what the funding's sender is owed back to its chain (anyone may). Returns the
        TokenBridge message id carrying it and the receipt."""
        receipt = self._act("send_back", bytes(message_id))
        return bytes(self._event(receipt, "Returned")["transfer_id"]), receipt

    def claim_here(self, message_id: bytes, to: str | None = None) -> TxReceipt:
        """The sender takes what it is owed on this chain (`to`: itself by default)."""
        return self._act("claim_here", bytes(message_id),
                         Web3.to_checksum_address(to or self.chain.address))

    def sent_back(self, transfer_id: bytes) -> dict:
        """The send-back `transfer_id`: {message_id, amount} (amount 0: none, or recovered)."""
        return self._struct("sent_back", bytes(transfer_id))

    def recover_bounce(self, transfer_id: bytes) -> TxReceipt:
        """A send-back the peer chain cancelled (its bounce came back here): owed again."""
        return self._act("recover_bounce", bytes(transfer_id))

    def cancel_order(self, message_id: bytes) -> TxReceipt:
        """The funding's sender cancels the order it paid for (its unallocated deposit owed back)."""
        return self._act("cancel_order", bytes(message_id))
