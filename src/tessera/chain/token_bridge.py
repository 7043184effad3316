"""TokenBridge.vy: one token across the bridge (docs/bridge.md). *Lock* mode (a peer chain) holds
what is sent from it and releases it when it comes back; *mint* mode (the home chain) mints what
arrives and burns what leaves, CCTP-style. `TokenBridge` moves TUSD; `StakeBridge`, a second
instance of the same contract, moves the stake token TSTK, so that a provider can stake on
another chain. `send` checks what the contract would refuse (no peer for the route, over the
route's `max_transfer`, paused, not enough tokens) before anything is sent, and approves the
token first."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.contract import ZERO_ADDRESS, ContractWrapper
from tessera.chain.tokens import PaymentToken, StakeToken, Token
from tessera.errors import BridgeError, TxRefused
from tessera.protocol.bridge import MAX_CALL_DATA


@dataclass(frozen=True)
class Origin:
    """A transfer sent from this chain, as TokenBridge remembers it until it arrives or
    bounces (`open` False once its bounce has refunded the sender)."""
    sender: str
    amount: int
    destination_chain: int
    open: bool


class TokenBridge(ContractWrapper):
    NAME = "TokenBridge"
    TOKEN: type[Token] = PaymentToken   # what it moves (its `token()` on chain)

    def __init__(self, chain):
        super().__init__(chain)
        self.token_wrapper = self.TOKEN(chain)

    def send(self, destination_chain: int, to: str, amount: int) -> tuple[bytes, list[TxReceipt]]:
        """Move `amount` of this account's tokens to `to` on `destination_chain`. Returns the
        message id and the receipts (an approval, if one was needed, then the send)."""
        return self._transfer("send", destination_chain, to, amount)

    def send_call(self, destination_chain: int, to: str, amount: int,
                  data: bytes) -> tuple[bytes, list[TxReceipt]]:
        """Move `amount` to the contract `to` on `destination_chain` and hand it `data` there
        (`on_bridged_tokens`, e.g. BridgeOrders opening an order). Same checks as `send`."""
        if len(data) > MAX_CALL_DATA:
            raise ValueError(f"the call's data is {len(data)} bytes, over {MAX_CALL_DATA}")
        return self._transfer("send_call", destination_chain, to, amount, bytes(data))

    def _transfer(self, function: str, destination_chain: int, to: str, amount: int,
                  *extra) -> tuple[bytes, list[TxReceipt]]:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError(f"amount must be a positive number of base units, got {amount!r}")
        to = Web3.to_checksum_address(to)
        if int(to, 16) == 0:
            raise ValueError("the recipient cannot be the zero address")
        here = self.chain.network.chain_id
        if int(self.peer(destination_chain), 16) == 0:
            raise BridgeError(f"{self.NAME} on chain {here} has no peer on chain "
                              f"{destination_chain}: that route is not open")
        limit = self.max_transfer(destination_chain)
        if amount > limit:
            fmt = self.token_wrapper.format
            raise BridgeError(f"{fmt(amount)} is over the route's limit of {fmt(limit)} per "
                              f"transfer from chain {here} to chain {destination_chain}")
        if self.paused():
            raise BridgeError(f"{self.NAME} on chain {here} is paused: nothing can be sent")
        if self.mint_mode() and amount > self.backing(destination_chain):
            fmt = self.token_wrapper.format
            raise BridgeError(
                f"only {fmt(self.backing(destination_chain))} on chain {here} came from chain "
                f"{destination_chain} over the bridge: {fmt(amount)} cannot go back there "
                f"({self.TOKEN.SYMBOL} minted any other way has nothing locked behind it on that "
                "chain)")
        receipts = self.token_wrapper.fund(self.address, amount, "the bridge transfer")
        try:
            receipt = self._send(function, destination_chain, to, amount, *extra)
        except TxRefused as exc:
            raise BridgeError(f"{self.NAME} on chain {here}: {exc}") from None
        return bytes(self._event(receipt, "TransferSent")["message_id"]), [*receipts, receipt]

    # -- owner and guardian --------------------------------------------------------------
    def set_peer(self, chain_id: int, peer: str, max_transfer: int) -> TxReceipt:
        return self._send("set_peer", chain_id, Web3.to_checksum_address(peer), max_transfer)

    def pause(self) -> TxReceipt:
        return self._send("pause")

    def unpause(self) -> TxReceipt:
        return self._send("unpause")

    # -- views ---------------------------------------------------------------------------
    def token(self) -> str:
        return self._call("token")

    def outbox(self) -> str:
        return self._call("outbox")

    def inbox(self) -> str:
        return self._call("inbox")

    def mint_mode(self) -> bool:
        return bool(self._call("mint_mode"))

    def paused(self) -> bool:
        return bool(self._call("paused"))

    def guardian(self) -> str:
        return self._call("guardian")

    def peer(self, chain_id: int) -> str:
        """The TokenBridge on `chain_id` this one trusts (the zero address: no route)."""
        address = self._call("peer", chain_id)
        return address if address else ZERO_ADDRESS

    def max_transfer(self, chain_id: int) -> int:
        return self._call("max_transfer", chain_id)

    def origins(self, message_id: bytes) -> Origin:
        record = self._struct("origins", bytes(message_id))
        names = ("sender", "amount", "destination_chain", "open")
        values = [record[n] for n in names] if all(n in record for n in names) else list(record.values())
        return Origin(*values)

    def backing(self, chain_id: int) -> int:
        """Mint mode: what was minted here for tokens locked on `chain_id`, not yet sent back
        (the most a send to that chain may burn)."""
        return self._call("backing", chain_id)

    def total_sent(self) -> int:
        return self._call("total_sent")

    def total_received(self) -> int:
        return self._call("total_received")

    def total_bounced(self) -> int:
        return self._call("total_bounced")


class StakeBridge(TokenBridge):
    """The TokenBridge instance that moves TSTK: a provider locks stake on a peer chain and
    stakes what is minted for it on the home chain (docs/bridge.md, "Stake on another chain")."""
    NAME = "StakeBridge"
    TOKEN = StakeToken
