"""Timelock.vy (snekmate's TimelockController): the owner of the ProviderRegistry, the
Validators, the Market, the StakeToken and the bridge (on each chain) after deployment. An
owner action on them (a slasher grant or revocation, an unpause) is scheduled here, visible to
everyone as a CallScheduled event, and can be executed only once the minimum delay has passed
(docs/contracts.md, "Owner powers")."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper

NO_PREDECESSOR = b"\x00" * 32


@dataclass(frozen=True)
class OwnerCall:
    """One call the timelock makes as owner: `target` (an address), its ABI-encoded payload."""

    target: str
    payload: bytes
    salt: bytes = b"\x00" * 32

    def args(self) -> tuple:
        return (self.target, 0, self.payload, NO_PREDECESSOR, self.salt)


class Timelock(ContractWrapper):
    NAME = "Timelock"

    def owner_call(self, contract: str, function: str, *args, salt: bytes = b"\x00" * 32) -> OwnerCall:
        """The call `contract.function(*args)` (a contract of this network, by name), ready to
        be scheduled and executed by the timelock."""
        target = self.chain.contract(contract)
        payload = target.encode_abi(function, args=list(args))
        return OwnerCall(Web3.to_checksum_address(target.address), Web3.to_bytes(hexstr=payload),
                         salt)

    def min_delay(self) -> int:
        return self._call("get_minimum_delay")

    def operation_id(self, call: OwnerCall) -> bytes:
        return self._call("hash_operation", *call.args())

    def ready_at(self, call: OwnerCall) -> int:
        """When a scheduled call becomes executable (0: not scheduled; 1: done)."""
        return self._call("get_timestamp", self.operation_id(call))

    def schedule(self, call: OwnerCall, delay: int | None = None) -> TxReceipt:
        """Schedule `call` (needs the proposer role) to be executable after `delay` seconds
        (at least, and by default, the minimum delay)."""
        delay = self.min_delay() if delay is None else delay
        return self._send("schedule", *call.args(), delay)

    def execute(self, call: OwnerCall) -> TxReceipt:
        """Execute a ready call (needs the executor role); refused before its time."""
        return self._send("execute", *call.args())

    def advance(self, contract: str, function: str, *args) -> tuple[str, int, TxReceipt | None]:
        """Move the owner action `contract.function(*args)` one step on: the first of its salts
        0, 1, 2... not yet executed (an action repeated later, a second unpause, takes the next)
        is scheduled if it is not, executed once ready. Returns (step, ready_at, receipt):
        "scheduled" (a receipt), "waiting" (no receipt: run again from ready_at) or "executed"."""
        salt = 0
        while True:
            call = self.owner_call(contract, function, *args, salt=salt.to_bytes(32, "big"))
            ready_at = self.ready_at(call)
            if ready_at != 1:   # 1: done
                break
            salt += 1
        if ready_at == 0:
            receipt = self.schedule(call)
            return "scheduled", self.ready_at(call), receipt
        if ready_at > self.chain.block_timestamp():
            return "waiting", ready_at, None
        return "executed", ready_at, self.execute(call)

    def cancel(self, call: OwnerCall) -> TxReceipt:
        return self._send("cancel", self.operation_id(call))
