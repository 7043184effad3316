"""A DiLoCo job on several leased providers: what `tessera job submit` runs for mode = "diloco",
and what `tessera job resume DIR` runs to continue one whose tenant process stopped.

The job's folder (printed at the start) holds `job.json` (the coordinator's committed state:
leases, round reports, the spec), the coordinator checkpoint, a copy of the dataset, the
coordinator's structured log (`coordinator.log`), for a job paid from a peer chain its top-ups
in flight and late order fundings (`peer_payments.json`), and, at the end, `model.pt` and
`summary.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from tessera.chain.bridge_orders import BridgeOrders
from tessera.compute import numerics
from tessera.compute.diloco import DilocoConfig
from tessera.compute.evaluate import evaluate_model
from tessera.errors import TenantError
from tessera.logs import EventLog
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.lease import lease_budget
from tessera.protocol.matching import BidVerdict, rank
from tessera.protocol.wire import LeaseStatus
from tessera.protocol.workload import DilocoWorkerWorkload
from tessera.tenant.bidding import lease_nodes, money
from tessera.tenant.client import Tenant, tenant_for
from tessera.tenant.coordinator import (
    RESULT_FAULTS,
    DilocoCoordinator,
    RoundReport,
    WorkerLease,
    read_job_state,
)
from tessera.tenant.escrow import EscrowWatch, paid_from_peer
from tessera.tenant.lease_money import UNITS, job_cost_line, lease_money, money_json, short_line
from tessera.tenant.round_checks import MANIFESTS_DIR
from tessera.tenant.verify import VerifyTerms

DATASET_FILE, LOG_FILE, MODEL_FILE, SUMMARY_FILE = (
    "dataset.bin", "coordinator.log", "model.pt", "summary.json")
PEER_PAYMENTS_FILE = "peer_payments.json"   # a job paid from a peer chain: top-ups in flight


def diloco_config(spec: JobSpec, workers: int) -> DilocoConfig:
    d = spec.diloco
    outer = {k: v for k, v in (("outer_lr", d.outer_lr), ("outer_momentum", d.outer_momentum))
             if v is not None}   # unset: DilocoConfig's defaults, which depend on overlap
    return DilocoConfig(workload=spec.workload, workers=workers, inner_steps=d.inner_steps,
                        rounds=d.rounds, compression=d.compression, aggregation=d.aggregation,
                        overlap=d.overlap, **outer)


def worker_workload(spec: JobSpec, index: int, workers: int) -> DilocoWorkerWorkload:
    v = spec.verification
    return DilocoWorkerWorkload(model=spec.workload, inner_steps=spec.diloco.inner_steps,
                                worker=index, workers=workers, compression=spec.diloco.compression,
                                checkpoint_every=v.checkpoint_every if v.enabled else 0)


def verify_terms(spec: JobSpec, order_id: int) -> VerifyTerms | None:
    """The coordinator's verification settings for the job posted as `order_id` (None: off)."""
    v = spec.verification
    if not v.enabled:
        return None
    return VerifyTerms(job=order_id, checkpoint_every=v.checkpoint_every,
                       spot_check_probability=v.spot_check_probability,
                       replay_tolerance=v.replay_tolerance, challenge=v.challenge)


def wait_started(tenant: Tenant, lease_ids: list[int],
                 timeout_s: float = 120) -> dict[int, LeaseStatus | None]:
    """Each lease's job status once it runs or has ended (None if its provider did not answer
    in time). Never raises: a worker that did not start is dropped by the coordinator's first
    round, which its provider refuses."""
    deadline = time.monotonic() + timeout_s
    statuses: dict[int, LeaseStatus | None] = {}
    for lease_id in lease_ids:
        status = None
        while time.monotonic() <= deadline:
            try:
                status = tenant.status(lease_id)
            except TenantError:
                status = None
            if status is not None and status.status not in ("awaiting-manifest", "awaiting-inputs"):
                break
            time.sleep(0.1)
        statuses[lease_id] = status
    return statuses


def pick_replacement(verdicts: list[BidVerdict], job: list[WorkerLease]) -> BidVerdict | None:
    """The best valid bid from a provider new to the job, else from any provider whose answers
    were never refused (one dropped for lateness may have recovered)."""
    refused = {w.provider.lower() for w in job if w.fault in RESULT_FAULTS}
    seen = {w.provider.lower() for w in job}
    allowed = [v for v in rank(verdicts) if v.bid.provider.lower() not in refused]
    fresh = [v for v in allowed if v.bid.provider.lower() not in seen]
    return (fresh or allowed or [None])[0]


class Replacer:
    """Leases a one-node order for a dropped worker and starts its shard there."""

    def __init__(self, tenant: Tenant, spec: JobSpec, dataset: bytes, workers: int,
                 console: Console, job_dir: Path):
        self.tenant, self.spec, self.dataset, self.workers = tenant, spec, dataset, workers
        self.console, self.job_dir = console, job_dir

    def __call__(self, dropped: WorkerLease, job: list[WorkerLease]) -> WorkerLease:
        o, market = self.spec.order, self.tenant.market
        self.console.print(f"leasing a replacement for lease {dropped.lease_id} "
                           f"(worker {dropped.index}) ...")
        # its rounds get roots of their own; funded from the peer chain when the job's are
        order_id, _ = self.tenant.post_order(
            self.spec, verified=self.spec.verification.enabled, nodes=1,
            escrow=lease_budget(o.max_price_per_gpu_hour, o.min_gpus, o.duration))
        try:
            verdict = pick_replacement(self.tenant.collect_bids(order_id, o.bid_window), job)
            if verdict is None:
                raise TenantError(f"no acceptable bid for replacement order {order_id}")
            lease_id, _ = self.tenant.accept(verdict)
        finally:  # escrow no lease needed comes back at once
            order = market.order(order_id)
            if order.open and order.deposit > order.allocated:
                market.cancel_order(order_id)
        new = WorkerLease(lease_id, verdict.bid.provider, verdict.offer.endpoint,
                          index=dropped.index, order_id=order_id)
        try:
            self.tenant.send_manifest(lease_id, worker_workload(self.spec, dropped.index,
                                                                self.workers), self.dataset,
                                      keep_in=self.job_dir / MANIFESTS_DIR)
            status = wait_started(self.tenant, [lease_id])[lease_id]
            if status is None or status.status != "running":
                raise TenantError(f"replacement lease {lease_id} did not start: "
                                  f"{status.status + ' ' + status.detail if status else 'no answer'}")
        except Exception:
            self.tenant.close(lease_id)
            raise
        self.console.print(f"lease {dropped.lease_id} replaced by lease {lease_id} "
                           f"(provider {new.provider}) at {money(verdict.bid.price_per_gpu_hour)}"
                           "/GPU-h; it joins at the next round with the full global state")
        return new


def coordinator_options(tenant: Tenant, spec: JobSpec, dataset: bytes, workers: int,
                        job_dir: Path, console: Console, order_id: int) -> dict:
    """What the coordinator needs from the spec and the console, on submit and on resume."""
    d = spec.diloco

    def show(report: RoundReport) -> None:
        console.print(f"round {report.round + 1}/{d.rounds}: {report.contributors}/"
                      f"{report.workers} workers, held-out loss {report.val_loss:.4f}, "
                      f"{report.bytes_up + report.bytes_down:,} bytes moved, {report.seconds:.1f} s")
        if report.root_tx:
            console.print(f"  round root {report.root[:18]}… on chain (tx {report.root_tx})")
        for check in report.spot_checks:
            what = (f"payload check of lease {check['lease_id']}" if check["kind"] == "payload"
                    else f"spot check of lease {check['lease_id']} segment {check['segment']}")
            verdict = {True: "[green]matches its committed state[/]" if check["kind"] == "payload"
                       else "[green]replayed[/]", None: "[yellow]not judged here[/]",
                       False: "[red]failed[/]"}[check["ok"]]
            console.print(f"  {what}: {verdict}"
                          + ("" if check["ok"] else f" ({check['reason']})"))
        for line in report.dropped:
            console.print(f"  [yellow]dropped[/] {line}")
        if report.stepped_again:
            console.print("  outer step taken again without the dropped (the checks ran beside "
                          "it); the next round's parameters sent again")
        for c in report.challenges:
            console.print(f"  [red]challenged[/] lease {c['lease_id']} on chain: "
                          + (f"challenge {c['challenge_id']} (tx {c['tx']})" if "tx" in c
                             else c.get("error") or c.get("skipped", "")))
            if "case" in c:
                accepted = sum(answer == "accepted" for answer in c["case"].values())
                console.print(f"  case sent to the validators: {accepted}/{len(c['case'])} "
                              "accepted; they replay the segment and vote")

    return {"round_timeout_s": d.round_timeout, "on_round": show,
            "log": EventLog("coordinator", stream=open(job_dir / LOG_FILE, "a")),
            "replace": (Replacer(tenant, spec, dataset, workers, console, job_dir)
                        if d.replace_dropped else None),
            "max_replacements": d.max_replacements if d.max_replacements is not None
            else spec.order.nodes,
            "verify": verify_terms(spec, order_id)}


def watch_escrow(tenant: Tenant, spec: JobSpec, coordinator: DilocoCoordinator,
                 console: Console) -> EscrowWatch:
    """Once a round, after its report: warn about the job's leases that run out of escrow soon
    and top them up as the job spec's [escrow] says (tenant/escrow.py). Every lease the job
    ever had is passed (closed ones are skipped), so the ceiling counts all their top-ups."""
    watch = EscrowWatch(tenant, spec.escrow,
                        lambda line: console.print(line, style="yellow", markup=False))
    show = coordinator.on_round

    def on_round(report: RoundReport) -> None:
        show(report)
        watch.check([w.lease_id for w in coordinator.workers], force=True)

    coordinator.on_round = on_round
    watch.check([w.lease_id for w in coordinator.workers], force=True)
    return watch


def ensure_can_verify(spec: JobSpec) -> None:
    """Refuse, before anything is leased, a verified job on a machine that cannot replay its
    rounds bitwise (not the numerics profile workers sign: another CPU, torch or environment):
    there every check would answer "cannot judge here" and a poisoned or copied update would be
    aggregated and paid (review 23)."""
    if not spec.verification.enabled:
        return
    here = numerics.active_profile()
    if here != numerics.PROFILE:
        raise TenantError(
            f"this machine cannot check a verified job's rounds: it runs {here!r}, and the "
            f"rounds are replayed bitwise under {numerics.PROFILE!r} (an x86-64 CPU with AVX2, "
            f"torch {numerics.TORCH_VERSION}, as `tessera` sets it up); run the tenant on such a "
            "machine, or turn verification off ([verification] enabled = false) and rely on "
            "the robust aggregation alone")


def run_diloco_job(tenant: Tenant, spec: JobSpec, dataset: bytes, console: Console,
                   results_dir: Path) -> dict:
    ensure_can_verify(spec)
    balance_before = tenant.market.payment_token.balance_of(tenant.chain.address)
    leasing = lease_nodes(tenant, spec, console)
    summary: dict = {"job": spec.name, "mode": "diloco", "tenant": tenant.chain.address,
                     **leasing.summary()}
    leases = leasing.leases
    job_dir = results_dir / f"diloco-order-{leasing.order_id}"
    if job_dir.exists():  # a job of another chain (a devnet started afresh) used this order id
        job_dir = job_dir.with_name(f"{job_dir.name}-{leasing.transactions['order'][2:10]}")
    job_dir.mkdir(parents=True)
    (job_dir / DATASET_FILE).write_bytes(dataset)
    if tenant.pay_from is not None:   # what is in flight from the peer survives a resume
        tenant.peer_payments().keep_in(job_dir / PEER_PAYMENTS_FILE)
    workers = [WorkerLease(lease_id, verdict.bid.provider, verdict.offer.endpoint, index=index,
                           order_id=leasing.order_id)
               for index, (lease_id, verdict) in enumerate(leases)]
    job = {"spec": spec.model_dump(mode="json"), "summary": summary,
           "balance_before": balance_before,
           "pay_from_chain": tenant.pay_from.network.chain_id if tenant.pay_from else None}
    coordinator = DilocoCoordinator.start(  # committed before anything else can fail
        tenant, diloco_config(spec, len(workers)), dataset, workers, job_dir, job=job,
        **coordinator_options(tenant, spec, dataset, len(workers), job_dir, console,
                              leasing.order_id))
    console.print(f"job state in {job_dir}; if this process stops, "
                  f"`tessera job resume {job_dir}` continues from the last finished round")
    sent = []
    for worker in workers:
        try:
            tenant.send_manifest(worker.lease_id, worker_workload(spec, worker.index,
                                                                  len(workers)), dataset,
                                 keep_in=job_dir / MANIFESTS_DIR)
            sent.append(worker.lease_id)
        except TenantError as exc:  # its provider will refuse round 0: dropped, replaced
            console.print(f"[yellow]manifest for lease {worker.lease_id} not accepted[/]: {exc}")
    for lease_id, status in wait_started(tenant, sent).items():
        if status is None or status.status != "running":
            console.print(f"[yellow]worker on lease {lease_id} did not start[/]: "
                          f"{status.status if status else 'no answer'}")
    console.print(f"{len(workers)} workers leased; coordinator (this process) starts "
                  f"{spec.diloco.rounds} rounds of {spec.diloco.inner_steps} inner steps")
    watch = watch_escrow(tenant, spec, coordinator, console)
    return finish_job(tenant, spec, dataset, coordinator, console, watch)


def resume_diloco_job(tenant: Tenant, job_dir: Path, console: Console) -> dict:
    saved = read_job_state(job_dir)
    if saved["finished"]:
        raise TenantError(f"the job in {job_dir} has finished ({len(saved['reports'])} rounds); "
                          f"its model is {job_dir / MODEL_FILE}")
    if "spec" not in saved["job"]:
        raise TenantError(f"the job in {job_dir} was not started by `tessera job submit`")
    spec = JobSpec.model_validate(saved["job"]["spec"])
    ensure_can_verify(spec)
    if not (job_dir / DATASET_FILE).is_file():
        raise TenantError(f"{job_dir / DATASET_FILE} is missing: the job's dataset copy is needed")
    dataset = (job_dir / DATASET_FILE).read_bytes()
    workers = saved["config"]["workers"]
    if tenant.pay_from is not None:   # top-ups in flight and late fundings of the earlier run
        tenant.peer_payments().keep_in(job_dir / PEER_PAYMENTS_FILE)
    coordinator = DilocoCoordinator.resume(
        tenant, job_dir, dataset,
        **coordinator_options(tenant, spec, dataset, workers, job_dir, console,
                              saved["job"]["summary"]["order_id"]))
    active = [w for w in coordinator.workers if w.active]
    console.print(f"resuming {spec.name} at round {coordinator.coordinator.round + 1}/"
                  f"{spec.diloco.rounds} with {len(active)} worker(s) (leases "
                  f"{', '.join(str(w.lease_id) for w in active)}); each gets the full global "
                  "state again")
    watch = watch_escrow(tenant, spec, coordinator, console)
    return finish_job(tenant, spec, dataset, coordinator, console, watch)


def resume_job(job_dir: Path, network: Path | None, account: str, console: Console) -> dict:
    """`tessera job resume DIR`: bad input is refused before any connection is made."""
    saved = read_job_state(job_dir)
    job = saved.get("job") if isinstance(saved.get("job"), dict) else {}
    pay_from_chain = job.get("pay_from_chain")   # its replacements are funded from there too
    if pay_from_chain is not None and (type(pay_from_chain) is not int or pay_from_chain <= 0):
        raise TenantError(f"{job_dir}: job.json's pay_from_chain is {pay_from_chain!r}, not a "
                          "chain id")
    return resume_diloco_job(tenant_for(network, account, pay_from_chain=pay_from_chain),
                             job_dir, console)


def finish_job(tenant: Tenant, spec: JobSpec, dataset: bytes, coordinator: DilocoCoordinator,
               console: Console, watch: EscrowWatch) -> dict:
    """Run the remaining rounds, save and check the model, close the leases still open, and
    say what the job's leases cost, every part of each budget named (a verified lease's pay
    is still held for Settlement then: released to its provider as rounds become final)."""
    reports = coordinator.run()
    job_dir = coordinator.state_dir
    coordinator.save_model(job_dir / MODEL_FILE)
    recomputed = evaluate_model(job_dir / MODEL_FILE, dataset)
    settlements = []
    for worker in coordinator.workers:
        if worker.active:
            try:
                settlements.append(tenant.close(worker.lease_id).__dict__)
            except Exception as exc:  # closed meanwhile (by its provider): nothing to refund
                settlements.append({"lease_id": worker.lease_id, "error": str(exc)})
    stray = cancel_late_orders(tenant, console)
    coordinator.finish()
    job = coordinator.job
    summary = {**job["summary"], **{
        "workers": [{"lease_id": w.lease_id, "order_id": w.order_id, "provider": w.provider,
                     "worker": w.index, "finished": w.active, "fault": w.fault,
                     "dropped_because": w.reason}
                    for w in coordinator.workers],
        "replacements": coordinator.replacements,
        "rounds": [r.__dict__ for r in reports], "final_val_loss": recomputed,
        "bytes_moved": sum(r.bytes_up + r.bytes_down for r in reports),
        "model": str(job_dir / MODEL_FILE), "job_dir": str(job_dir), "settlements": settlements,
        "tenant_spent": job["balance_before"]
        - tenant.market.payment_token.balance_of(tenant.chain.address)}}
    summary["transactions"]["close"] = [s["tx"] for s in settlements if "tx" in s]
    if tenant.pay_from is not None:
        summary["paid_from_chain"] = paid_from_peer(tenant, [(w.order_id, w.lease_id)
                                                             for w in coordinator.workers] + stray)
        summary["tenant_spent"] = summary["paid_from_chain"]["spent"]
    moneys = [lease_money(tenant.chain, w.lease_id) for w in coordinator.workers]
    summary["lease_money"] = [money_json(m) for m in moneys]
    summary["escrow"] = watch.summary()
    summary["units"] = UNITS
    (job_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str))
    console.print(f"final held-out loss {recomputed:.4f} (recomputed from the saved model); "
                  f"{summary['bytes_moved']:,} bytes moved in {len(reports)} rounds; model at "
                  f"{job_dir / MODEL_FILE}")
    for m in moneys:
        console.print(short_line(m), markup=False, highlight=False)
    console.print(job_cost_line(moneys), markup=False, highlight=False)
    if tenant.pay_from is not None:
        paid = summary["paid_from_chain"]
        console.print(f"the job's {len(paid['orders'])} order(s) were funded from chain "
                      f"{paid['chain_id']}; their refunds "
                      f"({money(sum(o['refunded'] for o in paid['orders']))} so far) go back "
                      "to this account there, sent by the relayer (BridgeOrders.send_back)",
                      markup=False, highlight=False)
    return summary


def cancel_late_orders(tenant: Tenant, console: Console) -> list[tuple[int, int]]:
    """Orders funded from the peer chain whose delivery came after the client stopped waiting
    (a replacement's, say): each one delivered since is cancelled now, so that its deposit goes
    back; those still not delivered are named. Returns (order id, 0) for each, for the job's
    cost (review 14)."""
    if tenant.pay_from is None or not tenant.peer_payments().late_fundings:
        return []   # (and a network with one chain has no BridgeOrders at all)
    orders, found = BridgeOrders(tenant.chain), []
    for message_id in tenant.peer_payments().late_fundings:
        mid = "0x" + message_id.hex()
        if not orders.arrived(message_id):
            console.print(f"[yellow]order funding {mid} has still not arrived[/]: when it does, "
                          f"`tessera bridge order-cancel {mid}` sends its deposit back")
            continue
        order_id = orders.funding(message_id).order_id
        if order_id and tenant.market.order(order_id).open:
            tenant.market.cancel_order(order_id)
            console.print(f"order {order_id}, funded late by {mid}, cancelled: its deposit goes "
                          "back to the peer chain")
        if order_id:
            found.append((order_id, 0))
    return found
