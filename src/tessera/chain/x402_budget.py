"""x402 scheme "tessera-budget": an agent pays from its owner's AgentBudget with a session key.

The plain "exact" scheme needs a wallet holding the tokens. An agent here holds only a session
key that its owner granted limits on chain (AgentBudget.vy: a budget per period, a cap per
payment, payees, a start and an expiry). It pays by signing an EIP-712 `AgentPayment`
(protocol/agent_budget.py); anyone may submit it, the contract enforces every limit and moves
the owner's deposit to the payee. This module is that payment as an x402 scheme, through the
SDK's own scheme interfaces (x402.interfaces), so the SDK's clients, resource servers and
facilitator carry it beside "exact":

- `BudgetClientScheme` (SchemeNetworkClient): refuses, before anything is signed, a payment
  for another network, another AgentBudget or asset, or one over the grant's limits (the
  `guard`, chain/x402_spend.py, reads the grant from chain and applies
  `payment_refusal`); otherwise signs the payment with the session key.
- `BudgetServerScheme` (SchemeNetworkServer): a price in TUSD base units becomes requirements
  whose `extra` names the contract: {"budget": <AgentBudget>, "name": ..., "version": ...}.
- `BudgetFacilitatorScheme` (SchemeNetworkFacilitator): verify = the payment is for these
  requirements, the signature recovers the grant's key, and `pay` simulated with eth_call
  passes (its revert reason, "over cap" and so on, is the invalid reason); settle = send `pay`
  from the facilitator's key and return the transaction.
- `BudgetSupport`: the scheme's three sides for a Tessera network, registered with
  chain/x402_facilitator.py at import, so every facilitator and paywall built from a network
  that has an AgentBudget offers "tessera-budget" beside "exact".

Wire format: the payload is `SignedPayment.to_dict()`: {"grant", "payee", "amount", "nonce",
"deadline", "signature"}. Invalid reasons are the contract's revert reasons verbatim
(protocol/agent_budget.REASONS) or one of the names below (`WRONG_*`, `INVALID_PAYLOAD`, ...).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from eth_account.signers.base import BaseAccount
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.logs import DISCARD
from x402.http import PaymentOption
from x402.interfaces import PaymentPayloadContext
from x402.mechanisms.evm.settle_receipt import wait_for_receipt_and_build_response
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.pending_settlement_store import InMemoryPendingSettlementStore
from x402.schemas import (
    AssetAmount,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    VerifyResponse,
)

from tessera.chain.agent_budget import AgentBudget, checksum
from tessera.chain.client import revert_reason
from tessera.chain.x402_facilitator import (
    X402Network,
    asset_price,
    caip2,
    register_scheme,
    same_address,
    settled_by_others,
)
from tessera.errors import PaymentRefused
from tessera.protocol import messages
from tessera.protocol.agent_budget import (
    PAYMENT_TYPE,
    SignedPayment,
    parse_payment,
    payment_typed_data,
)

log = logging.getLogger(__name__)
_DIGITS = re.compile(r"[0-9]{1,78}")   # an amount in base units: ASCII digits, below 10^78

SCHEME = "tessera-budget"
CONTRACT = "AgentBudget"           # its name in the network file
# The longest a signed payment stays submittable, whatever the route's max_timeout_seconds: a
# payment signature lying around is spendable by anyone until its deadline (within the limits).
MAX_DEADLINE_S = 3_600
# Reasons of this module (the contract's own, e.g. "over cap", pass through verbatim).
UNSUPPORTED_SCHEME = "unsupported_scheme"
WRONG_NETWORK = "wrong_network"
WRONG_BUDGET = "wrong_budget_contract"
WRONG_ASSET = "wrong_asset"
WRONG_PAYEE = "wrong_payee"
WRONG_AMOUNT = "wrong_amount"
INVALID_PAYLOAD = "invalid_payload"
BAD_SIGNATURE = "bad signature"        # the contract's wording: the key did not sign this
TRANSACTION_FAILED = "transaction_failed"
DEADLINE_TOO_SOON = "deadline_too_soon"
# Seconds a payment's deadline must lie ahead at verify (the SDK's "exact" keeps 6 for EIP-3009).
DEADLINE_MARGIN_S = 6
NONCE_USED = "nonce used"              # AgentBudget.pay's revert when the payment already settled


def budget_extra(address: str, name: str, version: str) -> dict[str, str]:
    """`PaymentRequirements.extra` of the scheme: the AgentBudget and its EIP-712 domain."""
    return {"budget": address, "name": name, "version": version}


def requirements_problem(requirements: PaymentRequirements, network: str, budget: str,
                         token: str, domain: tuple[str, str] | None = None) -> str | None:
    """Why `requirements` are not a "tessera-budget" payment on this network's AgentBudget
    `budget` in `token` (with EIP-712 `domain` (name, version) when given), or None."""
    extra = requirements.extra or {}
    if requirements.scheme != SCHEME:
        return f"{UNSUPPORTED_SCHEME}: scheme {requirements.scheme!r} is not {SCHEME!r}"
    if requirements.network != network:
        return f"{WRONG_NETWORK}: requirements name {requirements.network}, the budget is on {network}"
    if not same_address(extra.get("budget"), budget):
        return (f"{WRONG_BUDGET}: requirements name budget contract {extra.get('budget')!r}, "
                f"the grant is on {budget}")
    if not same_address(requirements.asset, token):
        return f"{WRONG_ASSET}: asset {requirements.asset} is not the budget's token {token}"
    if domain is not None and (extra.get("name"), extra.get("version")) != domain:
        return (f"{WRONG_BUDGET}: EIP-712 domain {extra.get('name')!r}/{extra.get('version')!r} "
                f"is not the budget's {domain[0]!r}/{domain[1]!r}")
    return None


# -- client -----------------------------------------------------------------------------------
class BudgetClientScheme:
    """The agent's side: sign an AgentPayment with the session key, after the guard agreed.

    `signer` is an eth_account account (wrapped as the SDK's EthAccountSigner) or any SDK
    `ClientEvmSigner`. `guard` (chain/x402_spend.BudgetGuard) knows the grant, its network,
    contract and token, and refuses (PaymentRefused naming the limit) what the contract would
    refuse; nothing reaches the signer before every check has passed."""

    scheme = SCHEME

    def __init__(self, signer: Any, guard: Any,
                 nonce_source: Callable[[], bytes] = lambda: secrets.token_bytes(32)):
        self.signer = EthAccountSigner(signer) if isinstance(signer, BaseAccount) else signer
        self.guard = guard
        self.nonce_source = nonce_source

    def create_payment_payload(self, requirements: PaymentRequirements,
                               context: PaymentPayloadContext | None = None) -> dict[str, Any]:
        guard = self.guard
        problem = requirements_problem(requirements, guard.network, guard.budget_address,
                                       guard.token, guard.domain())
        if problem is not None:
            raise PaymentRefused(f"payment refused before signing: {problem}")
        try:
            amount = int(requirements.amount)
        except ValueError:
            raise PaymentRefused("payment refused before signing: amount "
                                 f"{requirements.amount!r} is not an integer") from None
        cap = context.max_amount_per_payment if context is not None else None
        if cap is not None and amount > int(cap):
            raise PaymentRefused(f"payment refused before signing: {amount} is over the client's "
                                 f"spend_controls cap {cap}")
        nonce = bytes(self.nonce_source())
        now = guard.now()
        timeout = requirements.max_timeout_seconds or MAX_DEADLINE_S
        deadline = now + max(1, min(int(timeout), MAX_DEADLINE_S))
        guard.check(self.signer.address, requirements.pay_to, amount, nonce, deadline, now)
        name, version = guard.domain()
        typed = payment_typed_data(guard.chain_id, guard.budget_address, guard.grant_id,
                                   guard.payee(requirements.pay_to), amount, nonce, deadline,
                                   name, version)
        signature = self.signer.sign_typed_data(
            typed["domain"], {"AgentPayment": PAYMENT_TYPE}, "AgentPayment", typed["message"])
        return SignedPayment(guard.grant_id, typed["message"]["payee"], amount, nonce, deadline,
                             bytes(signature)).to_dict()


# -- server -----------------------------------------------------------------------------------
class BudgetServerScheme:
    """The paywall's side: prices in TUSD base units, requirements naming the AgentBudget.

    With `budget` None the contract and domain come from the facilitator's /supported kind
    (`BudgetFacilitatorScheme.get_extra`), so a paywall needs to know only the facilitator."""

    scheme = SCHEME
    default_asset_transfer_method = "default"   # no asset transfer method on the wire
    payment_flows = {"default": {"supported": ("authorization",), "default": "authorization"}}

    def __init__(self, token: str, budget: str | None = None, name: str | None = None,
                 version: str | None = None):
        self.token = token
        self.extra = budget_extra(budget, name or "", version or "") if budget else None

    def parse_price(self, price: Any, network: str) -> AssetAmount:
        """An amount in TUSD base units: an int, a string of digits, or an AssetAmount (dict or
        object) on the token. Money strings ("$0.01") are refused: TUSD is no built-in asset."""
        asset = self.token
        if isinstance(price, AssetAmount):
            price = {"amount": price.amount, "asset": price.asset}
        if isinstance(price, dict):
            asset = price.get("asset") or self.token
            price = price.get("amount")
        if isinstance(price, bool) or not isinstance(price, int | str) \
                or not _DIGITS.fullmatch(str(price)) or int(price) <= 0:
            raise ValueError(f"{SCHEME} price must be a positive amount in TUSD base units, "
                             f"got {price!r}")
        if not same_address(asset, self.token):
            raise ValueError(f"{SCHEME} pays in the budget's token {self.token}, not {asset}")
        return AssetAmount(amount=str(int(price)), asset=self.token, extra=dict(self.extra or {}))

    def enhance_payment_requirements(self, requirements: PaymentRequirements,
                                     supported_kind: SupportedKind,
                                     extension_keys: list[str]) -> PaymentRequirements:
        offered = {k: v for k, v in (supported_kind.extra or {}).items()
                   if k in ("budget", "name", "version")}
        ours = self.extra or offered
        if not ours.get("budget"):
            raise ValueError(f"{SCHEME}: no AgentBudget address (none given, none in the "
                             "facilitator's supported kind)")
        if offered.get("budget") and not same_address(offered["budget"], ours["budget"]):
            raise ValueError(f"{SCHEME}: this paywall names AgentBudget {ours['budget']}, its "
                             f"facilitator settles on {offered['budget']}")
        requirements.extra = {**(requirements.extra or {}), **ours}
        return requirements


# -- facilitator --------------------------------------------------------------------------------
class BudgetFacilitatorScheme:
    """The facilitator's side, on one network's AgentBudget. Reads through `budget` (a wrapper
    on a Chain, no account needed); sends `pay` with `signer` (the SDK's FacilitatorWeb3Signer,
    whose nonces it shares with "exact"), which pays the gas."""

    scheme = SCHEME
    caip_family = "eip155:*"

    def __init__(self, budget: AgentBudget, signer: Any, simulate_in_settle: bool = True):
        self.budget = budget
        self.signer = signer
        self.simulate_in_settle = simulate_in_settle
        self.network = caip2(budget.chain.network.chain_id)
        self._pending = InMemoryPendingSettlementStore()
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.budget.chain.call(self.budget.contract.functions.token())
        return self._token

    def get_extra(self, network: str) -> dict[str, Any] | None:
        name, version = self.budget.domain()
        return budget_extra(self.budget.address, name, version)

    def get_signers(self, network: str) -> list[str]:
        return self.signer.get_addresses()

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements,
               context: Any = None) -> VerifyResponse:
        """Valid when settling now would pass, with DEADLINE_MARGIN_S to spare: the resource is
        produced between verify and settle, and a payment whose deadline passes meanwhile
        would leave it produced and unpaid."""
        response, payment = self._verify(payload, requirements, simulate=True)
        if payment is not None:
            now = self.budget.chain.block_timestamp()
            if payment.deadline < now + DEADLINE_MARGIN_S:
                return VerifyResponse(
                    is_valid=False, invalid_reason=DEADLINE_TOO_SOON, payer=response.payer,
                    invalid_message=f"deadline {payment.deadline} is less than "
                                    f"{DEADLINE_MARGIN_S} s after the chain's time {now}")
        return response

    def _verify(self, payload: PaymentPayload, requirements: PaymentRequirements,
                simulate: bool) -> tuple[VerifyResponse, SignedPayment | None]:
        def invalid(reason: str, message: str | None = None, payer: str | None = None):
            log.info("%s verify refused: %s %s", SCHEME, reason, message or "")
            return VerifyResponse(is_valid=False, invalid_reason=reason, invalid_message=message,
                                  payer=payer), None

        for what, reqs in (("requirements", requirements), ("payment", payload.accepted)):
            problem = requirements_problem(reqs, self.network, self.budget.address, self.token)
            if problem is not None:
                reason, _, message = problem.partition(": ")
                return invalid(reason, f"the {what}: {message}")
        try:
            payment = parse_payment(payload.payload)
        except ValueError as exc:
            return invalid(INVALID_PAYLOAD, str(exc))
        if not same_address(payment.payee, requirements.pay_to):
            return invalid(WRONG_PAYEE, f"the payment pays {payment.payee}, the requirements "
                                        f"{requirements.pay_to}")
        if str(payment.amount) != str(requirements.amount):
            return invalid(WRONG_AMOUNT, f"the payment moves {payment.amount}, the requirements "
                                         f"ask {requirements.amount}")
        grant = self.budget.grants(payment.grant)
        if not grant.exists:
            return invalid("unknown grant", f"grant {payment.grant} does not exist")
        name, version = self.budget.domain()
        typed = payment_typed_data(self.budget.chain.network.chain_id, self.budget.address,
                                   payment.grant, payment.payee, payment.amount, payment.nonce,
                                   payment.deadline, name, version)
        signer = messages.signer_or_none(typed, "0x" + payment.signature.hex())
        if signer is None or not same_address(signer, grant.key):
            return invalid(BAD_SIGNATURE, f"signed by {signer}, grant {payment.grant}'s key is "
                                          f"{grant.key}", grant.owner)
        if simulate:
            reason = self.simulate(payment)
            if reason is not None:
                return invalid(reason, f"AgentBudget.pay would revert: {reason}", grant.owner)
        return VerifyResponse(is_valid=True, payer=grant.owner), payment

    def _pay_call(self, payment: SignedPayment):
        return self.budget.contract.functions.pay(
            payment.grant, checksum("payee", payment.payee),
            payment.amount, payment.nonce, payment.deadline, payment.signature)

    def simulate(self, payment: SignedPayment) -> str | None:
        """`pay` as an eth_call from the facilitator: its revert reason, or None if it passes."""
        fn = self._pay_call(payment)
        try:
            self.budget.chain.rpc(lambda: fn.call({"from": self.signer.address}),
                                  what=f"{SCHEME} pay simulation")
        except (ContractLogicError, ContractCustomError) as exc:
            return revert_reason(exc)
        return None

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements,
               context: Any = None) -> SettleResponse:
        network = str(requirements.network)
        signature = (payload.payload or {}).get("signature") if isinstance(
            payload.payload, dict) else None
        cached = self._pending.get(signature) if isinstance(signature, str) else None
        if cached is not None:   # a retry of a settle whose receipt wait timed out
            self._pending.delete(signature)
            payment = parse_payment(payload.payload)
            return self._await(payment, cached, network, None)
        verified, payment = self._verify(payload, requirements, simulate=self.simulate_in_settle)
        if not verified.is_valid or payment is None:
            if verified.invalid_reason == NONCE_USED and payment is None:
                settled = self._settled_by_someone(payload, network, verified.payer)
                if settled is not None:
                    return settled
            return SettleResponse(success=False, error_reason=verified.invalid_reason,
                                  error_message=verified.invalid_message, transaction="",
                                  network=network, payer=verified.payer)
        try:
            tx = self.signer.write_contract(
                self.budget.address, self.budget.contract.abi, "pay", payment.grant,
                checksum("payee", payment.payee), payment.amount,
                payment.nonce, payment.deadline, payment.signature)
        except Exception as exc:   # the node refused it, or the RPC failed before a hash came
            log.warning("%s settle: sending pay failed: %s", SCHEME, exc)
            return SettleResponse(success=False, error_reason=TRANSACTION_FAILED,
                                  error_message=str(exc)[:500], transaction="", network=network,
                                  payer=verified.payer)
        response = self._await(payment, tx if tx.startswith("0x") else "0x" + tx, network,
                               verified.payer)
        if not response.success and response.error_reason == TRANSACTION_FAILED:
            return self._settled_by_someone(payload, network, verified.payer) or response
        return response

    def _settled_by_someone(self, payload: PaymentPayload, network: str,
                            payer: str | None) -> SettleResponse | None:
        """The same payment settled by someone else's transaction (anyone may send `pay` with
        the signed payment: a mempool copier), found by its AgentPaid in the recent blocks: the
        payment HAS settled, so the resource is served with that transaction as the receipt, not
        withheld from a client who paid (review 22). None if not found, or if this facilitator
        sent it (the payment was settled, and served, once already). One payee's paywalls must
        share one facilitator key: two with their own keys would each take the other's
        settlement of one payment sent to both at once as a copier's."""
        try:
            payment = parse_payment(payload.payload)
        except ValueError:
            return None
        for entry in settled_by_others(self.budget.chain, CONTRACT, "AgentPaid",
                                       {"grant_id": payment.grant,
                                        "payee": checksum("payee", payment.payee)},
                                       self.signer.get_addresses()):
            args = entry["args"]
            if args["amount"] == payment.amount and bytes(args["nonce"]) == payment.nonce:
                tx = "0x" + bytes(entry["transactionHash"]).hex()
                log.info("%s settle: already settled by %s", SCHEME, tx)
                return SettleResponse(success=True, transaction=tx, network=network, payer=payer,
                                      amount=str(payment.amount))
        return None

    def _await(self, payment: SignedPayment, tx: str, network: str,
               payer: str | None) -> SettleResponse:
        """Wait for `tx`'s receipt (the SDK's helper: a timeout answers settlement_pending and
        remembers the transaction for the retry) and check it emitted the AgentPaid it should."""
        def check_event(receipt) -> SettleResponse | None:
            if self._paid(receipt.logs or [], payment):
                return None
            return SettleResponse(success=False, error_reason=TRANSACTION_FAILED,
                                  error_message="the transaction emitted no matching AgentPaid",
                                  transaction=tx, network=network, payer=payer)

        return wait_for_receipt_and_build_response(
            self.signer, tx, network, payer, failed_reason=TRANSACTION_FAILED,
            amount=str(payment.amount), validate_receipt=check_event,
            pending_store=self._pending, pending_key="0x" + payment.signature.hex())

    def _paid(self, logs: list, payment: SignedPayment) -> bool:
        event = self.budget.contract.events.AgentPaid()
        ours = [entry for entry in logs if same_address(entry.get("address"), self.budget.address)]
        for decoded in event.process_receipt({"logs": ours}, errors=DISCARD):
            args = decoded["args"]
            if (args["grant_id"] == payment.grant and same_address(args["payee"], payment.payee)
                    and args["amount"] == payment.amount and bytes(args["nonce"]) == payment.nonce):
                return True
        return False


# -- the scheme on a Tessera network (chain/x402_facilitator.py's SchemeSupport) ---------------------
def budget_price(net: X402Network, price: Any) -> Any:
    """`price` as an AssetAmount on the network's PaymentToken; the server scheme adds the
    budget's `extra`."""
    return asset_price(net, price)


class BudgetSupport:
    """ "tessera-budget" on a network that has an AgentBudget (none else: `facilitator` and
    `option` answer None there, and only "exact" is offered)."""

    scheme = SCHEME

    @staticmethod
    def _budget(net: X402Network) -> AgentBudget | None:
        if CONTRACT not in net.chain.network.contracts:
            return None
        return AgentBudget(net.chain)

    def facilitator(self, net: X402Network, signer: Any,
                    simulate_in_settle: bool) -> BudgetFacilitatorScheme | None:
        budget = self._budget(net)
        return None if budget is None else BudgetFacilitatorScheme(budget, signer,
                                                                   simulate_in_settle)

    def server(self, net: X402Network) -> BudgetServerScheme:
        budget = self._budget(net)
        if budget is None:
            return BudgetServerScheme(net.token.address)
        name, version = budget.domain()
        return BudgetServerScheme(net.token.address, budget.address, name, version)

    def option(self, net: X402Network, pay_to: str, price: Any,
               max_timeout_seconds: int) -> PaymentOption | None:
        if self._budget(net) is None:
            return None
        return PaymentOption(scheme=SCHEME, network=net.caip2, pay_to=pay_to,
                             price=budget_price(net, price),
                             max_timeout_seconds=min(max_timeout_seconds, MAX_DEADLINE_S))


register_scheme(BudgetSupport())
