"""Text generation from a finished job's model (compute/generate.py): loaded from the results
folder (its artifacts checked), deterministic for a seed, bounded, and refusing what is not a
model."""

from __future__ import annotations

import json

import pytest
import torch
from tests.support.compute import TINY

from tessera.compute.generate import MAX_TOKENS, load_model
from tessera.compute.train import train


@pytest.fixture(scope="module")
def results(corpus, tmp_path_factory):
    """A finished single-lease job's folder: model.pt, metrics, artifacts.json."""
    folder = tmp_path_factory.mktemp("job")
    train(TINY.model_copy(update={"steps": 60, "eval_every": 30, "checkpoint_every": 60}),
          corpus, folder)
    return folder


def test_loads_from_the_results_folder_or_the_file(results):
    from_folder = load_model(results)
    from_file = load_model(results / "model.pt")
    manifest = json.loads((results / "artifacts.json").read_text())
    assert from_folder.sha256 == from_file.sha256 == manifest["model.pt"]["sha256"]
    assert from_folder.result_hash is not None   # checked against artifacts.json
    assert from_folder.describe()["context_bytes"] == TINY.block_size


def test_greedy_is_deterministic_and_sampling_follows_the_seed(results):
    model = load_model(results)
    greedy = model.generate("def ", 40)
    assert greedy.tokens == len(greedy.data) == 40
    assert load_model(results).generate("def ", 40) == greedy
    a = model.generate("def ", 40, temperature=1.0, seed=1)
    assert model.generate("def ", 40, temperature=1.0, seed=1) == a
    others = {model.generate("def ", 40, temperature=1.0, seed=s).data for s in range(2, 6)}
    assert len(others | {a.data}) > 1


def test_a_trained_model_beats_its_untrained_self_on_its_own_text(results, corpus):
    """The trained weights predict stdlib source better than the initial ones: generation
    really uses what training produced (mean log-likelihood of a held-out slice)."""
    from tessera.compute.model import ByteGPT

    trained = load_model(results)
    torch.manual_seed(TINY.seed)
    untrained = ByteGPT(TINY).eval()
    window = torch.tensor(list(corpus[-TINY.block_size - 1:]), dtype=torch.long).unsqueeze(0)
    with torch.no_grad():
        losses = [m(window[:, :-1], window[:, 1:])[1].item() for m in (trained.model, untrained)]
    assert losses[0] < losses[1]


def test_a_prompt_longer_than_the_context_is_cropped(results):
    model = load_model(results)
    long = "x" * 500 + "def "
    assert model.generate(long, 8) == model.generate("x" * (TINY.block_size - 4) + "def ", 8)


@pytest.mark.parametrize("args, says", [
    (("", 8), "empty"),
    (("a", 0), "max_tokens"),
    (("a", MAX_TOKENS + 1), "max_tokens"),
    (("a", 8.0), "max_tokens"),
    (("a", True), "max_tokens"),
    (("a", 8, -0.1), "temperature"),
    (("a", 8, float("nan")), "temperature"),
    (("a", 8, 3.0), "temperature"),
    (("a", 8, 1.0, -1), "seed"),
    (("a" * (17 << 10), 8), "prompt"),
])
def test_bad_arguments_are_refused_by_name(results, args, says):
    with pytest.raises(ValueError, match=says):
        load_model(results).generate(*args)


def test_what_is_not_a_model_is_refused(results, tmp_path):
    with pytest.raises(ValueError, match="no trained model"):
        load_model(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_model(tmp_path / "model.pt")
    torch.save({"weights": {}}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not a Tessera model"):
        load_model(tmp_path)


def test_a_tampered_artifact_is_refused(results, tmp_path):
    import shutil

    copy = tmp_path / "job"
    shutil.copytree(results, copy)
    saved = torch.load(copy / "model.pt", weights_only=True)
    saved["model"]["tok.weight"] += 1
    torch.save(saved, copy / "model.pt")
    for path in (copy, copy / "model.pt"):   # the folder's manifest is checked either way
        with pytest.raises(ValueError, match="model.pt does not match"):
            load_model(path)
