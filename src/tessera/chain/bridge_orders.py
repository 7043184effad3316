"""BridgeOrders.vy: a Market order funded from a peer chain in one message (docs/bridge.md, "An
order funded in one message"). The tenant's side is `fund_order` on the peer chain (a
`TokenBridge.send_call` to the home chain's BridgeOrders with the order's terms); once the
relayer delivers it, `funded_order` names the order opened for the tenant. The order's refunds
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
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.tokens import PaymentToken
from tessera.errors import BridgeError, TxRefused
from tessera.protocol.bridge import OrderTerms, order_call_data
from tessera.protocol.lease import order_deposit


@dataclass(frozen=True)
class Funding:
    """A deposit that came over the bridge, as BridgeOrders records it."""
    sender: str          # on source_chain; every refund goes back to it
    source_chain: int
    amount: int
    order_id: int        # 0: no order was opened (the whole amount is owed back)
    returned: int


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
    source, here = peer.network.chain_id, home.network.chain_id
    sender, inbox = TokenBridge(peer).address, BridgeInbox(home)
    fmt = PaymentToken(peer).format
    held_over = inbox.large_threshold(source, sender)
    if deposit > held_over:
        raise BridgeError(f"a deposit of {fmt(deposit)} is over the {fmt(held_over)} that chain "
                          f"{here}'s inbox delivers at once from chain {source}: it would be held "
                          f"{inbox.delay()} s before the order opens. Bridge the TUSD first "
                          "(tessera bridge send) and order at home")
    room = inbox.available(source, sender)
    if deposit > room:
        raise BridgeError(f"chain {here}'s inbox takes {fmt(room)} from chain {source} now (its "
                          f"bucket refills over time): a deposit of {fmt(deposit)} would wait; "
                          "try again later or with less")
    return TokenBridge(peer).send_call(here, BridgeOrders(home).address, deposit,
                                       order_call_data(terms))


class BridgeOrders(ContractWrapper):
    NAME = "BridgeOrders"

    def funding(self, message_id: bytes) -> Funding:
        record = self._struct("fundings", bytes(message_id))
        if record["sender"] == ZERO_ADDRESS:
            raise BridgeError(f"no funding 0x{bytes(message_id).hex()} has arrived at BridgeOrders "
                              f"on chain {self.chain.network.chain_id}")
        return Funding(**{k: record[k] for k in Funding.__dataclass_fields__})

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
        deadline = time.monotonic() + timeout_s
        while True:
            record = self._struct("fundings", bytes(message_id))
            if record["sender"] != ZERO_ADDRESS:
                if record["order_id"] == 0:
                    raise BridgeError(
                        f"the deposit 0x{bytes(message_id).hex()} arrived but the Market refused "
                        f"its order: {record['amount']} base units are owed back to "
                        f"{record['sender']} on chain {record['source_chain']} (send_back)")
                return record["order_id"]
            if time.monotonic() >= deadline:
                mid = "0x" + bytes(message_id).hex()
                raise BridgeError(
                    f"the deposit {mid} has not been delivered to chain "
                    f"{self.chain.network.chain_id} after {timeout_s:.0f} s: is a relayer running "
                    f"(tessera bridge relay)? When it is delivered it opens your order there: "
                    f"`tessera bridge order-status {mid}` shows it, and `tessera bridge "
                    f"order-cancel {mid}` cancels the order (its deposit comes back)")
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
