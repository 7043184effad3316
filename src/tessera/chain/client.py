"""The one place that talks to a chain: typed contract handles, calls, sends, and readable errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import RPCEndpoint, RPCResponse, TxReceipt

from tessera.chain.compiler import compile_contract
from tessera.chain.fees import (
    DROP_CONFIRM_S,
    LEGACY,
    MAX_FEE_FACTOR,
    MAX_TRACKED,
    REPLACE_AFTER_S,
    Sent,
    bump_fees,
    fee_cap,
    fee_market,
    fees_of,
)
from tessera.chain.network import Network
from tessera.errors import ChainError, RpcUnavailable, TxDropped, TxRefused

T = TypeVar("T")
GAS_MARGIN = 150_000
RECEIPT_POLL_S = 0.1   # as web3's wait_for_transaction_receipt


def tx_hash(receipt) -> str:
    """0x-prefixed hash of the transaction behind a receipt or a log."""
    return "0x" + receipt["transactionHash"].hex().removeprefix("0x")


def revert_reason(exc: Exception) -> str:
    message = str(getattr(exc, "message", None) or exc)
    for prefix in ("execution reverted: ", "execution reverted"):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message.strip() or "reverted without a reason"


class _ChainIdOnce(Web3.HTTPProvider):
    """An HTTP provider that asks eth_chainId once, whatever the thread: web3's validation
    middleware asks it before every eth_call and eth_estimateGas, which made it half of an idle
    provider daemon's RPC calls (issue 15), and web3's own request cache is per thread, so each
    new HTTP worker thread (anyio's expire after 10 s idle: a validator's probe once an epoch)
    asked again. A node does not change its chain id under a running process;
    `Chain.check_connected` compares the first answer with the network file."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._chain_id: RPCResponse | None = None

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method != "eth_chainId":
            return super().make_request(method, params)
        answer = self._chain_id
        if answer is None:
            answer = super().make_request(method, params)
            if "result" in answer and "error" not in answer:   # errors are asked again
                self._chain_id = answer
        return answer


class Chain:
    """A connection to one network, optionally with a signing account. A transaction it sent
    and waits for that is not mined after `replace_after_s` seconds is replaced with raised
    fees (fees.py), up to `max_fee_factor` x its first fee cap and `max_fee_wei` if given."""

    def __init__(self, network: Network, account: LocalAccount | None = None, timeout: float = 10,
                 *, replace_after_s: float = REPLACE_AFTER_S, max_fee_factor: int = MAX_FEE_FACTOR,
                 max_fee_wei: int | None = None):
        self.network = network
        self.account = account
        self.w3 = Web3(_ChainIdOnce(network.rpc_url, request_kwargs={"timeout": timeout}))
        self._contracts: dict[str, Contract] = {}
        self._nonce_lock = threading.Lock()
        self._next_nonce: int | None = None
        self.replace_after_s = replace_after_s
        self.max_fee_factor = max_fee_factor
        self.max_fee_wei = max_fee_wei
        self._sent: dict[str, Sent] = {}   # tx hash first sent -> its versions; until mined
        self._sent_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------
    def contract(self, name: str) -> Contract:
        if name not in self._contracts:
            artifact = compile_contract(name)
            address = Web3.to_checksum_address(self.network.address(name))
            self._contracts[name] = self.w3.eth.contract(address=address, abi=artifact.abi)
        return self._contracts[name]

    @property
    def market(self) -> Contract:
        return self.contract("Market")

    @property
    def registry(self) -> Contract:
        return self.contract("ProviderRegistry")

    @property
    def uptime(self) -> Contract:
        return self.contract("Uptime")

    @property
    def validators(self) -> Contract:
        return self.contract("Validators")

    @property
    def probes(self) -> Contract:
        return self.contract("Probes")

    @property
    def payment_token(self) -> Contract:
        return self.contract("PaymentToken")

    @property
    def stake_token(self) -> Contract:
        return self.contract("StakeToken")

    @property
    def address(self) -> str:
        if self.account is None:
            raise ChainError("this command needs an account (--account devnet:N or keystore:NAME)")
        return self.account.address

    def rpc(self, action: Callable[[], T], what: str = "RPC call") -> T:
        """Run a read against the node, turning connection failures into RpcUnavailable."""
        try:
            return action()
        except (requests.ConnectionError, requests.Timeout, ConnectionError) as exc:
            raise RpcUnavailable(
                f"cannot reach the chain's RPC at {self.network.rpc_url} during {what}: "
                f"{type(exc).__name__}"
            ) from None

    def call(self, fn: ContractFunction) -> Any:
        try:
            return self.rpc(fn.call, what=fn.fn_name)
        except (ContractLogicError, ContractCustomError) as exc:
            raise TxRefused(f"{fn.fn_name} refused: {revert_reason(exc)}") from None

    def check_connected(self) -> int:
        chain_id = self.rpc(lambda: self.w3.eth.chain_id, what="chain id check")
        if chain_id != self.network.chain_id:
            raise ChainError(
                f"RPC {self.network.rpc_url} serves chain {chain_id}, but the network file says "
                f"{self.network.chain_id}"
            )
        return chain_id

    def block_timestamp(self, block: str | int = "latest") -> int:
        return self.rpc(lambda: self.w3.eth.get_block(block)["timestamp"], what="get block")

    def block_gas_limit(self) -> int:
        return self.rpc(lambda: self.w3.eth.get_block("latest")["gasLimit"], what="get block")

    def block_number(self) -> int:
        return self.rpc(lambda: self.w3.eth.block_number, what="block number")

    # -- writing -------------------------------------------------------------------------
    def _take_nonce(self) -> int:
        with self._nonce_lock:
            pending = self.w3.eth.get_transaction_count(self.address, "pending")
            nonce = pending if self._next_nonce is None else max(pending, self._next_nonce)
            self._next_nonce = nonce + 1
            return nonce

    def _reset_nonce(self) -> None:
        with self._nonce_lock:
            self._next_nonce = None

    def send(self, fn: ContractFunction, *, wait: bool = True, timeout: float = 60) -> TxReceipt:
        """Estimate (refusing reverts before anything is sent), sign locally, send, and wait
        (`wait_for`). With wait=False: {"transactionHash": ...} once the node took it, for
        several transactions sent on consecutive nonces before any receipt is waited for."""
        account = self.account
        if account is None:
            raise ChainError("this command needs an account (--account devnet:N or keystore:NAME)")
        try:
            gas = self.rpc(lambda: fn.estimate_gas({"from": account.address}), what=fn.fn_name)
        except (ContractLogicError, ContractCustomError) as exc:
            raise TxRefused(f"{fn.fn_name} refused: {revert_reason(exc)}") from None
        for attempt in range(2):
            nonce = self.rpc(self._take_nonce, what="nonce")
            try:
                tx = self.rpc(lambda n=nonce: fn.build_transaction({
                    "from": account.address,
                    "nonce": n,
                    # Time moves between estimate and mining, and a payout that was zero at
                    # estimate time adds token transfers: keep a margin (unused gas is not paid).
                    "gas": int(gas * 1.25) + GAS_MARGIN,
                    "chainId": self.network.chain_id,
                }), what=fn.fn_name)
                signed = account.sign_transaction(tx)
                try:
                    sent = self.rpc(
                        lambda raw=signed.raw_transaction: self.w3.eth.send_raw_transaction(raw),
                        what=fn.fn_name,
                    )
                except (ValueError, Web3RPCError) as exc:   # the node's refusal
                    if "nonce" in str(exc).lower() and attempt == 0:
                        self._reset_nonce()
                        continue
                    raise ChainError(f"{fn.fn_name} was not accepted by the node: {exc}") from None
            except BaseException:
                # Not sent (or not known to be): the next send asks the node's count again, or
                # every later transaction of this account would wait behind the gap for good.
                self._reset_nonce()
                raise
            break
        self._track(Web3.to_hex(sent), fn.fn_name, tx, signed.raw_transaction)
        if not wait:
            return {"transactionHash": sent}  # type: ignore[return-value]
        return self.wait_for(sent, fn.fn_name, timeout)

    def _track(self, name: str, what: str, tx: dict, raw: bytes) -> None:
        """Keep what a replacement of this transaction needs, until a wait sees it mined."""
        fees = fees_of(tx)
        record = Sent(what, dict(tx), raw, fee_cap(fees, self.max_fee_factor, self.max_fee_wei),
                      time.monotonic(), [name], [fees])
        with self._sent_lock:
            self._sent[name] = record
            while len(self._sent) > MAX_TRACKED:   # sent with wait=False, never waited for
                del self._sent[next(iter(self._sent))]

    def wait_for(self, sent, what: str, timeout: float = 60) -> TxReceipt:
        """The receipt of a transaction sent (its first hash), once mined: ChainError if it is
        not mined within `timeout` seconds, TxRefused if it reverted, TxDropped if another
        transaction was mined on its nonce (`what`: the call, for the messages).

        One this Chain sent costs one RPC call a poll (RECEIPT_POLL_S), however many versions
        it has: the account's `latest` nonce; its versions' receipts are asked for only once
        that has passed the transaction's nonce, and if none has one for DROP_CONFIRM_S (across
        waits: a receipt may lag the nonce on a load-balanced RPC), it never will (TxDropped).
        Until then, not mined `replace_after_s` after its last version, it is replaced
        (_replace_due), in this wait or a later one for the same hash; whatever that sends
        fails of, the wait goes on. The receipt is that of whichever version is mined (the
        first may still win). Another hash (not sent here) is polled for its receipt alone."""
        name = Web3.to_hex(sent)
        record = self._sent.get(name)
        deadline = time.monotonic() + timeout
        while True:
            hashes = list(record.hashes) if record else [name]
            used = None if record is None else self.rpc(
                lambda: self.w3.eth.get_transaction_count(self.address, "latest"), what="nonce")
            if used is None or used > record.nonce:
                receipt = self._mined(hashes, what)
                if receipt is not None:
                    break
                if used is not None:
                    record.used_since = record.used_since or time.monotonic()
                    if time.monotonic() - record.used_since >= DROP_CONFIRM_S:
                        self._forget(name)
                        raise TxDropped(
                            f"{what} (nonce {record.nonce}; {', '.join(hashes)}) was dropped: "
                            "another transaction was mined on its nonce; it was never mined")
            now = time.monotonic()
            if now >= deadline:
                raise ChainError(f"{what} ({', '.join(hashes)}) not mined within {timeout}s")
            if used is not None and used <= record.nonce \
                    and now - record.sent_at >= self.replace_after_s:
                try:
                    self._replace_due(record, used)
                except Exception as exc:   # the wait goes on, whatever failed
                    record.replace_failed(exc)
            time.sleep(max(min(RECEIPT_POLL_S, deadline - time.monotonic()), 0))
        self._forget(name)
        if receipt["status"] != 1:
            raise TxRefused(f"{what} reverted on chain in tx {tx_hash(receipt)}")
        return receipt

    def _forget(self, name: str) -> None:
        with self._sent_lock:
            self._sent.pop(name, None)

    def _mined(self, hashes: list[str], what: str) -> TxReceipt | None:
        for name in reversed(hashes):   # the newest version is the likeliest
            try:
                receipt = self.rpc(lambda n=name: self.w3.eth.get_transaction_receipt(n),
                                   what=f"{what} receipt")
            except TransactionNotFound:
                continue
            if receipt is not None and receipt["blockHash"] is not None:
                return receipt
        return None

    def _replace_due(self, record: Sent, used: int) -> None:
        """Replace `record` and, first, every transaction of this account on an earlier nonce
        that is tracked and due too: a later one waits behind a stuck nonce whatever its own
        fees. Those on a nonce the chain has used (`used`: the `latest` count) are mined, or
        dropped (TxDropped): left alone."""
        now = time.monotonic()
        record.sent_at = now
        with self._sent_lock:   # (`record` itself even if dropped beyond MAX_TRACKED)
            tracked = {*self._sent.values(), record}
        due = sorted((r for r in tracked if used <= r.nonce <= record.nonce
                      and (r is record or now - r.sent_at >= self.replace_after_s)),
                     key=lambda r: r.nonce)
        for stuck in due:
            self._replace(stuck)

    def _replace(self, record: Sent) -> None:
        """Sign the next version (fees.bump_fees), record it as sent (Sent.sending: its hash
        is keccak of the signed bytes, known before the node answers), and send it; at the
        cap, out of funds or mined already, send the newest version again instead (a node that
        lost its pool takes it back; a refusal of that is of no interest). A node's refusal of
        a new version takes it back (Sent.refused); a send with no answer (a timeout, an RPC
        error) keeps it, since the node may have it (Sent.unanswered): never raised."""
        if not record.lock.acquire(blocking=False):   # another thread is at it
            return
        try:
            record.sent_at = time.monotonic()
            new = None
            if record.bumping:
                new = bump_fees(fees_of(record.tx), **fee_market(self, LEGACY in record.tx),
                                cap=record.cap)
                if new is None:
                    record.at_cap()
            if new is not None:
                tx = {**record.tx, **new}
                raw = self.account.sign_transaction(tx).raw_transaction
                record.sending(tx, raw, Web3.to_hex(Web3.keccak(raw)))
            raw = record.raw
            try:
                self.rpc(lambda: self.w3.eth.send_raw_transaction(raw), what=record.what)
            except (ValueError, Web3RPCError) as exc:   # the node's answer: not taken
                if new is not None:
                    record.refused(str(exc))
                return
            except Exception as exc:   # no answer: the node may have it
                record.unanswered(exc)
                return
            if new is not None:
                record.accepted()
        finally:
            record.lock.release()

    def events(
        self, contract: str, event: str, from_block: int, to_block: int | str = "latest",
        argument_filters: dict | None = None, chunk: int = 5_000,
    ) -> list:
        """Decoded logs of one event over a block range, fetched in chunks."""
        handle = getattr(self.contract(contract).events, event)
        end = self.block_number() if to_block == "latest" else int(to_block)
        logs: list = []
        start = from_block
        while start <= end:
            stop = min(start + chunk - 1, end)
            logs.extend(
                self.rpc(
                    lambda s=start, e=stop: handle.get_logs(
                        from_block=s, to_block=e, argument_filters=argument_filters
                    ),
                    what=f"{event} logs",
                )
            )
            start = stop + 1
        return logs


def retry(action: Callable[[], T], *, attempts: int = 8, base_delay: float = 0.25,
          max_delay: float = 5.0, on_retry: Callable[[Exception, float], None] | None = None) -> T:
    """Call `action`, retrying with exponential backoff while the RPC is unreachable."""
    delay = base_delay
    for attempt in range(attempts):
        try:
            return action()
        except RpcUnavailable as exc:
            if attempt == attempts - 1:
                raise
            if on_retry:
                on_retry(exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
