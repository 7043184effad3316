"""Validators.vy: validators' stake (and its weight, checkpointed per block, that quorums
count), locks on voters' stake, and published receipt endpoints."""

from __future__ import annotations

from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper
from tessera.chain.tokens import StakeToken


class Validators(ContractWrapper):
    NAME = "Validators"

    def min_stake(self) -> int:
        return self._call("min_stake")

    def record(self, address: str) -> dict:
        """The `Validator` struct by field name (registered_at 0: never registered)."""
        return self._struct("validators", Web3.to_checksum_address(address))

    def is_validator(self, address: str) -> bool:
        return bool(self._call("is_validator", Web3.to_checksum_address(address)))

    def stake_of(self, address: str) -> int:
        return self._call("stake_of", Web3.to_checksum_address(address))

    def weight_of(self, address: str) -> int:
        """The weight a vote would carry now: active stake if at least the minimum, else 0."""
        return self._call("weight_of", Web3.to_checksum_address(address))

    def stake_at(self, address: str, block: int) -> int:
        """`address`'s weight at the end of past block `block` (a round's snapshot)."""
        return self._call("stake_at", Web3.to_checksum_address(address), block)

    def total_stake(self) -> int:
        return self._call("total_stake")

    def total_stake_at(self, block: int) -> int:
        return self._call("total_stake_at", block)

    def locked_until(self, address: str) -> int:
        """Before this time `withdraw_unbonded` is refused: a vote the stake backs is undecided."""
        return self._call("locked_until", Web3.to_checksum_address(address))

    def count(self) -> int:
        """How many addresses the list holds (validators ever registered, active or not)."""
        return self._call("validator_count")

    def at(self, index: int) -> str:
        return self._call("validator_at", index)

    def addresses(self) -> list[str]:
        """Every validator ever registered, active or not."""
        return [self.at(i) for i in range(self.count())]

    def active_endpoints(self) -> list[str]:
        """The published endpoints of the active validators."""
        return [endpoint for _, endpoint in self.active_with_endpoints()]

    def active_with_endpoints(self) -> list[tuple[str, str]]:
        """(address, endpoint) of each active validator that publishes an endpoint (a
        provider's beats go there, and the receipt must be signed by that address)."""
        return [(who, endpoint) for who in self.addresses() if self.is_validator(who)
                for endpoint in [self.record(who)["endpoint"]] if endpoint]

    def register(self, stake: int) -> TxReceipt:
        """Stake `stake` (approving the stake token first if needed) and become a validator."""
        StakeToken(self.chain).fund(self.address, stake, "staking")
        return self._send("register", stake)

    def add_stake(self, amount: int) -> TxReceipt:
        StakeToken(self.chain).fund(self.address, amount, "staking")
        return self._send("add_stake", amount)

    def set_endpoint(self, endpoint: str) -> TxReceipt:
        return self._send("set_endpoint", endpoint)

    def request_unbond(self, amount: int) -> TxReceipt:
        return self._send("request_unbond", amount)

    def withdraw_unbonded(self) -> TxReceipt:
        return self._send("withdraw_unbonded")
