"""The provider node's Prometheus metrics, served at /metrics (one registry per node)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ProviderMetrics:
    """Every counter and gauge of one node, registered in `registry` in a fixed order (the
    order /metrics lists them in)."""

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.bids = Counter("tessera_provider_bids", "bids signed", registry=registry)
        self.leases = Counter("tessera_provider_leases", "leases won", registry=registry)
        self.refused = Counter("tessera_provider_requests_refused", "requests refused",
                               ["reason"], registry=registry)
        self.jobs = Counter("tessera_provider_jobs_finished", "jobs finished", ["outcome"],
                            registry=registry)
        self.withdrawn = Counter("tessera_provider_withdrawn_base_units",
                                 "payment token withdrawn (base units)", registry=registry)
        self.block = Gauge("tessera_provider_last_block", "last block processed",
                           registry=registry)
        self.active = Gauge("tessera_provider_active_leases", "active leases", registry=registry)
        self.heartbeats = Counter("tessera_provider_heartbeats", "uptime heartbeats sent",
                                  ["outcome"], registry=registry)
        self.heartbeat_epoch = Gauge("tessera_provider_heartbeat_epoch",
                                     "last uptime epoch with a heartbeat", registry=registry)
        self.probes = Counter("tessera_provider_probes", "validator probes", ["outcome"],
                              registry=registry)
        self.jailed_until = Gauge("tessera_provider_jailed_until",
                                  "end of the provider's jail (unix s; 0 = not jailed)",
                                  registry=registry)
        self.registry_active = Gauge("tessera_provider_registry_active",
                                     "1 while the registry lets tenants lease this provider",
                                     registry=registry)
        self.hw_challenges = Counter("tessera_provider_hardware_challenges",
                                     "validator hardware challenges", ["outcome"],
                                     registry=registry)
