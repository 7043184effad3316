"""The tenant's side of a rental, as a Python SDK: order, bids, lease, manifest, results, settlement."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain, tx_hash
from tessera.chain.market import DowntimeClaim, Lease, Market
from tessera.chain.network import load_network
from tessera.chain.read_grant import ReadGrantAuth
from tessera.errors import ProviderGone, ProviderUnreachable, TenantError, TxRefused
from tessera.files import write_atomic
from tessera.http_deadline import (
    HTTP_TOTAL_S,
    DeadlineClient,
    json_of,
    text_of,
    transfer_time_s,
    within,
)
from tessera.protocol import messages
from tessera.protocol.bridge import OrderTerms
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.matching import BidVerdict, endpoint_problem
from tessera.protocol.wire import LeaseStatus, Manifest, SignedManifest
from tessera.protocol.workload import DilocoWorkerWorkload, TrainingWorkload
from tessera.tenant.artifacts import check_listing, download, read_metrics, size_limit
from tessera.tenant.bid_collection import collect_bids
from tessera.tenant.follow import (
    DEFAULT_GRACE_S,
    STATUS_TIMEOUT_S,
    Backoff,
    Outage,
    follow_lease,
    gone_lines,
)
from tessera.tenant.offer_index import OfferIndex
from tessera.tenant.peer_payments import PeerPayments

MANIFEST_VALIDITY_S = 600
# An order funded from a peer chain: its deposit's crossing (2 confirmations, the committee's
# attestations, the relayer's delivery) takes seconds on a devnet; this bounds the wait.
# transient provider failures: the follow loop retries them (tenant/follow.py)
RETRY_STATUSES = (408, 429)


@dataclass
class LeaseClose:
    """What closing a lease moved (and the downtime claimed just before it)."""
    lease_id: int
    provider_amount: int   # paid to the provider by the close (net of fee)
    fee: int
    refund: int            # back to the tenant by the close
    tx: str
    downtime_epochs: list[int] = field(default_factory=list)  # claimed just before the close
    downtime_refund: int = 0   # back to the tenant by those claims (payment token)
    stake_slashed: int = 0     # provider stake those claims slashed and burned (stake token)
    downtime_txs: list[str] = field(default_factory=list)


@dataclass
class Results:
    lease_id: int
    result_hash: str
    directory: Path
    artifacts: dict
    metrics: dict
    loss_history: list
    recomputed_val_loss: float | None
    checks: list[str] = field(default_factory=list)


class Tenant:
    def __init__(self, chain: Chain, on_event: Callable[[str, dict], None] | None = None,
                 http_timeout: float = 30, pay_from: Chain | None = None):
        """`pay_from`: this account on a peer chain, where its orders' deposits come from (each
        order funded in one bridge message; its refunds go back there, docs/bridge.md)."""
        self.chain = chain
        self.pay_from = pay_from
        self.market = Market(chain)
        # a provider dripping an answer holds no call longer than HTTP_TOTAL_S
        self.http = DeadlineClient(timeout=http_timeout, auth=ReadGrantAuth(chain),
                                   total_s=HTTP_TOTAL_S)
        self.emit = on_event or (lambda event, data: None)
        self._endpoints: dict[int, str] = {}   # lease -> its provider's endpoint (registry)
        self._offers: OfferIndex | None = None  # the registry's offers, kept between orders
        self._peer: PeerPayments | None = None  # with `pay_from` (tenant/peer_payments.py)

    # -- ordering ------------------------------------------------------------------------
    def post_order(self, spec: JobSpec, *, verified: bool = False, nodes: int | None = None,
                   escrow: int | None = None) -> tuple[int, list[str]]:
        """Post the spec's order (funded from `pay_from` when set); `nodes` and `escrow` replace
        the spec's (a DiLoCo job's replacement worker: one node, one lease's budget).
        `verified`: providers are paid only for final Verification rounds (docs/verification.md)."""
        order = spec.order
        nodes = order.nodes if nodes is None else nodes
        escrow = order.escrow if escrow is None else escrow
        # Bring the offer index up to date before the order exists: a first build reads every
        # registry event (about 7 s at 10,000 providers, bench/results/scale.json), which would
        # otherwise eat the bid window; collect_bids then reads only the blocks since.
        index = self.offer_index()
        listed = index.offers()
        self.emit("offers-indexed", {"providers": len(listed), "events_read": index.events_read})
        terms = OrderTerms(self.chain.address, spec.spec_hash(), order.gpu_model, order.min_gpus,
                           order.min_gpu_memory_mb, order.max_price_per_gpu_hour, order.duration,
                           nodes, verified)
        if self.pay_from is not None:
            return self.peer_payments().post_order(terms, escrow)
        order_id, receipts = self.market.create_order(
            terms.spec_hash, terms.gpu_model, terms.min_gpus, terms.min_gpu_memory_mb,
            terms.max_price_per_gpu_hour, terms.duration, terms.nodes, escrow,
            verified=terms.verified)
        hashes = [tx_hash(r) for r in receipts]
        self.emit("order-posted", {"order_id": order_id, "escrow": escrow, "txs": hashes})
        return order_id, hashes

    def top_up(self, lease_id: int, amount: int, wait: bool = True) -> list[str]:
        """Add `amount` to the lease's budget: at home, or (with `pay_from`) in one message from
        the peer chain, for a lease of an order paid from there (`wait`: for its delivery). The
        transactions' hashes (on the peer chain for a bridged top-up)."""
        if self.pay_from is None:
            return [tx_hash(r) for r in self.market.top_up(lease_id, amount)]
        return self.peer_payments().top_up(lease_id, amount, wait)

    def peer_payments(self) -> PeerPayments:
        """What this client keeps about its payments from `pay_from` (set it first)."""
        if self._peer is None or self._peer.peer is not self.pay_from:
            self._peer = PeerPayments(self.chain, self.pay_from, lambda e, d: self.emit(e, d))
        return self._peer

    def collect_bids(self, order_id: int, window_s: float) -> list[BidVerdict]:
        """Ask the providers whose offers can match the order for their bids, all at once,
        within `window_s` seconds, and judge them (tenant/bid_collection.py)."""
        return collect_bids(self.market, order_id, window_s, offer_index=self.offer_index(),
                            emit=self.emit)

    def offer_index(self) -> OfferIndex:
        """The tenant's index of the registry's offers (tenant/offer_index.py), one per Tenant."""
        if self._offers is None:
            self._offers = OfferIndex(self.chain)
        return self._offers

    def accept(self, verdict: BidVerdict) -> tuple[int, str]:
        bid = verdict.bid
        lease_id, receipt = self.market.accept_bid(bid)
        self.emit("lease-created", {"lease_id": lease_id, "provider": bid.provider,
                                    "tx": tx_hash(receipt)})
        return lease_id, tx_hash(receipt)

    # -- running -------------------------------------------------------------------------
    def endpoint(self, lease_id: int, provider: str | None = None) -> str:
        """The endpoint of the lease's provider, read from the registry once per lease (and
        again after the provider could not be reached there, in case it moved). `provider`:
        the lease's provider when the caller has just read the lease."""
        if lease_id not in self._endpoints:
            provider = provider or self.market.lease(lease_id).provider
            offer = self.market.registry.provider_offer(provider)
            if offer is None:
                raise ProviderUnreachable("the registry",
                                          f"provider {provider} is no longer registered")
            problem = endpoint_problem(offer.endpoint)   # e.g. one that would turn our paths
            if problem:                                  # into its query (review 15)
                raise ProviderUnreachable("the registry", f"provider {provider}: {problem}")
            self._endpoints[lease_id] = offer.endpoint
        return self._endpoints[lease_id]

    def send_manifest(self, lease_id: int, workload: TrainingWorkload | DilocoWorkerWorkload,
                      dataset: bytes, keep_in: Path | None = None) -> dict:
        """Sign the lease's manifest, send it and upload the dataset if the provider lacks it.
        `keep_in`: a folder where the signed manifest is kept as `lease-<id>.json` before it is
        sent (a challenge of the lease's work needs it later, across restarts)."""
        lease = self._own_lease(lease_id)
        manifest = Manifest(lease_id=lease_id, workload=workload,
                            dataset_sha256=hashlib.sha256(dataset).hexdigest(),
                            dataset_size=len(dataset))
        nonce, expiry = secrets.randbits(64), int(time.time()) + MANIFEST_VALIDITY_S
        typed = messages.manifest_typed_data(self.chain.network.chain_id,
                                             self.market.address, lease_id,
                                             manifest.digest(), nonce, expiry)
        signed = SignedManifest(manifest=manifest, nonce=nonce, expiry=expiry,
                                signature=messages.sign(self.chain.account, typed))
        if keep_in is not None:
            keep_in.mkdir(parents=True, exist_ok=True)
            write_atomic(keep_in / f"lease-{lease_id}.json", signed.model_dump_json())
        endpoint = self.endpoint(lease_id, lease.provider)
        answer = self._request("POST", f"{endpoint}/leases/{lease_id}/manifest", lease_id,
                               json=signed.model_dump(mode="json"))
        needs = answer.get("needs", [])
        if not isinstance(needs, list):
            raise TenantError(f"provider answered the manifest with needs={str(needs)[:80]!r}, "
                              "not a list of dataset hashes")
        if manifest.dataset_sha256 in needs:
            # a dataset may be large: its own limit, by size (HTTP_TOTAL_S is for the rest)
            with within(time.monotonic() + transfer_time_s(len(dataset))):
                answer = self._request(
                    "PUT", f"{endpoint}/leases/{lease_id}/blobs/{manifest.dataset_sha256}",
                    lease_id, content=dataset)
        self.emit("manifest-sent", {"lease_id": lease_id, "dataset": manifest.dataset_sha256,
                                    "bytes": len(dataset)})
        return answer

    def _request(self, method: str, url: str, lease_id: int, expect: type = dict,
                 **kwargs) -> dict | list:
        """One HTTP call to a lease's provider, its JSON answer (an object; `expect=list`: a
        list of objects). ProviderUnreachable for what may pass (no connection, timeout,
        5xx/408/429, an answer that is not JSON), TenantError for a refusal (any other 4xx) or
        an answer of another shape."""
        try:
            response = self.http.request(method, url, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._endpoints.pop(lease_id, None)   # look the endpoint up again next time
            raise ProviderUnreachable(url, f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        if response.status_code >= 400:
            try:
                detail = json_of(response.content).get("detail")
            except (ValueError, AttributeError):
                detail = text_of(response)
            if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
                raise ProviderUnreachable(url, f"HTTP {response.status_code}: {detail}")
            raise TenantError(f"provider refused {method} {url}: {detail}")
        try:
            answer = json_of(response.content)
        except ValueError:
            raise ProviderUnreachable(url, "the answer is not JSON") from None
        if not isinstance(answer, expect) or (
                expect is list and not all(isinstance(item, dict) for item in answer)):
            raise TenantError(f"provider answered {method} {url} with "
                              f"{response.content[:80]!r}: not a JSON "
                              f"{'list of objects' if expect is list else 'object'}")
        return answer

    def status(self, lease_id: int, timeout: float | None = None) -> LeaseStatus:
        """The job's status as its provider reports it; `timeout`: seconds for this request
        (default: the client's)."""
        url = f"{self.endpoint(lease_id)}/leases/{lease_id}"
        extra = {} if timeout is None else {"timeout": timeout}
        answer = self._request("GET", url, lease_id, **extra)
        try:
            return LeaseStatus.model_validate(answer)
        except ValueError:
            raise ProviderUnreachable(url, "the answer is not a job status") from None

    def logs(self, lease_id: int, since: int = 0) -> list[dict]:
        return self._request("GET", f"{self.endpoint(lease_id)}/leases/{lease_id}/logs", lease_id,
                             expect=list, params={"since": since})

    def follow(self, lease_id: int, on_progress: Callable[[LeaseStatus], None] | None = None,
               poll_s: float = 0.5, timeout_s: float = 3600, *,
               grace_s: float = DEFAULT_GRACE_S, on_notice: Callable[[str], None] | None = None,
               backoff: Backoff = Backoff()) -> LeaseStatus:
        """Poll the job until it ends. An unreachable provider is retried with backoff, each
        try told to `on_notice`; after `grace_s` seconds of it the lease is given up
        (`abandon`) and ProviderGone raised, saying what was refunded and slashed
        (tenant/follow.py)."""
        provider = self.market.lease(lease_id).provider

        def give_up(outage: Outage) -> ProviderGone:
            settlement = self.abandon(lease_id)
            lines = gone_lines(lease_id, provider, outage, grace_s, settlement)
            return ProviderGone("; ".join(lines), settlement)

        return follow_lease(lambda: self.status(lease_id, timeout=STATUS_TIMEOUT_S),
                            lease_id=lease_id, provider=provider, give_up=give_up,
                            on_progress=on_progress, notice=on_notice, poll_s=poll_s,
                            timeout_s=timeout_s, grace_s=grace_s, backoff=backoff)

    # -- results and settlement ----------------------------------------------------------
    def fetch_results(self, lease_id: int, directory: Path, dataset: bytes | None,
                      workload: TrainingWorkload | None = None) -> Results:
        """Download every artifact, check each against its sha256 and the result hash committed
        on chain, and recompute the model's held-out loss from the dataset when it is given.
        `workload`: the job's (bounds what an artifact may weigh; the default model's if not
        given)."""
        from tessera.compute.evaluate import evaluate_model
        from tessera.compute.train import ARTIFACT_NAMES

        lease = self.market.lease(lease_id)
        endpoint = self.endpoint(lease_id, lease.provider)
        listing = self._request("GET", f"{endpoint}/leases/{lease_id}/artifacts", lease_id)
        committed = bytes(lease.result_hash).hex()
        workload = workload or ordered_workload(self, lease_id, endpoint)
        artifacts = check_listing(listing, committed, ARTIFACT_NAMES,   # before any byte is written
                                  lambda name: size_limit(workload, name))
        checks = [f"result hash matches the on-chain commitment 0x{committed}"]
        directory.mkdir(parents=True, exist_ok=True)
        for name, meta in artifacts.items():
            download(self.http, endpoint, name, meta, directory)
        checks.append(f"{len(artifacts)} artifacts downloaded, each matching its sha256")
        metrics, history, reported = read_metrics(directory)
        recomputed = None
        if dataset is not None:
            try:   # with the ordered workload: never the one the provider saved (review 16)
                recomputed = evaluate_model(directory / "model.pt", dataset, workload)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise TenantError(f"the provider's model.pt is not the model ordered: "
                                  f"{str(exc)[:200]}") from None
            if abs(recomputed - reported) > 1e-3 * max(1.0, abs(reported)):
                raise TenantError(f"reported held-out loss {reported:.4f} does not reproduce: "
                                  f"recomputed {recomputed:.4f}")
            checks.append(f"held-out loss recomputed locally: {recomputed:.4f} "
                          f"(reported {reported:.4f})")
        self.emit("results-verified", {"lease_id": lease_id, "checks": checks})
        return Results(lease_id, listing["result_hash"], directory, artifacts, metrics, history,
                       recomputed, checks)

    def claim_downtime(self, lease_id: int) -> list[DowntimeClaim]:
        """Claim every epoch of the lease so far in which its provider sent no heartbeat (one
        transaction per Market.MAX_CLAIM_EPOCHS; none when there are none). docs/uptime.md."""
        claims = []
        for attempt in range(2):
            epochs = self.market.missed_epochs(self.market.lease(lease_id))
            try:
                per_tx = self.market.max_claim_epochs()
                for i in range(0, len(epochs), per_tx):
                    claims.append(self.market.claim_downtime(lease_id,
                                                             epochs[i:i + per_tx]))
                break
            except TxRefused:  # someone else claimed some of them first: look again, once
                if attempt:
                    raise
        for claim in claims:
            self.emit("downtime-claimed", {"lease_id": lease_id, **claim.__dict__})
        return claims

    def close(self, lease_id: int) -> LeaseClose:
        """Claim the lease's downtime, then close it: the provider is paid for live time only."""
        self._own_lease(lease_id)
        claims = self.claim_downtime(lease_id)
        receipt = self.market.close_lease(lease_id)
        event = self.market.lease_closed_event(receipt)
        settlement = LeaseClose(
            lease_id, event["provider_amount"], event["fee"], event["refund"], tx_hash(receipt),
            downtime_epochs=[e for c in claims for e in c.epochs],
            downtime_refund=sum(c.refund for c in claims),
            stake_slashed=sum(c.stake_slashed for c in claims),
            downtime_txs=[c.tx for c in claims])
        self.emit("lease-closed", settlement.__dict__)
        return settlement

    def abandon(self, lease_id: int) -> LeaseClose:
        """Give up on a lease whose provider is gone: claim its epochs without a heartbeat and
        close it (`close`), then claim any epoch that ended between the two. Claiming first
        matters: the close pays the provider all it earned by then, so a claim after it finds
        the lease empty. A lease its provider already closed is only claimed on (tx '')."""
        if self.market.lease(lease_id).is_open:
            settlement = self.close(lease_id)
        else:
            self._own_lease(lease_id, closed_ok=True)
            settlement = LeaseClose(lease_id, 0, 0, 0, "")
        for claim in self.claim_downtime(lease_id):
            settlement.downtime_epochs += claim.epochs
            settlement.downtime_refund += claim.refund
            settlement.stake_slashed += claim.stake_slashed
            settlement.downtime_txs.append(claim.tx)
        return settlement

    def _own_lease(self, lease_id: int, closed_ok: bool = False) -> Lease:
        lease = self.market.lease(lease_id)
        if lease.tenant.lower() != self.chain.address.lower():
            raise TenantError(f"lease {lease_id} belongs to {lease.tenant}, not {self.chain.address}")
        if not lease.is_open and not closed_ok:
            raise TenantError(f"lease {lease_id} is already closed")
        return lease


def ordered_workload(tenant: Tenant, lease_id: int, endpoint: str) -> TrainingWorkload:
    """The workload `tenant` ordered for the lease, read from the manifest its provider keeps,
    signed by the tenant's account (anything else is refused: the provider holds it)."""
    served = SignedManifest.model_validate(
        tenant._request("GET", f"{endpoint}/leases/{lease_id}/manifest", lease_id))
    m = served.manifest
    typed = messages.manifest_typed_data(tenant.chain.network.chain_id, tenant.market.address,
                                         m.lease_id, m.digest(), served.nonce, served.expiry)
    if m.lease_id != lease_id or not isinstance(m.workload, TrainingWorkload) or \
            messages.recover(typed, served.signature).lower() != tenant.chain.address.lower():
        raise TenantError(f"the manifest lease {lease_id}'s provider serves is not a training "
                          "manifest this account signed for it")
    return m.workload


def tenant_for(network: Path | None, account: str, on_event=None,
               pay_from_chain: int | None = None) -> Tenant:
    """`pay_from_chain`: a peer chain of the network where this account's TUSD is; its orders
    are funded from there in one message each (docs/bridge.md)."""
    net, key = load_network(network), resolve_account(account)
    chain = Chain(net, key)
    chain.check_connected()
    pay_from = None
    if pay_from_chain is not None:
        if "BridgeOrders" not in net.contracts:
            raise TenantError(f"network {net.name!r} has no BridgeOrders contract: orders cannot "
                              "be funded from another chain there")
        pay_from = Chain(net.peer(pay_from_chain), key)
        pay_from.check_connected()
    return Tenant(chain, on_event=on_event, pay_from=pay_from)
