"""What the parts of a provider node share: its config, account, chain, durable state, jobs,
metrics, log and the lock that serialises chain events against tenants' requests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from eth_account.signers.local import LocalAccount

from tessera.chain.client import Chain
from tessera.chain.market import Market
from tessera.chain.probes import Probes
from tessera.chain.settlement import Settlement
from tessera.chain.uptime import Uptime
from tessera.chain.validators import Validators
from tessera.errors import ChainError, Refused
from tessera.logs import EventLog
from tessera.provider.config import ProviderConfig
from tessera.provider.hardware import Hardware
from tessera.provider.metrics import ProviderMetrics
from tessera.provider.runner import JobSupervisor
from tessera.provider.state import ProviderState


@dataclass
class NodeContext:
    config: ProviderConfig
    log: EventLog
    account: LocalAccount
    chain: Chain
    market: Market
    state: ProviderState
    jobs: JobSupervisor
    metrics: ProviderMetrics
    # Held by the chain watcher while it applies a batch of events, and by every request that
    # changes a lease, so that neither sees the other half done. Re-entrant: a request may sign
    # a round's commitment while it holds it.
    lock: threading.RLock = field(default_factory=threading.RLock)
    hardware: Hardware | None = None   # detected by ProviderNode.prepare

    @property
    def address(self) -> str:
        return self.account.address

    @cached_property
    def uptime(self) -> Uptime:
        return Uptime(self.chain)

    @cached_property
    def validators(self) -> Validators:
        return Validators(self.chain)

    @cached_property
    def probes(self) -> Probes:
        return Probes(self.chain)

    @cached_property
    def settlement(self) -> Settlement:
        return Settlement(self.chain)

    @property
    def state_dir(self) -> Path:
        return Path(self.config.provider.state_dir)

    def my_open_lease(self, lease_id: int):
        """The lease as the chain has it, if it is this provider's and open; else Refused."""
        try:
            lease = self.market.lease(lease_id)
        except ChainError as exc:
            raise Refused(404, str(exc)) from None
        if lease.provider.lower() != self.address.lower():
            raise Refused(404, f"lease {lease_id} belongs to another provider")
        if not lease.is_open:
            raise Refused(409, f"lease {lease_id} is closed")
        return lease
