"""The two ERC-20 tokens: PaymentToken (escrow and pay) and StakeToken (stake, bonds, slashes)."""

from __future__ import annotations

from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper
from tessera.errors import InsufficientFunds
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    format_amount,
)


class Token(ContractWrapper):
    """Balances and allowances of one token, with amounts in words."""

    SYMBOL = ""
    DECIMALS = 0

    def format(self, base_units: int) -> str:
        return format_amount(base_units, self.DECIMALS, self.SYMBOL)

    def balance_of(self, address: str) -> int:
        return self._call("balanceOf", address)

    def total_supply(self) -> int:
        return self._call("totalSupply")

    def allowance(self, owner: str, spender: str) -> int:
        return self._call("allowance", owner, spender)

    def require_balance(self, amount: int, purpose: str) -> None:
        """Refuse, before sending anything, when this account holds less than `amount`."""
        have = self.balance_of(self.chain.address)
        if have < amount:
            raise InsufficientFunds(
                f"not enough {self.SYMBOL} for {purpose}: {self.chain.address} holds "
                f"{self.format(have)}, needs {self.format(amount)}")

    def ensure_allowance(self, spender: str, amount: int) -> TxReceipt | None:
        """Approve `spender` for `amount` unless it may already take that much."""
        if self._call("allowance", self.chain.address, spender) >= amount:
            return None
        return self._send("approve", spender, amount)

    def transfer(self, to: str, amount: int, purpose: str) -> TxReceipt:
        """Send `amount` from this account to `to`, refused first when the account holds less."""
        self.require_balance(amount, purpose)
        return self._send("transfer", to, amount)

    def fund(self, spender: str, amount: int, purpose: str) -> list[TxReceipt]:
        """require_balance then ensure_allowance: what a deposit into `spender` needs first."""
        self.require_balance(amount, purpose)
        approval = self.ensure_allowance(spender, amount)
        return [approval] if approval is not None else []


class PaymentToken(Token):
    NAME, SYMBOL, DECIMALS = "PaymentToken", PAYMENT_SYMBOL, PAYMENT_DECIMALS


class StakeToken(Token):
    NAME, SYMBOL, DECIMALS = "StakeToken", STAKE_SYMBOL, STAKE_DECIMALS
