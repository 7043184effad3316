"""The TEST-ONLY cheats of `tessera/testing/cheats.py` (a cheating provider's `--cheat`), in
process on the tiny model (H = 8, k = 2: 4 training segments), each played for two rounds
against the verifier's own checks: per round, which training segments fail `verify_segment`
(replay, and the state bounds on the opened start state), whether `verify_payload` fails (the
payload derives from the committed last state, which must be in bounds), and whether the cheap
links (`check_round_links`) fail. Every strategy passes the cheap links; what catches it is
the pattern below (docs/verification.md's table). The same harness passes an honest round, so
each assertion can fail. End to end: tests/e2e/test_cheaters.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from tests.support.compute import TINY

from tessera.chain.devnet import free_port
from tessera.compute.checkpoints import encode_state
from tessera.compute.diloco import DilocoConfig, new_model, parameter_state
from tessera.compute.diloco_worker import checkpoint_path
from tessera.compute.replay import (
    CommittingWorker,
    RoundTrace,
    check_round_links,
    open_payload,
    open_segment,
    replay_segment,
    state_bounds,
    verify_payload,
    verify_segment,
)
from tessera.compute.segment_check import torch_threads
from tessera.compute.train import configure_determinism, split
from tessera.errors import SpecError
from tessera.provider.config import load_provider_config
from tessera.tenant.verify import FRESH
from tessera.testing.cheating_provider import build_parser
from tessera.testing.cheats import CHEATS, CheatContext, played_round
from tessera.testing.copying import copied_round, fetch_sibling_round

H, K, WORKER, SIBLING, ROUNDS = 8, 2, 1, 0, 2
N = H // K
CFG = DilocoConfig(workload=TINY, workers=2, inner_steps=H, rounds=ROUNDS, compression="int8")
THREADS = 2   # the job's thread count where the strategy needs one above 1 (fewer-threads)
ALL = list(range(N))

# strategy -> (training segments that fail, payload check fails), the same in both rounds
EXPECTED = {
    "skip-steps": (ALL, False),
    "random-pseudo-gradient": (ALL, False),
    "wrong-shard": (ALL, False),
    "wrong-round": (ALL, False),
    "copy-worker": (ALL, False),
    "poisoned-payload": ([], True),
    "made-up-residual": ([], False),   # every replay passes: only round 0's link fails
    "jump": (ALL, True),               # 0: replay; 1..3 and the last state: out of bounds
    "jump-and-return": (ALL, False),   # 0, 3: replay; 1..3: start out of bounds
    "fewer-threads": (ALL, False),
    "stop-half-way": ([2, 3], False),
    "fake-last-segment": ([N - 1], False),
    "lower-precision": (ALL, False),
    "half-batch": (ALL, False),
    "free-ride": (ALL, False),
    "fake-10-percent": ([2], False),   # ⌈0.1·4⌉ = 1 faked: segment ⌊0.5·4⌋ = 2
}
# strategy -> the rounds whose cheap link check fails (every other round's passes)
LINK_FAILS = {"made-up-residual": {0}}


@pytest.fixture(scope="module")
def tokens(corpus):
    configure_determinism(TINY)
    return split(corpus, TINY)[0]


@pytest.fixture
def theta():
    return parameter_state(new_model(TINY))


def config_for(strategy: str) -> DilocoConfig:
    threads = THREADS if strategy == "fewer-threads" else 1
    return CFG.model_copy(update={"workload": TINY.model_copy(update={"threads": threads})})


def write_round(folder: Path, trace: RoundTrace, names) -> None:
    """A round in a provider's job-folder layout (diloco_worker: states, then result.json)."""
    base = folder / "rounds" / str(trace.commitment.round)
    base.joinpath("checkpoints").mkdir(parents=True, exist_ok=True)
    for i, (p, o) in enumerate(zip(trace.params, trace.optimizer_states, strict=True)):
        checkpoint_path(base, i).write_bytes(encode_state(p, o, names))
    base.joinpath("result.json").write_text(json.dumps({
        "inner_loss": trace.pseudo_gradient.mean_inner_loss, "compute_s": 0.1,
        "checkpoints": [{} for _ in trace.commitment.checkpoints]}))


def check(cfg: DilocoConfig, trace: RoundTrace, start, previous, tokens) -> dict:
    """Every check the verifier has on one round, with the thread count the worker signed."""
    c = trace.commitment
    failed = []
    for s in range(c.n_segments):
        with torch_threads(c.payload.threads):
            verdict = verify_segment(cfg, WORKER, c.round, c.root, c.n_leaves, K,
                                     open_segment(trace, s), tokens)
        if not verdict.ok:
            failed.append(s)
    payload = verify_payload(cfg, WORKER, c.round, c.root, c.n_leaves, K, c.payload.result_hash,
                             start, open_payload(trace))
    links = check_round_links(c, start, previous)
    # the lease's first round starts from a fresh AdamW state and no residual: the tenant's
    # link (`verify.FRESH`), which check_round_links cannot know without a previous round
    if previous is None and (c.checkpoints[0].optimizer_hash, c.payload.residual_in_hash) != \
            (FRESH.optimizer_hash, FRESH.residual_hash):
        links.append("not fresh")
    return {"segments": failed, "payload_fails": not payload.ok, "payload": payload.reason,
            "links": links}


def failure_pattern(strategy: str, tokens, start, folder: Path) -> list[dict]:
    """`strategy` played as worker 1 for ROUNDS rounds, each from its own published θ, and
    checked. copy-worker copies worker 0's honest rounds from a job folder (collusion)."""
    cfg = config_for(strategy)
    threads = cfg.workload.threads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)   # what configure_determinism gives the job's worker
    try:
        worker = CommittingWorker(cfg, WORKER, tokens)
        sibling = CommittingWorker(cfg, SIBLING, tokens)
        ctx = CheatContext(tokens, threads=threads, copy_wait_s=1.0,
                           siblings=[{"lease_id": 7, "folder": str(folder)}])
        rounds, previous = [], None
        for r in range(ROUNDS):
            if strategy == "copy-worker":
                write_round(folder, sibling.run_round_committed(start, r, K),
                            worker.parameter_names())
            trace = CHEATS[strategy](worker, start, r, K, ctx)
            rounds.append(check(cfg, trace, start, previous, tokens))
            previous = trace.commitment
            start = {n: t - 0.5 * trace.pseudo_gradient.tensors[n] for n, t in start.items()}
    finally:
        torch.set_num_threads(before)
    return rounds


def test_the_cheating_provider_offers_exactly_the_cheats():
    """The cheating provider's `--cheat` (the only way to ask for one) offers exactly these."""
    [option] = [a for a in build_parser()._actions if "--cheat" in a.option_strings]
    assert tuple(option.choices) == tuple(CHEATS) == tuple(EXPECTED)


def test_the_production_provider_config_has_no_cheat(tmp_path):
    config = tmp_path / "provider.toml"
    config.write_text('[provider]\naccount = "devnet:1"\nport = 8000\nstate_dir = "s"\n'
                      '[pricing]\nprice_per_gpu_hour = "1"\n[testing]\ncheat = "skip-steps"\n')
    with pytest.raises(SpecError, match="testing: Extra inputs are not permitted"):
        load_provider_config(config)


def test_the_harness_passes_an_honest_round_and_played_round_is_it(tokens, theta):
    honest = CommittingWorker(CFG, WORKER, tokens)
    played = CommittingWorker(CFG, WORKER, tokens)
    previous, start = None, theta
    for r in range(ROUNDS):
        trace = honest.run_round_committed(start, r, K)
        assert check(CFG, trace, start, previous, tokens) == {
            "segments": [], "payload_fails": False,
            "payload": "payload derives from the committed last state", "links": []}
        same = played_round(played, start, r, K)   # no fakes, honest steps: bitwise the same
        assert same.commitment.root == trace.commitment.root and same.payload == trace.payload
        previous = trace.commitment
        start = {n: t - 0.5 * trace.pseudo_gradient.tensors[n] for n, t in start.items()}


@pytest.mark.parametrize("strategy", list(EXPECTED))
def test_the_failure_pattern_of_every_strategy(strategy, tokens, theta, tmp_path):
    segments, payload_fails = EXPECTED[strategy]
    rounds = failure_pattern(strategy, tokens, theta, tmp_path / "sibling")
    for r, got in enumerate(rounds):
        # the cheap checks pass, but for a made-up first residual
        assert bool(got["links"]) == (r in LINK_FAILS.get(strategy, ())), (r, got)
        assert (got["segments"], got["payload_fails"]) == (segments, payload_fails), (r, got)


def test_jump_replays_bitwise_after_the_jump_without_a_gradient(tokens, theta):
    """The jump cheat's claim: next to its degenerate moments the gradient is absorbed, so
    segments 1..n−1, computed without any forward or backward pass, replay bitwise (the replay
    itself, without the state bounds); only the bounds tell, on every state after the jump."""
    worker = CommittingWorker(CFG, WORKER, tokens)
    forwards = []
    worker.model.register_forward_hook(lambda *_: forwards.append(1))
    start = theta
    for r in range(ROUNDS):
        trace = CHEATS["jump"](worker, start, r, K, CheatContext(tokens))
        replays = [replay_segment(CFG, WORKER, r, trace.params[s], trace.optimizer_states[s], s,
                                  k=K, train_tokens=tokens).checkpoint
                   == trace.commitment.checkpoints[s + 1] for s in range(N)]
        assert replays == [False] + [True] * (N - 1)
        bounds = [state_bounds(o, TINY.max_grad_norm) for o in trace.optimizer_states]
        assert (bounds[0] is None) == (r == 0)    # round 1 starts where round 0 ended: degenerate
        assert all(b and "above" in b for b in bounds[1:]), bounds
        start = {n: t - trace.pseudo_gradient.tensors[n] for n, t in start.items()}
    assert forwards == []
    # jump-and-return ends its round in bounds: the payload check cannot tell
    back = CHEATS["jump-and-return"](CommittingWorker(CFG, WORKER, tokens), theta, 0, K,
                                     CheatContext(tokens))
    assert state_bounds(back.optimizer_states[-1], TINY.max_grad_norm) is None


def test_strategies_refuse_jobs_they_cannot_cheat_on(tokens, theta):
    with pytest.raises(ValueError, match="threads >= 2"):
        CHEATS["fewer-threads"](CommittingWorker(CFG, WORKER, tokens), theta, 0, K,
                                CheatContext(tokens, threads=1))
    with pytest.raises(ValueError, match="two segments"):
        CHEATS["jump-and-return"](CommittingWorker(CFG, WORKER, tokens), theta, 0, H,
                                  CheatContext(tokens))
    solo = CommittingWorker(CFG.model_copy(update={"workers": 1}), 0, tokens)
    with pytest.raises(ValueError, match="another worker's shard"):
        CHEATS["wrong-shard"](solo, theta, 0, K, CheatContext(tokens))


def test_a_copied_round_is_the_siblings_work_under_this_workers_name(tokens, theta, tmp_path):
    sibling = CommittingWorker(CFG, SIBLING, tokens).run_round_committed(theta, 0, K)
    copier = CommittingWorker(CFG, WORKER, tokens)
    write_round(tmp_path, sibling, copier.parameter_names())
    events = []
    ctx = CheatContext(tokens, emit=events.append, copy_wait_s=1.0,
                       siblings=[{"lease_id": 7, "folder": str(tmp_path)}])
    trace = CHEATS["copy-worker"](copier, theta, 0, K, ctx)
    assert events == [{"event": "cheat-copied", "round": 0, "from_lease": 7, "source": "folder"}]
    assert trace.commitment.checkpoints == sibling.commitment.checkpoints  # the same states...
    assert trace.commitment.root != sibling.commitment.root               # ...under its own index
    assert all(torch.equal(trace.pseudo_gradient.tensors[n], sibling.pseudo_gradient.tensors[n])
               for n in theta)
    # it carries the copied AdamW state on, so its next round's link holds
    start = {n: t - trace.pseudo_gradient.tensors[n] for n, t in theta.items()}
    assert check_round_links(copier.run_round_committed(start, 1, K).commitment, start,
                             trace.commitment) == []
    # a sibling round that started elsewhere (other parameters) is not copied
    states = [checkpoint_path(tmp_path / "rounds" / "0", i).read_bytes() for i in range(N + 1)]
    assert copied_round(CommittingWorker(CFG, WORKER, tokens), start, 0, K,
                        {"inner_loss": 5.0, "compute_s": 0.1}, states) is None


class Sibling(BaseHTTPRequestHandler):
    """A provider's round endpoints: the answer public (202 while running at first), the
    states served only with a read grant (`refuse`: 401 as to a copier without one)."""

    answer: dict
    states: list[bytes]
    pending = 2
    refuse = False

    def do_GET(self):  # noqa: N802 (http.server's name)
        base = f"/leases/{self.answer['lease_id']}/rounds/0"
        if self.path == base and Sibling.pending > 0:
            Sibling.pending -= 1
            body, status = b'{"status": "running"}', 202
        elif self.path == base:
            body, status = json.dumps(self.answer).encode(), 200
        elif self.path.startswith(base + "/checkpoints/") and Sibling.refuse:
            body, status = b'{"detail": "missing X-Tessera-Reader"}', 401
        elif self.path.startswith(base + "/checkpoints/"):
            body, status = self.states[int(self.path.rsplit("/", 1)[1])], 200
        else:
            body, status = b"{}", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sibling_server(tokens, theta):
    sibling = CommittingWorker(CFG, SIBLING, tokens).run_round_committed(theta, 0, K)
    Sibling.answer = {"lease_id": 7, "inner_loss": 5.0, "compute_s": 0.1,
                      "checkpoints": [{} for _ in sibling.commitment.checkpoints]}
    names = CommittingWorker(CFG, WORKER, tokens).parameter_names()
    Sibling.states = [encode_state(p, o, names)
                      for p, o in zip(sibling.params, sibling.optimizer_states, strict=True)]
    Sibling.pending, Sibling.refuse = 2, False
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Sibling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_waits_for_the_siblings_answer_over_http(sibling_server):
    """Where a provider served states to anyone, the HTTP path copied them."""
    siblings = [{"lease_id": 99, "endpoint": sibling_server},
                {"lease_id": 7, "endpoint": sibling_server}]
    copied, refused = fetch_sibling_round(siblings, 0, N + 1, wait_s=10)
    assert Sibling.pending == 0 and refused == []
    assert (copied.lease_id, copied.source, copied.states) == (7, "http", Sibling.states)
    started = time.monotonic()  # a round nobody answers: None once the wait is over
    assert fetch_sibling_round(siblings, 1, N + 1, wait_s=0.3) == (None, [])
    assert time.monotonic() - started < 5


def test_without_a_read_grant_the_http_copy_is_refused_logged_and_it_trains_honestly(
        sibling_server, tokens, theta):
    Sibling.refuse = True
    events = []
    ctx = CheatContext(tokens, emit=events.append, copy_wait_s=0.5,
                       siblings=[{"lease_id": 7, "endpoint": sibling_server}])
    trace = CHEATS["copy-worker"](CommittingWorker(CFG, WORKER, tokens), theta, 0, K, ctx)
    refused, fallback = events
    assert refused["event"] == "cheat-copy-http-refused" and refused["round"] == 0
    assert refused["reasons"] == ["GET /leases/7/rounds/0/checkpoints/0: 401 "
                                  '{"detail": "missing X-Tessera-Reader"}']
    assert fallback["event"] == "cheat-copy-fallback" and "trains honestly" in fallback["reason"]
    honest = CommittingWorker(CFG, WORKER, tokens).run_round_committed(theta, 0, K)
    assert trace.commitment.root == honest.commitment.root and trace.payload == honest.payload


def test_the_worker_process_plays_the_cheat_its_folder_names(tmp_path, corpus, tokens):
    """The real worker process (run by the provider's JobSupervisor, as a cheating provider's
    jobs are) with the copy-worker cheat and no reachable sibling: after its wait it answers
    exactly what an honest worker answers, and its log says it fell back."""
    from tessera.compute.diloco import Coordinator, Worker, encode_tensors
    from tessera.compute.diloco_worker import GLOBAL_STATE_KIND, config_of
    from tessera.protocol.workload import DilocoWorkerWorkload
    from tessera.provider.runner import JobSupervisor
    from tessera.testing.cheating_provider import CHEATING_WORKER
    from tessera.testing.cheats import TESTING_FILE

    workload = DilocoWorkerWorkload(model=TINY, inner_steps=H, worker=WORKER, workers=2,
                                    compression="int8", checkpoint_every=K)
    cfg = config_of(workload)
    dataset = tmp_path / "data.bin"
    dataset.write_bytes(corpus)
    jobs = JobSupervisor(tmp_path / "provider", threads=1, memory_limit_mb=4096, timeout_s=300,
                         modules=CHEATING_WORKER)
    jobs.folder(1).mkdir(parents=True)
    (jobs.folder(1) / TESTING_FILE).write_text(json.dumps({
        "cheat": "copy-worker", "copy_wait_s": 0.5,
        "siblings": [{"lease_id": 2, "endpoint": f"http://127.0.0.1:{free_port()}",
                      "folder": str(tmp_path / "nobody" / "leases" / "2")}]}))
    coord = Coordinator(cfg)
    params = encode_tensors(coord.global_state(), "none", cfg.chunk,
                            {"kind": GLOBAL_STATE_KIND, "round": 0})
    try:
        jobs.start(1, {"workload": workload.model_dump(mode="json"),
                       "dataset_sha256": hashlib.sha256(corpus).hexdigest()}, dataset)
        assert jobs.submit_round(1, 0, params, hashlib.sha256(params).hexdigest())
        deadline = time.monotonic() + 120
        while jobs.round_result(1, 0) is None:
            assert time.monotonic() < deadline, jobs.progress(1)
            time.sleep(0.05)
    finally:
        jobs.stop_all()
    reference = Worker(cfg, WORKER, tokens)   # (the fixture set the job's determinism)
    assert jobs.round_payload(1, 0).read_bytes() == \
        reference.encode(reference.run_round(coord.global_state(), 0).tensors, 0)
    [fallback] = [e for e in jobs.progress(1) if e.get("event") == "cheat-copy-fallback"]
    assert fallback["round"] == 0 and "trains honestly" in fallback["reason"]


def test_a_made_up_first_residual_sends_any_update_and_only_the_link_tells(tokens, theta):
    """Review 23's attack, as the made-up-residual cheat plays it: the payload of its first
    round decodes to about −10 × its honest pseudo-gradient (a poisoning), and the residual it
    carries out is the one the payload check recomputes (so later rounds link); what gives it
    away is only that round 0 did not start from an empty residual."""
    from tessera.compute.diloco import decode_tensors

    honest = CommittingWorker(CFG, WORKER, tokens).run_round_committed(theta, 0, K)
    cheat = CHEATS["made-up-residual"](CommittingWorker(CFG, WORKER, tokens), theta, 0, K,
                                       CheatContext(tokens))
    sent = decode_tensors(cheat.payload, theta, "int8", CFG.chunk, "pseudo_gradient")
    delta = torch.cat([t.flatten() for t in honest.pseudo_gradient.tensors.values()])
    got = torch.cat([sent[n].flatten() for n in honest.pseudo_gradient.tensors])
    assert torch.allclose(got, -10 * delta, atol=float(delta.abs().max()) * 0.1)
    assert cheat.commitment.root != honest.commitment.root     # the payload leaf differs ...
    assert cheat.commitment.checkpoints == honest.commitment.checkpoints   # ... no state does
    assert cheat.commitment.payload.residual_in_hash != FRESH.residual_hash
