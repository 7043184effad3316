"""The DiLoCo coordinator, run by the tenant: one model trained on several leased providers.

Why the tenant runs it: the coordinator holds the global model and decides what counts; putting
it on a provider would make that provider a trusted party. It needs no GPU (one outer step per
round) and moves little data (int8 pseudo-gradients every H steps).

Each round, for every worker lease: PUT the round's parameters (the full global state the first
time a worker is seen, afterwards the outer-step broadcast), signed by the tenant; poll for the
worker's signed answer until the round's deadline; download the pseudo-gradient, check its hash
and the provider's signature, decode and validate it. Whoever answered in time and passed the
checks is aggregated; the outer step is taken; the round is committed (below). A worker that
misses the deadline, cannot be reached, or sends something refused is dropped from the job, its
lease is closed so it stops costing money, the drop is logged as a structured line, and the job
goes on with the others; a `replace` callback (the tenant's flow) may lease a replacement that
trains the dropped worker's shard from the next round on.

Verification (a `VerifyTerms`, docs/verification.md): every answer must carry the provider's
signed commitment to its checkpoints, checked field by field (`tenant.verify`); after the
answers are in, ONE transaction posts the Merkle root over the accepted commitments of the job's
own leases (`Verification.post_root`), plus one per replacement worker's one-node order; the
hash of the block holding the last root decides, per worker, whether the tenant replays one
committed segment (probability p); a worker whose payload or segment does not check out is
dropped (its pseudo-gradient never counts), its lease closed, and an on-chain challenge with a
bond opened against its leaf. Without overlap (before the last round) the checks (the root,
the payloads, the drawn replays) run on the verifier's thread while the outer step is taken and
the next round's parameters are sent (off the round's critical path, issue 16); when they catch
a worker, the coordinator's state is put back and the step taken again without its answer, the
next round's parameters sent again (`_step_again`), so a caught answer never counts. With
overlap, and in the last round, the checks finish before the step. The round's root
transactions, spot checks and challenges are in its `RoundReport`; the signed commitments of
each round in `verification/round-{r}.json` (a replacement order's in
`round-{r}-order-{o}.json`), the replay reports (whose hash is the challenge's evidence) beside
them. Right after a challenge opens, its case (the job spec and the lease's
signed manifest, kept in `manifests/` when it was sent) is pushed to every active validator,
which replays the segment itself and votes (`validator.challenges`).

Overlap (`[diloco] overlap = true`, a one-round-delayed outer update): round r + 1's
parameters are sent with round r's (the published parameters before round r's outer step), so
a worker goes from round r to r + 1 without waiting while round r is collected, checked and
stepped; each round's start parameters (what commitments are checked against) are kept in
`ahead_start`. A worker new to the job (round 0, a replacement, after a resume) gets the round's
start parameters in full.

Streaming: each accepted answer is folded into the round's aggregate as it arrives
(`tenant/round_intake.py`).

Commit: the outer optimizer's state goes to `coordinator-{round}.pt`, then `job.json` (workers,
reports, the checkpoint's name) replaces the previous one atomically; a round is finished when
its `job.json` is. `DilocoCoordinator.resume` reloads the last commit, and every worker gets the
full global state again (what it holds is unknown after a crash).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tessera.chain.read_grant import ReadGrantAuth
from tessera.compute.diloco import Coordinator, DilocoConfig, encode_tensors
from tessera.compute.diloco_worker import GLOBAL_STATE_KIND
from tessera.compute.segment_check import max_state_bytes
from tessera.compute.train import configure_determinism, held_out_loss, split
from tessera.errors import TenantError, WorkerFault
from tessera.files import write_atomic
from tessera.http_deadline import HTTP_TOTAL_S, DeadlineClient
from tessera.logs import EventLog
from tessera.tenant.client import Tenant
from tessera.tenant.round_checks import RoundChecks, RoundVerifier
from tessera.tenant.round_intake import RoundIntake
from tessera.tenant.verify import VerifyTerms
from tessera.tenant.worker_rounds import RESULT_FAULTS, Answer, WorkerChannel, WorkerLease

STATE_FILE = "job.json"
STATE_VERSION = 1
INTAKE_DIR = "intake"   # a round's accepted payloads, until its outer step (round_intake.py)
PAYLOAD_SLACK_BYTES = 1 << 16   # headers and int8 scales on top of an fp32 pseudo-gradient


@dataclass
class RoundReport:
    round: int
    workers: int
    contributors: int
    val_loss: float
    bytes_up: int
    bytes_down: int
    seconds: float
    dropped: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)   # replacements that joined this round
    worker_compute_s: float = 0.0   # the contributors' own report of their compute time, summed
    root: str = ""                  # the round's Merkle root over the commitments, when posted
    root_tx: str = ""               # the post_root transaction ("" if not posted by this run)
    spot_checks: list[dict] = field(default_factory=list)   # tenant.verify.SpotCheck fields
    challenges: list[dict] = field(default_factory=list)    # lease, segment, challenge id, tx
    replacement_roots: list[dict] = field(default_factory=list)  # order, root, tx: one per
    #                                 replacement order (its lease is not in the job's order)
    phase_s: dict[str, float] = field(default_factory=dict)   # where the round's time went:
    #                                 exchange, verify, outer_step, send_next, checks, evaluate
    stepped_again: bool = False     # the outer step was taken again without a worker the
    #                                 round's checks caught after it (coordinator._step_again)


class PhaseClock:
    """Where a round's time goes: `lap(phase)` records the seconds since the last lap."""

    def __init__(self):
        self.phase_s: dict[str, float] = {}
        self.mark = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phase_s[phase] = round(now - self.mark, 4)
        self.mark = now


# (dropped worker, every worker of the job so far) -> a running replacement for its shard
Replacer = Callable[[WorkerLease, list[WorkerLease]], WorkerLease]


class Replacements:
    """A job's replacement leases: one for each dropped worker (`Replacer`), up to `cap`."""

    def __init__(self, replace: Replacer | None, cap: int, log: EventLog):
        self.replace, self.cap, self.log, self.used = replace, cap, log, 0

    def take(self, workers: list[WorkerLease], joined: Callable[[WorkerLease], None]) -> list[str]:
        """A replacement for each worker dropped and not yet replaced; `joined(new)` adds one
        to the job (and commits it) as soon as it runs. Returns what happened, in lines."""
        lines = []
        for worker in [w for w in workers if not w.active and not w.replaced]:
            worker.replaced = True
            if self.replace is None:
                continue
            if self.used >= self.cap:
                lines.append(f"lease {worker.lease_id} not replaced: the job's "
                             f"{self.cap} replacement(s) are used up")
                self.log("replacement-skipped", lease_id=worker.lease_id, reason="cap reached")
                continue
            try:
                new = self.replace(worker, list(workers))
            except Exception as exc:
                lines.append(f"lease {worker.lease_id} not replaced: {exc}")
                self.log("replacement-failed", "warning", lease_id=worker.lease_id,
                         error=f"{type(exc).__name__}: {exc}")
                continue
            new.index, new.synced, new.active = worker.index, False, True
            self.used += 1
            lines.append(f"lease {worker.lease_id} replaced by lease {new.lease_id} "
                         f"(provider {new.provider})")
            self.log("worker-replaced", lease_id=worker.lease_id, replacement=new.lease_id,
                     provider=new.provider, worker=new.index)
            joined(new)
        return lines


def read_job_state(state_dir: Path) -> dict:
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise TenantError(f"{state_dir}: no {STATE_FILE} here; give the folder that "
                          "`tessera job submit` printed for the job")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TenantError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        raise TenantError(f"{path}: not a version {STATE_VERSION} DiLoCo job state")
    return saved


class DilocoCoordinator:
    def __init__(self, tenant: Tenant, config: DilocoConfig, data: bytes,
                 workers: list[WorkerLease], state_dir: Path, *, job: dict | None = None,
                 round_timeout_s: float = 600,
                 on_round: Callable[[RoundReport], None] | None = None,
                 log: EventLog | None = None, replace: Replacer | None = None,
                 max_replacements: int = 0, verify: VerifyTerms | None = None):
        self.tenant, self.config, self.workers = tenant, config, workers
        self.state_dir, self.job = Path(state_dir), job or {}
        self.round_timeout_s = round_timeout_s
        self.on_round = on_round or (lambda report: None)
        self.log = log or EventLog("coordinator")
        self.max_replacements = max_replacements
        self._replacements = Replacements(replace, max_replacements, self.log)
        self.finished = False
        self.device = configure_determinism(config.workload)
        self.coordinator = Coordinator(config, self.device)
        self.dataset_sha256 = hashlib.sha256(data).hexdigest()
        self.train_tokens, self.val_tokens = split(data, config.workload)
        # every request to a provider ends by a deadline, headers and body included: the
        # round's for the rounds' requests, HTTP_TOTAL_S for any other
        self.http = DeadlineClient(timeout=60, auth=ReadGrantAuth(tenant.chain),
                                   total_s=HTTP_TOTAL_S)
        self.broadcast: bytes | None = None
        # overlap: round parameters sent a round early (lease -> (round, body)), and what the
        # next round starts from (round, parameters)
        self.ahead: dict[int, tuple[int, bytes]] = {}
        self.ahead_start: tuple[int, dict] | None = None
        self.reports: list[RoundReport] = []
        self.max_payload = len(encode_tensors(self.coordinator.published, "none",
                                              config.chunk, {})) + PAYLOAD_SLACK_BYTES
        self.verify = verify
        self.verifier = RoundVerifier(
            tenant, config, verify, self.state_dir, self.job, self.http, self.log,
            self.train_tokens,
            max_state_bytes(sum(t.numel() for t in self.coordinator.published.values())),
            round_timeout_s) if verify else None
        self.intake = RoundIntake(self.coordinator, self.state_dir / INTAKE_DIR)
        self.channel = WorkerChannel(tenant, self.http, lambda payload: self.intake.take(payload),
                                     self.max_payload,
                                     round_timeout_s,
                                     self.verifier.check_commitment if self.verifier else None)

    @classmethod
    def start(cls, tenant: Tenant, config: DilocoConfig, data: bytes, workers: list[WorkerLease],
              state_dir: Path, **options) -> DilocoCoordinator:
        """A new job, committed at once so that it can be resumed from its very start.
        `job=` is whatever the tenant's flow needs to rebuild the job on resume (saved as is)."""
        if (Path(state_dir) / STATE_FILE).exists():
            raise TenantError(f"{state_dir} already holds a job; resume it with "
                              f"`tessera job resume {state_dir}`")
        self = cls(tenant, config, data, workers, state_dir, **options)
        self._save()
        return self

    @classmethod
    def resume(cls, tenant: Tenant, state_dir: Path, data: bytes, **options) -> DilocoCoordinator:
        """The job committed in `state_dir`, at its last finished round."""
        saved = read_job_state(state_dir)
        if saved["tenant"].lower() != tenant.chain.address.lower():
            raise TenantError(f"the job in {state_dir} belongs to tenant {saved['tenant']}, "
                              f"not {tenant.chain.address}")
        if hashlib.sha256(data).hexdigest() != saved["dataset_sha256"]:
            raise TenantError(f"the dataset does not match the job's ({saved['dataset_sha256']})")
        workers = [WorkerLease(**w) for w in saved["workers"]]
        self = cls(tenant, DilocoConfig.model_validate(saved["config"]), data, workers, state_dir,
                   job=saved["job"], **options)
        checkpoint = torch.load(self.state_dir / saved["checkpoint"], weights_only=True)
        self.coordinator.load_state_dict(checkpoint)
        self.reports = [RoundReport(**r) for r in saved["reports"]]
        self._replacements.used, self.finished = saved["replacements"], saved["finished"]
        for worker in self.workers:  # what they hold after the crash is unknown: full state
            worker.synced = False
        self.log("resumed", round=self.coordinator.round,
                 workers=[w.lease_id for w in self.workers if w.active])
        return self

    # -- one worker, one round -----------------------------------------------------------
    def _full_state(self, state: dict) -> bytes:
        return encode_tensors(state, "none", self.config.chunk,
                              {"kind": GLOBAL_STATE_KIND, "round": self.coordinator.round})

    def _body_for(self, worker: WorkerLease, start: dict) -> bytes:
        """What takes `worker` to the round's start parameters: the last broadcast if it holds
        the parameters before it, else the full state."""
        if worker.synced and self.broadcast is not None and start is self.coordinator.published:
            return self.broadcast
        return self._full_state(start)

    def _round_start(self, round_index: int) -> dict:
        """The parameters a round starts from: with overlap, the ones its parameters were sent
        from during the round before (before that round's outer step)."""
        if self.ahead_start is not None and self.ahead_start[0] == round_index:
            return self.ahead_start[1]
        return self.coordinator.published

    def _send_ahead(self, round_index: int, start: dict, active: list) -> dict[int, bytes]:
        """Overlap: round r + 1's parameters, sent with round r's (the worker queues them and
        starts as soon as round r is done): the published parameters now, before round r's
        outer step. {} without overlap or in the last round."""
        if not self.config.overlap or round_index + 1 >= self.config.rounds:
            return {}
        published = self.coordinator.published
        body = (self.broadcast if start is not published and self.broadcast is not None
                else self._full_state(published))
        self.ahead_start = (round_index + 1, published)
        return {w.lease_id: body for w in active}

    def _speculate(self, round_index: int) -> bool:
        """Whether this round's checks (root, payloads, drawn replays) run while its outer step
        is taken and the next round's parameters are sent (without overlap, before the last
        round): the step is taken again, and the parameters sent again, without a worker they
        then catch."""
        return not self.config.overlap and round_index + 1 < self.config.rounds

    def _kept(self, active: list[WorkerLease], results: dict[int, Answer]) -> list:
        """The answers the outer step counts: those of the workers still in the job."""
        return [results[w.lease_id].pseudo_gradient for w in active
                if w.active and w.lease_id in results]

    def _step_again(self, round_index: int, before: dict, active: list[WorkerLease],
                    results: dict[int, Answer]) -> list:
        """The checks caught a worker whose answer the outer step (taken while they ran)
        counted: back to the state before it, and the step again without that answer, its
        parameters sent again to the workers (a worker re-runs a round sent again with other
        parameters: compute.diloco_worker). So a caught worker's answer never counts, as when
        the checks finish before the step; the price is the honest workers' start on the
        round, in the rare round that catches someone. [] when no answer is left."""
        self.coordinator.load_state_dict(before["coordinator"])
        self.broadcast = before["broadcast"]
        self.ahead = {lease: sent for lease, sent in self.ahead.items()
                      if sent[0] != round_index + 1}
        kept = self._kept(active, results)
        self.log("outer-step-again", "warning", round=round_index, answers=len(kept))
        if kept:
            self.broadcast = self.intake.apply(kept, keep=True).broadcast
            self._send_next(round_index)
        return kept

    def _empty(self, round_index: int, dropped: list[str]) -> None:
        """No answer of the round can be used: nothing is applied; the round runs again."""
        self.intake.close()
        self.log("round-empty", "warning", round=round_index, dropped=dropped)
        self._save()
        return None

    def _send_next(self, round_index: int) -> None:
        """Without overlap: round r + 1's parameters (this outer step's broadcast) go to every
        worker that took part, right after the outer step and before the held-out evaluation
        and the commit, so that the workers compute while the coordinator evaluates and saves
        (issue 16). Step r + 1 finds them in `ahead`; a worker they could not be sent to is
        sent them there, as before."""
        if self.config.overlap or round_index + 1 >= self.config.rounds or self.broadcast is None:
            return
        body = self.broadcast
        targets = [w for w in self.workers if w.active and w.synced]
        failed = self.channel.send_many(targets, round_index + 1, body)
        for lease_id, error in failed.items():   # step r + 1 sends again and handles the fault
            self.log("send-ahead-failed", "warning", round=round_index + 1, lease_id=lease_id,
                     error=error)
        self.ahead.update({w.lease_id: (round_index + 1, body) for w in targets
                           if w.lease_id not in failed})

    def _drop(self, worker: WorkerLease, round_index: int, fault: WorkerFault) -> str:
        worker.active, worker.fault, worker.reason = False, fault.kind, str(fault)
        closed = True
        try:
            self.tenant.close(worker.lease_id)
        except Exception as exc:  # already closed (e.g. by the provider): nothing left to refund
            closed = False
            worker.reason += f" (close: {exc})"
        event = "result-refused" if fault.kind in RESULT_FAULTS else "worker-dropped"
        self.log(event, "warning", round=round_index, lease_id=worker.lease_id,
                 provider=worker.provider, worker=worker.index, kind=fault.kind,
                 reason=str(fault), lease_closed=closed)
        return f"lease {worker.lease_id} ({fault.kind}): {worker.reason}"

    def _replace_dropped(self) -> list[str]:
        """Lease a replacement for each worker dropped since the last round (up to the cap);
        each is committed at once, so a crash right after does not forget its lease."""
        def joined(new: WorkerLease) -> None:
            self.workers.append(new)
            self._save()

        return self._replacements.take(self.workers, joined)

    @property
    def replacements(self) -> int:
        """Replacement leases taken so far (at most `max_replacements`)."""
        return self._replacements.used

    # -- the job ---------------------------------------------------------------------------
    def run(self) -> list[RoundReport]:
        while self.coordinator.round < self.config.rounds:
            self.step()
        return self.reports

    def step(self) -> RoundReport | None:
        """One round. None when no worker's answer could be used: nothing is applied, and the
        round runs again (with replacements for the dropped) on the next call."""
        round_index = self.coordinator.round
        started = time.monotonic()
        replaced = self._replace_dropped()
        active = [w for w in self.workers if w.active]
        if not active:
            self._save()
            raise TenantError(f"round {round_index}: no worker left in the job")
        start = self._round_start(round_index)
        sent_ahead = {lease for lease, (r, _) in self.ahead.items() if r == round_index}
        bodies = {w.lease_id: self.ahead[w.lease_id][1] if w.lease_id in sent_ahead
                  else self._body_for(w, start) for w in active}
        ahead = self._send_ahead(round_index, start, active)
        if self.verifier:
            self.verifier.begin_round(start)
        self.intake = RoundIntake(self.coordinator, self.state_dir / INTAKE_DIR)
        clock = PhaseClock()
        results, faults, sent_next = self.channel.exchange(
            active, round_index, bodies, sent_ahead, ahead,
            time.monotonic() + self.round_timeout_s)
        self.ahead.update({lease: (round_index + 1, ahead[lease]) for lease in sent_next})
        lap = clock.lap
        lap("exchange")
        dropped = [self._drop(w, round_index, faults[w.lease_id])
                   for w in active if w.lease_id in faults]
        checked = RoundChecks(round_index).fields      # (no verification: the empty fields)
        accepted = [w for w in active if w.lease_id in results]
        checks = None
        if self.verifier and accepted:
            checks = self.verifier.verify_round(round_index, accepted, results,
                                                background=self._speculate(round_index))
            if checks.work is None:      # checked in full already: settled before the step
                checked, caught = self.verifier.settle(checks, accepted, results, self._drop)
                dropped += caught
                checks = None
        lap("verify")
        pseudo_grads = self._kept(active, results)
        if not pseudo_grads:
            return self._empty(round_index, dropped)
        counted = [w for w in active if w.active and w.lease_id in results]
        stepped_again = False
        before = {"coordinator": self.coordinator.state_dict(),
                  "broadcast": self.broadcast} if checks is not None else None
        update = self.intake.apply(pseudo_grads, keep=before is not None)
        self.broadcast = update.broadcast
        lap("outer_step")
        self._send_next(round_index)
        lap("send_next")
        if checks is not None:   # the checks ran while the step was taken and sent
            checked, caught = self.verifier.settle(checks, accepted, results, self._drop)
            dropped += caught
            stepped_again = not all(w.active for w in counted)
            if stepped_again:
                pseudo_grads = self._step_again(round_index, before, active, results)
                if not pseudo_grads:
                    return self._empty(round_index, dropped)
            self.intake.close()
            lap("checks")
        val = held_out_loss(self.coordinator.eval_model(), self.val_tokens, self.config.workload,
                            self.device)
        lap("evaluate")
        report = RoundReport(round_index, len(active), len(pseudo_grads), val,
                             sum(a.size for a in results.values()),
                             sum(len(b) for lease, b in bodies.items() if lease not in sent_ahead)
                             + sum(len(b) for b in ahead.values()), time.monotonic() - started,
                             dropped, replaced, sum(a.compute_s for a in results.values()),
                             **checked, phase_s=clock.phase_s, stepped_again=stepped_again)
        self.reports.append(report)
        self._save()
        self.log("round", **asdict(report))
        self.on_round(report)
        return report

    def finish(self) -> None:
        """Mark the job done (its leases are settled by the caller): resume will refuse it."""
        self.finished = True
        self._save()

    # -- persistence -------------------------------------------------------------------------
    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        name = f"coordinator-{self.coordinator.round}.pt"
        buffer = io.BytesIO()
        torch.save(self.coordinator.state_dict(), buffer)
        write_atomic(self.state_dir / name, buffer.getvalue(), durable=True)
        state = {"version": STATE_VERSION, "tenant": self.tenant.chain.address,
                 "dataset_sha256": self.dataset_sha256,
                 "config": self.config.model_dump(mode="json"), "job": self.job,
                 "round": self.coordinator.round, "checkpoint": name,
                 "workers": [asdict(w) for w in self.workers],
                 "reports": [asdict(r) for r in self.reports],
                 "replacements": self.replacements, "finished": self.finished}
        write_atomic(self.state_dir / STATE_FILE, json.dumps(state, indent=1).encode(),
                     durable=True)
        for old in self.state_dir.glob("coordinator-*.pt"):
            if old.name != name:
                old.unlink()

    def save_model(self, path: Path) -> None:
        torch.save({"model": self.coordinator.eval_model().state_dict(),
                    "workload": self.config.workload.model_dump()}, path)
