"""The TEST-ONLY cheats of `tessera/testing/cheats.py` (a cheating provider's `--cheat`): each
commits states whose cheap checks pass (leaf 0 is the published θ and the AdamW state the round
should start from, the pseudo-gradient is θ − the committed end) and whose every segment fails
the replay, as docs/verification.md's table of cheating strategies says. The same harness
passes an honest round bitwise, so each assertion can fail. End to end:
tests/e2e/test_cheaters.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from tests.support.compute import TINY

from tessera.chain.devnet import free_port
from tessera.compute.checkpoints import encode_state
from tessera.compute.diloco import (
    Coordinator,
    DilocoConfig,
    Worker,
    encode_tensors,
    new_model,
    parameter_state,
)
from tessera.compute.diloco_worker import GLOBAL_STATE_KIND, config_of
from tessera.compute.replay import (
    CommittingWorker,
    RoundTrace,
    SegmentOpening,
    check_round_links,
    pseudo_gradient_matches,
    verify_segment,
)
from tessera.compute.train import configure_determinism, split
from tessera.errors import SpecError
from tessera.protocol.workload import DilocoWorkerWorkload
from tessera.provider.config import load_provider_config
from tessera.testing.cheating_provider import CHEATING_WORKER, build_parser
from tessera.testing.cheats import (
    CHEATS,
    TESTING_FILE,
    copied_round,
    fetch_sibling_round,
    random_pseudo_gradient_round,
    skip_steps_round,
    wrong_round_round,
    wrong_shard_round,
)

H, K, WORKER = 8, 2, 1
CFG = DilocoConfig(workload=TINY, workers=2, inner_steps=H, rounds=2)
FAILS = "replay does not reach the committed end state"


@pytest.fixture(scope="module")
def tokens(corpus):
    configure_determinism(TINY)
    return split(corpus, TINY)[0]


@pytest.fixture
def theta():
    return parameter_state(new_model(TINY))


def worker(tokens, index: int = WORKER) -> CommittingWorker:
    return CommittingWorker(CFG, index, tokens)


def verdicts(trace: RoundTrace, tokens, index: int = WORKER) -> list[str]:
    """The verifier's reason for every segment of a round, replayed from the kept states."""
    c = trace.commitment
    return [verify_segment(CFG, index, c.round, c.root, c.n_leaves, K, SegmentOpening(
        s, trace.params[s], trace.optimizer_states[s], c.proof(s), c.checkpoints[s + 1],
        c.proof(s + 1)), tokens).reason for s in range(c.n_segments)]


def assert_cheap_checks_pass(trace: RoundTrace, theta, previous=None) -> None:
    assert check_round_links(trace.commitment, theta, previous) == []
    assert pseudo_gradient_matches(theta, trace.params[-1], trace.pseudo_gradient.tensors)


def test_the_config_offers_exactly_the_cheats_the_worker_knows():
    """The cheating provider's `--cheat` (the only way to ask for one) offers exactly these."""
    [option] = [a for a in build_parser()._actions if "--cheat" in a.option_strings]
    assert tuple(option.choices) == CHEATS


def test_the_production_provider_config_has_no_cheat(tmp_path):
    config = tmp_path / "provider.toml"
    config.write_text('[provider]\naccount = "devnet:1"\nport = 8000\nstate_dir = "s"\n'
                      '[pricing]\nprice_per_gpu_hour = "1"\n[testing]\ncheat = "skip-steps"\n')
    with pytest.raises(SpecError, match="testing: Extra inputs are not permitted"):
        load_provider_config(config)


def test_the_harness_passes_an_honest_round(tokens, theta):
    trace = worker(tokens).run_round_committed(theta, 0, K)
    assert_cheap_checks_pass(trace, theta)
    assert verdicts(trace, tokens) == ["bitwise"] * (H // K)


@pytest.mark.parametrize("cheat", ["skip-steps", "random-pseudo-gradient", "wrong-shard",
                                   "wrong-round"])
def test_a_cheat_passes_the_cheap_checks_and_fails_every_replay_two_rounds_running(
        cheat, tokens, theta):
    w = worker(tokens)
    play = {"skip-steps": lambda start, r: skip_steps_round(w, start, r, K),
            "random-pseudo-gradient": lambda start, r: random_pseudo_gradient_round(w, start, r, K),
            "wrong-shard": lambda start, r: wrong_shard_round(w, start, r, K, tokens),
            "wrong-round": lambda start, r: wrong_round_round(w, start, r, K)}[cheat]
    first = play(theta, 0)
    assert_cheap_checks_pass(first, theta)
    assert first.commitment.round == 0 and first.commitment.worker == WORKER
    assert verdicts(first, tokens) == [FAILS] * (H // K)
    # the next round starts where this one claims to have ended (its AdamW link holds)
    start = {n: t - 0.5 * first.pseudo_gradient.tensors[n] for n, t in theta.items()}
    second = play(start, 1)
    assert check_round_links(second.commitment, start, first.commitment) == []
    assert verdicts(second, tokens) == [FAILS] * (H // K)


def test_wrong_shard_needs_another_worker(tokens, theta):
    solo = CommittingWorker(CFG.model_copy(update={"workers": 1}), 0, tokens)
    with pytest.raises(ValueError, match="another worker's shard"):
        wrong_shard_round(solo, theta, 0, K, tokens)


def sibling_states(trace: RoundTrace, names) -> list[bytes]:
    return [encode_state(p, o, names) for p, o in
            zip(trace.params, trace.optimizer_states, strict=True)]


def test_a_copied_round_is_the_siblings_work_under_this_workers_name(tokens, theta):
    sibling = worker(tokens, 0).run_round_committed(theta, 0, K)
    copier = worker(tokens)
    states = sibling_states(sibling, copier.parameter_names())
    answer = {"inner_loss": sibling.pseudo_gradient.mean_inner_loss, "compute_s": 0.1}
    trace = copied_round(copier, theta, 0, K, answer, states)
    assert_cheap_checks_pass(trace, theta)
    assert trace.commitment.checkpoints == sibling.commitment.checkpoints  # the same states...
    assert trace.commitment.root != sibling.commitment.root               # ...under its own index
    assert all(torch.equal(trace.pseudo_gradient.tensors[n], sibling.pseudo_gradient.tensors[n])
               for n in theta)
    assert verdicts(sibling, tokens, 0) == ["bitwise"] * (H // K)  # honest as worker 0
    assert verdicts(trace, tokens) == [FAILS] * (H // K)           # not as worker 1
    # it carries the copied AdamW state on, so its next round's link holds
    start = {n: t - trace.pseudo_gradient.tensors[n] for n, t in theta.items()}
    assert check_round_links(copier.run_round_committed(start, 1, K).commitment, start,
                             trace.commitment) == []
    # a sibling round that started elsewhere (other parameters) is not copied
    assert copied_round(worker(tokens), start, 1, K, answer, states) is None


class Sibling(BaseHTTPRequestHandler):
    """A provider's public round endpoints, answering 202 (still running) at first."""

    answer: dict
    states: list[bytes]
    pending = 2

    def do_GET(self):  # noqa: N802 (http.server's name)
        base = f"/leases/{self.answer['lease_id']}/rounds/0"
        if self.path == base and Sibling.pending > 0:
            Sibling.pending -= 1
            body, status = b'{"status": "running"}', 202
        elif self.path == base:
            body, status = json.dumps(self.answer).encode(), 200
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


def test_fetch_waits_for_the_siblings_answer_over_http(tokens, theta):
    sibling = worker(tokens, 0).run_round_committed(theta, 0, K)
    Sibling.answer = {"lease_id": 7, "inner_loss": 5.0, "compute_s": 0.1,
                      "checkpoints": [{} for _ in sibling.commitment.checkpoints]}
    Sibling.states = sibling_states(sibling, worker(tokens).parameter_names())
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Sibling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        siblings = [{"lease_id": 99, "endpoint": url}, {"lease_id": 7, "endpoint": url}]
        answer, states = fetch_sibling_round(siblings, 0, H // K + 1, wait_s=10)
        assert Sibling.pending == 0 and answer["lease_id"] == 7 and states == Sibling.states
        started = time.monotonic()  # a round nobody answers: None once the wait is over
        assert fetch_sibling_round(siblings, 1, H // K + 1, wait_s=0.3) is None
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()


def test_the_worker_process_without_a_sibling_answer_trains_honestly_and_says_so(tmp_path, corpus):
    """The real worker process (run by the provider's JobSupervisor) with the copy-worker cheat
    and no reachable sibling: after its wait it answers exactly what an honest worker answers,
    and its log says it fell back."""
    from tessera.provider.runner import JobSupervisor

    workload = DilocoWorkerWorkload(model=TINY, inner_steps=H, worker=WORKER, workers=2,
                                    compression="int8", checkpoint_every=K)
    cfg = config_of(workload)
    dataset = tmp_path / "data.bin"
    dataset.write_bytes(corpus)
    jobs = JobSupervisor(tmp_path / "provider", threads=1, memory_limit_mb=4096, timeout_s=300,
                         modules=CHEATING_WORKER)   # what a cheating provider's jobs run
    jobs.folder(1).mkdir(parents=True)
    (jobs.folder(1) / TESTING_FILE).write_text(json.dumps({
        "cheat": "copy-worker", "copy_wait_s": 0.5,
        "siblings": [{"lease_id": 2, "endpoint": f"http://127.0.0.1:{free_port()}"}]}))
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
    reference = Worker(cfg, WORKER, split(corpus, TINY)[0])
    assert jobs.round_payload(1, 0).read_bytes() == \
        reference.encode(reference.run_round(coord.global_state(), 0).tensors, 0)
    [fallback] = [e for e in jobs.progress(1) if e.get("event") == "cheat-copy-fallback"]
    assert fallback["round"] == 0 and "trains honestly" in fallback["reason"]
