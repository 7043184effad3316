"""ForgerySlasher.vy: the home chain's end of a proven bridge forgery (docs/bridge.md, "A
forger's slash"). A BridgeOutbox that proves a forgery reports it here (a call on the home
chain, a bridge message from a peer chain); the forger's whole validator stake is taken, the
prover's reward paid and the rest sent to the Market's treasury. It is also the Validators'
withdraw guard: a member of the bridge's current committee cannot withdraw. No owner."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak
from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper


def slash_key(source_chain: int, signer: str, message_id: bytes, epoch: int) -> bytes:
    """The contract's once-only key for a forgery (its `slashed` map)."""
    return keccak(encode(["uint256", "address", "bytes32", "uint256"],
                         [source_chain, Web3.to_checksum_address(signer), bytes(message_id), epoch]))


class ForgerySlasher(ContractWrapper):
    NAME = "ForgerySlasher"

    def reward_bps(self) -> int:
        return self._call("reward_bps")

    def treasury(self) -> str:
        """Where the slash less the reward goes: the Market's treasury now."""
        return self.chain.call(self.chain.contract("Market").functions.treasury())

    def may_withdraw(self, validator: str) -> bool:
        """The Validators' withdraw guard: False for a member of the current bridge committee."""
        return bool(self._call("may_withdraw", Web3.to_checksum_address(validator)))

    def slashed(self, source_chain: int, signer: str, message_id: bytes, epoch: int) -> bool:
        """Whether the forgery (proven on `source_chain`'s outbox) was carried out here."""
        return bool(self._call("slashed", slash_key(source_chain, signer, message_id, epoch)))

    def slashes_in(self, receipt: TxReceipt) -> list[dict]:
        """The ForgerySlashed events of a transaction (a delivery, or a local proof)."""
        return self._events(receipt, "ForgerySlashed")
