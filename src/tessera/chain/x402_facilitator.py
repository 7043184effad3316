"""x402 on a Tessera network: the facilitator that verifies and settles payments on the network's
own chain, built from the official SDK (`x402` 2.25.0), and the pieces a paywalled server needs.

One home for each of these, shared by the in-process provider (provider/inference.py) and the
HTTP service (facilitator/service.py), which never import each other:

- **The network's x402 identity** (`X402Network.read`): CAIP-2 `eip155:<chain id>` and the
  PaymentToken (TUSD) with its EIP-712 name and version, read from the token itself
  (`eip712Domain()`, EIP-5267) rather than copied from deploy constants, so a network whose token
  was deployed with other names still verifies.
- **The schemes** (`SchemeSupport`): "exact" (EIP-3009 `transferWithAuthorization` on the
  PaymentToken, the SDK's own scheme, with the facilitator's key paying gas) is built in. Another
  scheme (H4's "tessera-budget", chain/x402_budget.py) is one call, made once at import of its
  module: `register_scheme(BudgetSupport())`. Every facilitator and paywall built afterwards
  offers it beside "exact"; `schemes()` lists what is registered.
- **The facilitator** (`TesseraFacilitator`): the SDK's `x402FacilitatorSync` with every
  registered scheme, refusing payments for another network or another asset before the SDK looks
  at them, and turning what the SDK raises on malformed input into `PaymentError` (a payload
  that cannot be read at all, not one that fails its checks: the HTTP service answers 400) and
  an unreachable RPC into `RpcUnavailable` (503), never a crash.
- **An in-process client** (`LocalFacilitatorClient`): the async facilitator interface the SDK's
  resource server wants, running the (blocking, web3) verify and settle in a worker thread so a
  provider's event loop keeps serving while a settlement is mined.

Settlement simulates first (`simulate_in_settle`, on by default): a payment that can no longer
settle (the payer moved the tokens away after verify) is refused before a transaction is sent,
so the facilitator does not pay gas for a transfer that would revert; a payment that passes the
simulation and still reverts when mined (a race) reports failure with the reverted transaction,
and nothing moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from web3 import Web3
from web3.logs import DISCARD
from x402 import x402FacilitatorSync
from x402.http import PaymentOption
from x402.interfaces import SchemeNetworkFacilitator, SchemeNetworkServer
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import (
    ExactEvmFacilitatorScheme,
    ExactEvmSchemeConfig,
    ExactEvmServerScheme,
)
from x402.schemas import (
    PaymentAbortedError,
    PaymentPayload,
    PaymentRequirements,
    SchemeNotFoundError,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)

from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.errors import ChainError, PaymentError, RpcUnavailable

EXACT = "exact"
CAIP_NAMESPACE = "eip155"
# Seconds the facilitator waits for a settlement's receipt: a devnet mines at once; a public chain
# within a few blocks. Past it the SDK answers `settlement_pending` and retries once.
CONFIRMATION_TIMEOUT_S = 30.0
# Reasons this module gives (the SDK's own reasons, such as `invalid_exact_evm_payload_recipient_
# mismatch`, pass through unchanged).
WRONG_NETWORK, WRONG_ASSET, UNSUPPORTED_SCHEME = "wrong_network", "wrong_asset", "unsupported_scheme"
NOT_POSITIVE, PAYEE_NOT_SERVED, BAD_TIMEOUT = "amount_not_positive", "payee_not_served", "bad_timeout"


# how far back a payment settled by another transaction is looked for: a signed payment lives at
# most an hour (x402_budget.MAX_DEADLINE_S; "exact": the route's maxTimeoutSeconds), so this covers
# it on any chain with blocks of 0.4 s or more
SETTLED_LOOKBACK_BLOCKS = 10_000


def same_address(a: object, b: object) -> bool:
    """Two 0x addresses, whatever their case."""
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


def settled_by_others(chain: Chain, contract: str, event: str, filters: dict,
                      own: list[str]) -> list:
    """The `event`s of `contract` matching `filters` in the last SETTLED_LOOKBACK_BLOCKS, in
    transactions none of `own` (this facilitator's keys) sent: a payment someone else settled.
    One settled by `own` was served once already, and is not served again."""
    start = max(chain.network.deploy_block, chain.block_number() - SETTLED_LOOKBACK_BLOCKS)
    out = []
    for entry in chain.events(contract, event, start, argument_filters=filters):
        tx = chain.rpc(lambda e=entry: chain.w3.eth.get_transaction(e["transactionHash"]),
                       what="transaction")
        if not any(same_address(tx["from"], s) for s in own):
            out.append(entry)
    return out


def caip2(chain_id: int) -> str:
    """The CAIP-2 id x402 names an EVM chain by: `eip155:<chain id>`."""
    return f"{CAIP_NAMESPACE}:{int(chain_id)}"


@dataclass(frozen=True)
class TokenDomain:
    """An EIP-3009 token's EIP-712 domain, as the token reports it."""

    address: str   # checksummed: the domain's verifyingContract
    name: str
    version: str
    chain_id: int

    def extra(self) -> dict[str, str]:
        """`PaymentRequirements.extra` for the "exact" scheme: the domain's name and version."""
        return {"name": self.name, "version": self.version}


def payment_token_domain(chain: Chain) -> TokenDomain:
    """The PaymentToken's EIP-712 domain, read from the token (`eip712Domain()`, EIP-5267), and
    checked against the network file: the domain's chain id and verifying contract must be this
    chain and this token, or every signature made from it would fail on chain."""
    token = chain.payment_token
    _fields, name, version, chain_id, verifying, _salt, _ext = chain.call(token.functions.eip712Domain())
    if int(chain_id) != chain.network.chain_id:
        raise ChainError(f"PaymentToken at {token.address} signs for chain {chain_id}, but the "
                         f"network file says {chain.network.chain_id}")
    if Web3.to_checksum_address(verifying) != token.address:
        raise ChainError(f"PaymentToken at {token.address} names {verifying} as its EIP-712 "
                         "verifying contract")
    return TokenDomain(token.address, name, version, int(chain_id))


@dataclass(frozen=True)
class X402Network:
    """What x402 needs to know about one Tessera network: its chain, CAIP-2 id and token."""

    chain: Chain
    token: TokenDomain

    @classmethod
    def read(cls, chain: Chain) -> X402Network:
        chain.check_connected()
        return cls(chain, payment_token_domain(chain))

    @property
    def caip2(self) -> str:
        return caip2(self.chain.network.chain_id)

    @property
    def rpc_url(self) -> str:
        return self.chain.network.rpc_url


class SchemeSupport(Protocol):
    """One x402 scheme on a Tessera network, seen from each side. A scheme that this network
    cannot offer (its contract is not deployed) answers None from `facilitator` and `option`.
    Optionally, `check_payload(inner: dict) -> None` raises PaymentError for a payload the
    scheme cannot read at all, so that junk is told apart from a payment that fails its checks."""

    scheme: str

    def facilitator(self, net: X402Network, signer: FacilitatorWeb3Signer,
                    simulate_in_settle: bool) -> SchemeNetworkFacilitator | None:
        """The SDK facilitator scheme that verifies and settles it, paying gas from `signer`."""

    def server(self, net: X402Network) -> SchemeNetworkServer:
        """The SDK server scheme a paywall registers (prices, requirement details)."""

    def option(self, net: X402Network, pay_to: str, price: Any,
               max_timeout_seconds: int) -> PaymentOption | None:
        """The route's offer in this scheme: `price` is an amount in TUSD base units or a
        callable the SDK resolves per request (x402.http.DynamicPrice). A paywall may add keys
        of its own to the option's `extra` (provider/inference.py names its route and model)."""


class ExactSupport:
    """The SDK's "exact" scheme: an EIP-3009 authorization on the PaymentToken."""

    scheme = EXACT

    def facilitator(self, net: X402Network, signer: FacilitatorWeb3Signer,
                    simulate_in_settle: bool) -> SchemeNetworkFacilitator:
        return ExactEvmFacilitatorScheme(signer, ExactEvmSchemeConfig(
            simulate_in_settle=simulate_in_settle))

    def server(self, net: X402Network) -> SchemeNetworkServer:
        return ExactEvmServerScheme()

    @staticmethod
    def check_payload(inner: dict) -> None:
        """PaymentError unless `inner` is an EIP-3009 authorization with a signature, each
        field of its type (the SDK reads missing fields as empty and reports a mismatch)."""
        authorization = inner.get("authorization")
        if not isinstance(authorization, dict):
            raise PaymentError("payment payload cannot be read: \"exact\" on a Tessera "
                                   "network takes an EIP-3009 `authorization` object")
        for field, kind in _EIP3009_FIELDS.items():
            value = authorization.get(field)
            if not isinstance(value, str) or not _FIELD_KINDS[kind](value):
                raise PaymentError(f"payment payload cannot be read: authorization.{field} "
                                       f"must be {kind}, got {str(value)[:80]!r}")
        signature = inner.get("signature")
        if not isinstance(signature, str) or not _is_hex(signature, min_bytes=65):
            raise PaymentError("payment payload cannot be read: signature must be 0x-hex "
                                   "of at least 65 bytes")

    def option(self, net: X402Network, pay_to: str, price: Any,
               max_timeout_seconds: int) -> PaymentOption:
        return PaymentOption(scheme=EXACT, network=net.caip2, pay_to=pay_to,
                             price=token_price(net, price), max_timeout_seconds=max_timeout_seconds)


def _is_hex(text: str, size: int | None = None, min_bytes: int = 0) -> bool:
    digits = text[2:]
    if not text.startswith("0x") or len(digits) % 2 or len(digits) > 4096:
        return False
    try:
        bytes.fromhex(digits)
    except ValueError:
        return False
    return len(digits) // 2 == size if size is not None else len(digits) // 2 >= min_bytes


_FIELD_KINDS = {"an address": lambda v: _is_hex(v, 20), "a 32-byte hex nonce": lambda v: _is_hex(v, 32),
                "a decimal integer": lambda v: v.isascii() and v.isdigit() and len(v) <= 78}
_EIP3009_FIELDS = {"from": "an address", "to": "an address", "value": "a decimal integer",
                   "validAfter": "a decimal integer", "validBefore": "a decimal integer",
                   "nonce": "a 32-byte hex nonce"}


def asset_price(net: X402Network, price: Any, extra: dict | None = None) -> Any:
    """`price` (TUSD base units, or a callable giving them per request) as the SDK's AssetAmount
    on the PaymentToken, with `extra` if given: a custom token has no "$0.01" money parser, only
    atomic amounts."""
    def asset_amount(amount: int) -> dict:
        return {"amount": str(int(amount)), "asset": net.token.address,
                **({"extra": extra} if extra is not None else {})}

    if not callable(price):
        return asset_amount(price)

    async def dynamic(context):
        amount = price(context)
        if asyncio.iscoroutine(amount):
            amount = await amount
        return asset_amount(amount)
    return dynamic


def token_price(net: X402Network, price: Any) -> Any:
    """The "exact" scheme's price: the AssetAmount with the token's EIP-712 name and version."""
    return asset_price(net, price, net.token.extra())


_SCHEMES: dict[str, SchemeSupport] = {EXACT: ExactSupport()}


def register_scheme(support: SchemeSupport) -> None:
    """Offer another scheme beside "exact" in every facilitator and paywall built from now on
    (the hook for "tessera-budget"). Registering the same scheme name again replaces it."""
    _SCHEMES[support.scheme] = support


def schemes() -> tuple[SchemeSupport, ...]:
    """The registered schemes, "exact" first."""
    return tuple(_SCHEMES.values())


class TesseraFacilitator:
    """The SDK facilitator for one network, answering only for that network's chain and token.

    `verify` and `settle` block (web3 calls, and settle waits for the receipt): call them from a
    worker thread in async code (`LocalFacilitatorClient` does)."""

    def __init__(self, net: X402Network, private_key: str,
                 supports: tuple[SchemeSupport, ...] | None = None,
                 simulate_in_settle: bool = True,
                 confirmation_timeout_s: float = CONFIRMATION_TIMEOUT_S,
                 payees: Callable[[str], bool] | None = None):
        """`payees`: which payees this facilitator settles to (it pays the gas). None: any, for
        a provider's own in-process facilitator, whose paywall names only the provider. A
        facilitator open to others must limit it (`registered_or_listed`): otherwise anyone
        makes it pay gas, in a loop, for payments between the attacker's own addresses."""
        self.net = net
        self.payees = payees
        self.signer = FacilitatorWeb3Signer(private_key, net.rpc_url,
                                            confirmation_timeout_seconds=confirmation_timeout_s)
        self.sdk = x402FacilitatorSync()
        self.schemes: list[str] = []
        self._checks: dict[str, Any] = {}
        for support in supports if supports is not None else schemes():
            impl = support.facilitator(net, self.signer, simulate_in_settle)
            if impl is not None:
                self.sdk.register([net.caip2], impl)
                self.schemes.append(support.scheme)
                self._checks[support.scheme] = getattr(support, "check_payload", None)

    @property
    def address(self) -> str:
        """The account that sends (and pays gas for) settlements."""
        return self.signer.address

    def get_supported(self) -> SupportedResponse:
        return self.sdk.get_supported()

    def _refusal(self, payload: PaymentPayload, requirements: PaymentRequirements) -> str | None:
        """Why this facilitator will not touch the payment at all, or None."""
        for what, network in (("requirements", requirements.network),
                              ("payment", payload.accepted.network)):
            if network != self.net.caip2:
                return (f"{WRONG_NETWORK}: the {what} name network {network}; this facilitator "
                        f"settles on {self.net.caip2} only")
        if requirements.scheme not in self.schemes or payload.accepted.scheme != requirements.scheme:
            return (f"{UNSUPPORTED_SCHEME}: scheme {payload.accepted.scheme!r} for requirements "
                    f"in {requirements.scheme!r}; this facilitator supports {self.schemes}")
        if str(requirements.asset).lower() != self.net.token.address.lower():
            return (f"{WRONG_ASSET}: asset {requirements.asset} is not this network's "
                    f"PaymentToken {self.net.token.address}")
        if not str(requirements.amount).isdigit() or int(requirements.amount) <= 0:
            return (f"{NOT_POSITIVE}: amount {requirements.amount!r} is not a positive number "
                    "of base units (a payment of nothing would only spend the facilitator's gas)")
        if requirements.max_timeout_seconds <= 0:
            return f"{BAD_TIMEOUT}: maxTimeoutSeconds {requirements.max_timeout_seconds} is not positive"
        if self.payees is not None and not self.payees(str(requirements.pay_to)):
            return (f"{PAYEE_NOT_SERVED}: this facilitator settles only to registered providers "
                    f"and the payees it lists; {requirements.pay_to} is neither")
        check = self._checks.get(requirements.scheme)
        if check is not None:
            check(payload.payload)   # PaymentError: junk, answered 400 by the service
        return None

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        refusal = self._refusal(payload, requirements)
        if refusal is not None:
            reason, _, message = refusal.partition(": ")
            return VerifyResponse(is_valid=False, invalid_reason=reason, invalid_message=message,
                                  payer=_payer(payload))
        try:
            return self._guarded(lambda: self.sdk.verify(payload, requirements))
        except PaymentAbortedError as exc:
            return VerifyResponse(is_valid=False, invalid_reason="aborted",
                                  invalid_message=str(exc), payer=_payer(payload))

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        refusal = self._refusal(payload, requirements)
        if refusal is not None:
            reason, _, message = refusal.partition(": ")
            return SettleResponse(success=False, error_reason=reason, error_message=message,
                                  transaction="", network=requirements.network,
                                  payer=_payer(payload))
        try:
            response = self._guarded(lambda: self.sdk.settle(payload, requirements))
        except PaymentAbortedError as exc:
            return SettleResponse(success=False, error_reason="aborted", error_message=str(exc),
                                  transaction="", network=requirements.network,
                                  payer=_payer(payload))
        if not response.success and requirements.scheme == "exact":
            return self._authorization_settled(payload, requirements) or response
        return response

    def _authorization_settled(self, payload: PaymentPayload,
                               requirements: PaymentRequirements) -> SettleResponse | None:
        """The same EIP-3009 authorization used by someone else's transaction (anyone holding
        the signed header may send `transferWithAuthorization`: a mempool copier), with the
        transfer it signed: the payment HAS settled, so the resource is served with that
        transaction as the receipt (review 22). None if not found in the recent blocks, or if
        this facilitator sent it (the payment was settled, and served, once already)."""
        authorization = (payload.payload or {}).get("authorization") if isinstance(
            payload.payload, dict) else None
        if not isinstance(authorization, dict):
            return None
        chain = self.net.chain
        try:
            payer = Web3.to_checksum_address(str(authorization.get("from")))
            nonce = bytes.fromhex(str(authorization.get("nonce")).removeprefix("0x"))
            value = int(str(authorization.get("value")))
        except ValueError:
            return None
        if len(nonce) != 32 or str(value) != str(requirements.amount):
            return None
        token = chain.contract("PaymentToken")
        for entry in settled_by_others(chain, "PaymentToken", "AuthorizationUsed",
                                       {"authorizer": payer, "nonce": nonce},
                                       self.signer.get_addresses()):
            receipt = chain.rpc(lambda e=entry: chain.w3.eth.get_transaction_receipt(
                e["transactionHash"]), what="receipt")
            # the transfer THIS authorization made: the token logs it right after the
            # AuthorizationUsed, from the token's own address (a log of another contract, or a
            # transfer of another authorization in the same transaction, pays for nothing here:
            # review 24)
            after = [log for log in receipt["logs"] if int(log["logIndex"]) == int(entry["logIndex"]) + 1
                     and same_address(log["address"], token.address)]
            transfers = token.events.Transfer().process_receipt({"logs": after}, errors=DISCARD)
            if any(same_address(t["args"]["sender"], payer)
                   and same_address(t["args"]["receiver"], requirements.pay_to)
                   and t["args"]["value"] == value for t in transfers):
                tx = "0x" + bytes(entry["transactionHash"]).hex()
                return SettleResponse(success=True, transaction=tx, network=requirements.network,
                                      payer=payer, amount=str(value))
        return None

    def _guarded(self, action):
        try:
            return action()
        except SchemeNotFoundError as exc:   # _refusal covers it; kept for a scheme's own routing
            raise PaymentError(str(exc)) from None
        except (requests.ConnectionError, requests.Timeout, ConnectionError) as exc:
            raise RpcUnavailable(f"cannot reach the chain's RPC at {self.net.rpc_url}: "
                                 f"{type(exc).__name__}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # the SDK reads the scheme's payload fields without checking them first
            raise PaymentError(f"payment payload cannot be read: {type(exc).__name__}: "
                                   f"{exc}") from None


def registered_or_listed(chain: Chain, listed: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """The payee policy of a facilitator open to others: a provider registered in the
    network's ProviderRegistry, or one of `listed`."""
    registry, named = ProviderRegistry(chain), {a.lower() for a in listed}

    def allows(payee: str) -> bool:
        return payee.lower() in named or (Web3.is_address(payee) and registry.is_registered(
            Web3.to_checksum_address(payee)))
    return allows


def _payer(payload: PaymentPayload) -> str | None:
    inner = payload.payload if isinstance(payload.payload, dict) else {}
    authorization = inner.get("authorization")
    return authorization.get("from") if isinstance(authorization, dict) else None


class LocalFacilitatorClient:
    """The SDK's async FacilitatorClient over an in-process `TesseraFacilitator`: verify and
    settle run in a worker thread. A malformed payment answers invalid (the resource server then
    sends a 402 naming it) instead of raising."""

    def __init__(self, facilitator: TesseraFacilitator):
        self.facilitator = facilitator

    def get_supported(self) -> SupportedResponse:
        return self.facilitator.get_supported()

    async def verify(self, payload: PaymentPayload,
                     requirements: PaymentRequirements) -> VerifyResponse:
        try:
            return await asyncio.to_thread(self.facilitator.verify, payload, requirements)
        except PaymentError as exc:
            return VerifyResponse(is_valid=False, invalid_reason="malformed_payment",
                                  invalid_message=str(exc))

    async def settle(self, payload: PaymentPayload,
                     requirements: PaymentRequirements) -> SettleResponse:
        try:
            return await asyncio.to_thread(self.facilitator.settle, payload, requirements)
        except PaymentError as exc:
            return SettleResponse(success=False, error_reason="malformed_payment",
                                  error_message=str(exc), transaction="",
                                  network=requirements.network)
