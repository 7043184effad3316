"""What every contract wrapper shares: calls, transactions, structs and events by name.

One wrapper per contract (chain/market.py, registry.py, tokens.py, uptime.py, validators.py,
probes.py, verification.py, hardware.py), each a subclass of `ContractWrapper` named after its
contract. Wrappers decode structs by field name from the ABI, never by position.
"""

from __future__ import annotations

from typing import Any

from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from tessera.chain.client import Chain, tx_hash
from tessera.errors import ChainError

ZERO_ADDRESS = "0x" + "0" * 40


def named(fn_abi: dict, value: Any) -> dict:
    """Name the fields of a struct returned by a getter, whatever order the contract uses."""
    outputs = fn_abi["outputs"]
    if len(outputs) == 1 and outputs[0].get("components"):
        names = [c["name"] for c in outputs[0]["components"]]
    else:
        names = [o["name"] for o in outputs]
        value = value if len(outputs) > 1 else (value,)
    return dict(zip(names, value, strict=True))


def event_args(receipt: TxReceipt, contract: Contract, event: str) -> dict:
    """The args of the first `event` a transaction emitted; ChainError if it emitted none."""
    logs = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
    if not logs:
        raise ChainError(f"transaction {tx_hash(receipt)} emitted no {event}")
    return dict(logs[0]["args"])


class ContractWrapper:
    """Typed access to one deployed contract, named in the network file as `NAME`."""

    NAME = ""

    def __init__(self, chain: Chain):
        self.chain = chain
        self.contract = chain.contract(self.NAME)

    @property
    def address(self) -> str:
        return self.contract.address

    def _call(self, function: str, *args: Any) -> Any:
        return self.chain.call(getattr(self.contract.functions, function)(*args))

    def _call_at(self, block: int | str, function: str, *args: Any) -> Any:
        """A view as of `block` (a number, or "latest")."""
        if block == "latest":
            return self._call(function, *args)
        fn = getattr(self.contract.functions, function)(*args)
        return self.chain.rpc(lambda: fn.call(block_identifier=block), what=fn.fn_name)

    def _send(self, function: str, *args: Any) -> TxReceipt:
        return self.chain.send(getattr(self.contract.functions, function)(*args))

    def _struct(self, getter: str, *key: Any) -> dict:
        fn = getattr(self.contract.functions, getter)(*key)
        return named(fn.abi, self.chain.call(fn))

    def _event(self, receipt: TxReceipt, event: str) -> dict:
        return event_args(receipt, self.contract, event)

    def _events(self, receipt: TxReceipt, event: str) -> list[dict]:
        logs = getattr(self.contract.events, event)().process_receipt(receipt, errors=DISCARD)
        return [dict(log["args"]) for log in logs]
