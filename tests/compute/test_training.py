import json

import pytest
import torch
from pydantic import ValidationError

from tessera.compute.corpus import build_stdlib_corpus, sha256_hex
from tessera.compute.evaluate import evaluate_model
from tessera.compute.model import VOCAB_SIZE, ByteGPT
from tessera.compute.train import result_hash_of, train, verify_artifacts
from tessera.protocol.workload import TrainingWorkload

TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, steps=40,
            eval_every=10, checkpoint_every=10, eval_batches=2, device="cpu")


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_corpus_is_deterministic_and_sized():
    assert build_stdlib_corpus(10_000) == build_stdlib_corpus(10_000)
    assert len(build_stdlib_corpus(10_000)) == 10_000


def test_model_shapes():
    w = TrainingWorkload(**TINY)
    logits, loss = ByteGPT(w)(torch.zeros(3, 16, dtype=torch.long),
                              torch.zeros(3, 16, dtype=torch.long))
    assert logits.shape == (3, 16, VOCAB_SIZE) and loss.ndim == 0


def test_loss_goes_down(corpus, tmp_path):
    result = train(TrainingWorkload(**{**TINY, "steps": 80}), corpus, tmp_path)
    history = json.loads((tmp_path / "loss_history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1.0
    assert result.metrics["final_val_loss"] < 4.0  # uniform over bytes is ln(256) = 5.55


def test_same_workload_same_bits_other_seed_other_bits(corpus, tmp_path):
    w = TrainingWorkload(**TINY)
    a = train(w, corpus, tmp_path / "a")
    b = train(w, corpus, tmp_path / "b")
    c = train(w.model_copy(update={"seed": 99}), corpus, tmp_path / "c")
    wa, wb, wc = (weights(tmp_path / x / "model.pt") for x in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    history = [(tmp_path / x / "loss_history.json").read_text() for x in "abc"]
    assert history[0] == history[1] != history[2]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.result_hash == b.result_hash != c.result_hash


def test_crash_and_resume_gives_the_uninterrupted_result(corpus, tmp_path):
    w = TrainingWorkload(**TINY)
    whole = train(w, corpus, tmp_path / "whole")

    def crash_at_25(progress):
        if progress["step"] == 25:
            raise KeyboardInterrupt  # stands in for the process dying after the step-20 checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(w, corpus, tmp_path / "resumed", on_progress=crash_at_25)
    resumed = train(w, corpus, tmp_path / "resumed")
    assert resumed.timing["steps_this_run"] == 20
    ww, wr = weights(tmp_path / "whole" / "model.pt"), weights(tmp_path / "resumed" / "model.pt")
    assert all(torch.equal(ww[k], wr[k]) for k in ww)
    # every artifact, the checkpoint included, is byte-identical, so the result hash is too
    assert resumed.artifacts == whole.artifacts
    assert resumed.result_hash == whole.result_hash
    # resuming a finished run trains nothing and changes nothing
    again = train(w, corpus, tmp_path / "resumed")
    assert again.timing["steps_this_run"] == 0 and again.result_hash == whole.result_hash


def test_artifacts_are_content_addressed(corpus, tmp_path):
    events = []
    result = train(TrainingWorkload(**TINY), corpus, tmp_path, on_progress=events.append)
    assert [e["step"] for e in events] == list(range(1, 41))
    assert {"step", "steps", "train_loss", "val_loss", "tokens_per_s"} <= set(events[-1])
    listing = json.loads((tmp_path / "artifacts.json").read_text())
    assert set(listing) == {"model.pt", "loss_history.json", "metrics.json", "checkpoint.pt"}
    for name, meta in listing.items():
        assert sha256_hex((tmp_path / name).read_bytes()) == meta["sha256"]
    assert result_hash_of(listing) == result.result_hash
    assert result.result_hash == sha256_hex(json.dumps(listing, sort_keys=True,
                                                       separators=(",", ":")).encode())
    assert verify_artifacts(tmp_path) == result.result_hash
    assert result.metrics["dataset_sha256"] == sha256_hex(corpus)
    timing = json.loads((tmp_path / "timing.json").read_text())  # reported, never hashed
    assert timing["tokens_per_s"] > 0 and timing["device"] == "cpu" and timing["threads"] == 1
    (tmp_path / "metrics.json").write_text((tmp_path / "metrics.json").read_text() + " ")
    with pytest.raises(ValueError, match="metrics.json does not match"):
        verify_artifacts(tmp_path)


def test_evaluate_reproduces_reported_val_loss(corpus, tmp_path):
    result = train(TrainingWorkload(**TINY), corpus, tmp_path)
    assert evaluate_model(tmp_path / "model.pt", corpus) == result.metrics["final_val_loss"]
    w = TrainingWorkload(**TINY)
    assert evaluate_model(tmp_path / "model.pt", corpus, w) == result.metrics["final_val_loss"]
    with pytest.raises(ValueError, match="n_embd=32 \\(expected 64\\)"):
        evaluate_model(tmp_path / "model.pt", corpus, w.model_copy(update={"n_embd": 64}))
    other = build_stdlib_corpus(128 * 1024)[64 * 1024:]
    assert evaluate_model(tmp_path / "model.pt", other) != result.metrics["final_val_loss"]


@pytest.mark.parametrize("fields,name", [
    ({"n_embd": 30, "n_head": 4}, "divisible"),
    ({"steps": 0}, "steps"),
    ({"val_fraction": 0.7}, "val_fraction"),
    ({"colour": "red"}, "colour"),
])
def test_workload_errors_name_the_field(fields, name):
    with pytest.raises(ValidationError) as info:
        TrainingWorkload(**fields)
    assert name in str(info.value)


def test_too_small_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs at least"):
        train(TrainingWorkload(**TINY), b"x" * 100, tmp_path)
