"""The tenant's commands as flows a person watches: what `tessera job ...` runs."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tessera.chain.accounts import tessera_home
from tessera.chain.settlement import Settlement
from tessera.errors import ProviderGone, SpecError, TenantError
from tessera.files import read_text
from tessera.protocol.jobspec import BUILTIN_CORPUS, DatasetSpec, JobSpec, parse_job_spec
from tessera.protocol.money import parse_duration
from tessera.protocol.wire import LeaseStatus
from tessera.protocol.workload import TrainingWorkload
from tessera.tenant.bidding import lease_nodes, money
from tessera.tenant.client import Tenant, tenant_for
from tessera.tenant.escrow import EscrowWatch, paid_from_peer
from tessera.tenant.follow import DEFAULT_GRACE_S, MAX_GRACE_S
from tessera.tenant.lease_money import UNITS, money_json
from tessera.tenant.lease_views import close_lines


def load_dataset(spec: DatasetSpec, relative_to: Path | None = None) -> bytes:
    from tessera.compute.corpus import build_stdlib_corpus

    if spec.source == BUILTIN_CORPUS:
        return build_stdlib_corpus(spec.max_bytes)
    path = Path(spec.source)
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    if not path.is_file():
        raise TenantError(f"dataset.source: file {path} not found")
    data = path.read_bytes()[: spec.max_bytes]
    if len(data) < 4096:
        raise TenantError(f"dataset.source: {path} has {len(data)} bytes; at least 4096 needed")
    return data


def jobs_dir() -> Path:
    return tessera_home() / "jobs"


def remember_job(lease_id: int, spec: JobSpec, dataset: bytes) -> None:
    """Keep what later commands need to check results: the spec and the dataset."""
    import hashlib

    folder = jobs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(dataset).hexdigest()
    (folder / f"{sha}.data").write_bytes(dataset)
    (folder / f"lease-{lease_id}.json").write_text(json.dumps(
        {"spec": spec.model_dump(mode="json"), "dataset_sha256": sha}))


def remembered_workload(lease_id: int) -> TrainingWorkload | None:
    """The workload of the job this machine sent for `lease_id` (None: not remembered here)."""
    record = jobs_dir() / f"lease-{lease_id}.json"
    try:
        workload = JobSpec.model_validate(json.loads(record.read_text())["spec"]).workload
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return workload if isinstance(workload, TrainingWorkload) else None


def remembered_dataset(lease_id: int) -> bytes | None:
    record = jobs_dir() / f"lease-{lease_id}.json"
    if not record.exists():
        return None
    sha = json.loads(record.read_text())["dataset_sha256"]
    path = jobs_dir() / f"{sha}.data"
    return path.read_bytes() if path.exists() else None


def progress_printer(console: Console):
    """A rich progress bar fed by LeaseStatus updates; returns (progress, callback)."""
    progress = Progress(TextColumn("[bold]training"), BarColumn(), TextColumn("{task.completed}/"
                        "{task.total} steps"), TextColumn("{task.fields[loss]}"),
                        TimeElapsedColumn(), console=console, transient=False)
    task = progress.add_task("train", total=None, loss="")

    def update(status: LeaseStatus) -> None:
        loss = f"loss {status.train_loss:.3f}" if status.train_loss is not None else status.status
        progress.update(task, completed=status.step, total=status.steps or None, loss=loss)
    return progress, update


def parse_grace(text: str | int) -> int:
    """`--provider-grace`: '90s', '5m', ... or seconds; positive and at most MAX_GRACE_S."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"--provider-grace: {exc}") from None
    if seconds > MAX_GRACE_S:
        raise ValueError(f"--provider-grace: {seconds} s is longer than the limit of "
                         f"{MAX_GRACE_S} s (a day)")
    return seconds


def submit_job(spec_path: Path, network: Path | None, account: str, *, follow: bool, close: bool,
               console: Console, provider_grace: str | int = int(DEFAULT_GRACE_S),
               pay_from_chain: int | None = None) -> dict:
    """`provider_grace`: how long the provider may stay unreachable while the job is followed
    before the lease is closed and its epochs without a heartbeat are claimed (single-node).
    `pay_from_chain`: the deposit comes from this peer chain in one bridge message, and the
    order's refunds go back there (a DiLoCo job's replacement workers' orders too)."""
    # bad input fails here, before any connection or transaction
    grace_s = parse_grace(provider_grace)
    spec = parse_job_spec(read_text(spec_path, SpecError), spec_path)
    dataset = load_dataset(spec.dataset, relative_to=spec_path.parent)
    tenant = tenant_for(network, account, pay_from_chain=pay_from_chain)
    if spec.mode == "diloco":
        from tessera.tenant.multinode import run_diloco_job

        return run_diloco_job(tenant, spec, dataset, console, results_dir=jobs_dir() / "results")
    return run_rental(tenant, spec, dataset, console, follow=follow, close=close,
                      results_dir=jobs_dir() / "results", grace_s=grace_s)


def run_rental(tenant: Tenant, spec: JobSpec, dataset: bytes, console: Console, *, follow: bool,
               close: bool, results_dir: Path, grace_s: float = DEFAULT_GRACE_S) -> dict:
    """Order -> bids -> lease -> manifest -> progress -> verified results -> settlement.
    A provider unreachable while followed is retried, each try printed; after `grace_s` s
    the lease is closed, its dead epochs claimed and ProviderGone raised (tenant/follow.py)."""
    start_balance = tenant.market.payment_token.balance_of(tenant.chain.address)
    leasing = lease_nodes(tenant, spec, console)
    summary: dict = {"job": spec.name, "tenant": tenant.chain.address, "units": UNITS,
                     **leasing.summary()}
    txs = summary["transactions"]
    [(lease_id, best)] = leasing.leases
    txs["accept"] = txs["accept"][0]
    summary["lease_id"] = lease_id
    summary["winner"] = {"provider": best.bid.provider, "endpoint": best.offer.endpoint,
                         "price_per_gpu_hour": best.bid.price_per_gpu_hour}
    tenant.send_manifest(lease_id, spec.workload, dataset)
    remember_job(lease_id, spec, dataset)
    console.print(f"signed manifest and {len(dataset):,}-byte dataset sent to {best.offer.endpoint}")
    if not follow:
        return summary
    progress, update = progress_printer(console)

    def notice(line: str) -> None:
        console.print(line, style="yellow", markup=False)

    watch = EscrowWatch(tenant, spec.escrow, notice)   # warnings and top-ups ([escrow])

    def on_progress(status: LeaseStatus) -> None:
        update(status)
        watch.check([lease_id])

    with progress:
        try:
            final = tenant.follow(lease_id, on_progress=on_progress, grace_s=grace_s,
                                  on_notice=notice)
        except ProviderGone:
            raise   # the lease is closed and its downtime claimed; the message says so
        except TenantError as exc:   # a refusal or the timeout: the lease is still open
            raise TenantError(f"{exc}; lease {lease_id} is still open: `tessera job close "
                              f"{lease_id}` settles it") from None
    summary["escrow"] = watch.summary()
    summary["job_status"] = final.status
    summary["tokens_per_s"] = final.tokens_per_s
    if final.status != "succeeded":
        raise TenantError(f"job on lease {lease_id} ended {final.status}: {final.detail}; "
                          f"`tessera job close {lease_id}` recovers the unspent escrow")
    results = tenant.fetch_results(lease_id, results_dir / f"lease-{lease_id}", dataset,
                                   spec.workload)
    summary["result_hash"] = results.result_hash
    summary["artifacts"] = {name: meta["sha256"] for name, meta in results.artifacts.items()}
    summary["results_dir"] = str(results.directory)
    summary["loss_history"] = results.loss_history
    summary["metrics"] = results.metrics
    summary["recomputed_val_loss"] = results.recomputed_val_loss   # from the downloaded model
    summary["checks"] = results.checks
    for check in results.checks:
        console.print(f"  [green]ok[/] {check}")
    console.print(f"artifacts in {results.directory}")
    if close:
        settlement = tenant.close(lease_id)
        txs["close"] = settlement.tx
        summary["settlement"] = {"provider": settlement.provider_amount, "fee": settlement.fee,
                                 "refund": settlement.refund,
                                 "downtime_epochs": len(settlement.downtime_epochs),
                                 "downtime_refund": settlement.downtime_refund}
        lines, m = close_lines(tenant, settlement)
        summary["settlement"]["provider_withdrawn_earlier"] = {
            "amount": m.withdrawn, "fee": m.withdrawn_fee, "txs": list(m.withdraw_txs)}
        summary["lease_money"] = money_json(m)
        end_balance = tenant.market.payment_token.balance_of(tenant.chain.address)
        summary["tenant_spent"] = start_balance - end_balance
        if tenant.pay_from is not None:   # paid from the peer chain: what the order kept of it
            order_id = tenant.market.lease(lease_id).order_id
            paid = paid_from_peer(tenant, [(order_id, lease_id)])
            [order] = paid["orders"]
            summary["tenant_spent"] = paid["spent"]
            summary["paid_from_chain"] = {"chain_id": paid["chain_id"], **order}
            lines.append(f"the order's refunds ({money(order['refunded'])} so far) go back to "
                         f"this account on chain {paid['chain_id']}, sent by the relayer "
                         "(BridgeOrders.send_back)")
        for line in lines:
            console.print(line, markup=False, highlight=False)
    return summary


def fetch_and_check(lease_id: int, out: Path | None, network: Path | None, account: str,
                    console: Console) -> None:
    tenant = tenant_for(network, account)
    dataset = remembered_dataset(lease_id)
    results = tenant.fetch_results(lease_id, out or jobs_dir() / "results" / f"lease-{lease_id}",
                                   dataset, remembered_workload(lease_id))
    for check in results.checks:
        console.print(f"ok: {check}")
    if dataset is None:
        console.print("note: the dataset is not on this machine, so the loss was not recomputed")
    console.print(f"artifacts in {results.directory}")


def release_pay(lease_id: int, network: Path | None, account: str, console: Console) -> None:
    """`tessera job release`: release a verified lease's pay as far as its rounds are final;
    the pay of a round proven bad comes back to the tenant, and once a cheat is proven for the
    lease, all of its pay still held (forfeited; anyone may send it)."""
    tenant = tenant_for(network, account)
    market = tenant.market
    order_id = market.lease(lease_id).order_id
    if not market.is_verified(order_id):
        raise TenantError(f"lease {lease_id} is not verified: its pay streams, nothing is held")
    released = Settlement(tenant.chain).release_ready(lease_id, order_id)
    if released is None:
        console.print(f"lease {lease_id}: nothing to release now (the next round is not final "
                      "yet, or everything is released)")
        return
    console.print(f"lease {lease_id}: rounds {released.from_round}..{released.to_round - 1} "
                  f"released (tx {released.tx}): {money(released.amount)} payable to the "
                  f"provider, {money(released.refund)} of proven or forfeited rounds refunded to the tenant")
