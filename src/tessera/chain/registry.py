"""ProviderRegistry.vy: providers' stake, offers (hardware, endpoint, price floor) and jail."""

from __future__ import annotations

from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper
from tessera.chain.tokens import StakeToken
from tessera.protocol.matching import ProviderOffer


class ProviderRegistry(ContractWrapper):
    NAME = "ProviderRegistry"

    def provider_addresses(self) -> list[str]:
        return [self._call("provider_at", i) for i in range(self._call("provider_count"))]

    def provider_record(self, address: str) -> dict:
        """The registry's `Provider` struct, by field name (registered_at 0: never registered)."""
        return self._struct("providers", Web3.to_checksum_address(address))

    def provider_offer(self, address: str) -> ProviderOffer | None:
        record = self.provider_record(address)
        if record["registered_at"] == 0:
            return None
        return ProviderOffer(
            address=Web3.to_checksum_address(address),
            active=self.is_active(address),
            gpu_model=record["gpu_model"], gpu_count=record["gpu_count"],
            gpu_memory_mb=record["gpu_memory_mb"], benchmark_score=record["benchmark_score"],
            endpoint=record["endpoint"], price_floor=record["price_floor"],
        )

    def provider_count(self, block: int | str = "latest") -> int:
        return self._call_at(block, "provider_count")

    def index_of(self, address: str, block: int | str = "latest") -> int:
        """Registration order, 0-based: the provider's bit in Uptime's liveness reports (0 for
        an unregistered address too: check is_registered)."""
        return self._call_at(block, "index_of", Web3.to_checksum_address(address))

    def provider_at(self, index: int, block: int | str = "latest") -> str:
        """The provider with registry index `index` (registration order; the inverse of
        index_of)."""
        return self._call_at(block, "provider_at", index)

    def is_registered(self, address: str, block: int | str = "latest") -> bool:
        return bool(self._call_at(block, "is_registered", Web3.to_checksum_address(address)))

    def is_active(self, address: str) -> bool:
        return bool(self._call("is_active", Web3.to_checksum_address(address)))

    def min_stake(self) -> int:
        return self._call("min_stake")

    def register(self, stake: int, gpu_model: str, gpu_count: int, gpu_memory_mb: int,
                 benchmark_score: int, endpoint: str, price_floor: int) -> TxReceipt:
        """Stake `stake` and publish the offer (approving the stake first if needed)."""
        StakeToken(self.chain).fund(self.address, stake, "stake")
        return self._send("register", stake, gpu_model, gpu_count, gpu_memory_mb, benchmark_score,
                          endpoint, price_floor)

    def update_offer(self, gpu_model: str, gpu_count: int, gpu_memory_mb: int,
                     benchmark_score: int, endpoint: str, price_floor: int) -> TxReceipt:
        return self._send("update_offer", gpu_model, gpu_count, gpu_memory_mb, benchmark_score,
                          endpoint, price_floor)
