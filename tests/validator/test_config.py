"""validator.toml: the example parses; a bad field is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.errors import SpecError
from tessera.validator.config import load_validator_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "validator.toml"


def test_example_parses():
    cfg = load_validator_config(EXAMPLE)
    assert cfg.validator.stake_base_units == 100 * 10**18
    assert cfg.validator.endpoint == "http://127.0.0.1:7101"
    assert cfg.probes.per_epoch == 1 and cfg.probes.timeout_s == 3.0


@pytest.mark.parametrize(("line", "field"), [
    ("[probes]\ntimeout_s = 0", "probes.timeout_s"),
    ("[probes]\nper_epoch = 100", "probes.per_epoch"),
    ("[probes]\nsurprise = 1", "probes.surprise"),
])
def test_bad_fields_are_named(tmp_path, line, field):
    path = tmp_path / "v.toml"
    path.write_text(EXAMPLE.read_text().split("[probes]")[0] + line + "\n")
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        load_validator_config(path)


def test_state_dir_defaults_under_tessera_home(tmp_path, monkeypatch):
    """Left out, a validator keeps its state in $TESSERA_HOME/validator-<port>, as a provider
    does, so running one from a source checkout leaves nothing in the work tree."""
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    cfg = load_validator_config(EXAMPLE)
    assert Path(cfg.validator.state_dir) == tmp_path / "home" / "validator-7101"
    path = tmp_path / "v.toml"
    path.write_text(EXAMPLE.read_text().replace("port = 7101\n", f"port = 7101\nstate_dir = "
                                                                 f'"{tmp_path / "mine"}"\n'))
    assert Path(load_validator_config(path).validator.state_dir) == tmp_path / "mine"


def test_a_model_larger_than_the_validator_replays_is_abstained_on():
    """Review 25: the model a case names comes from the tenant's own spec, and the largest the
    schema accepts (48 layers, n_embd 4096, block 4096: ~9.7 G parameters, a 108 GiB state)
    would have every validator download and replay it in memory. A case of a model over
    `[challenges] max_params` (default 100 M) is abstained on before anything is downloaded."""
    from types import SimpleNamespace

    from tessera.errors import CaseError
    from tessera.protocol.workload import TrainingWorkload
    from tessera.validator.challenge_replay import replayable_size
    from tessera.validator.config import ChallengeSection

    assert ChallengeSection().max_params == 100_000_000
    small = TrainingWorkload()
    assert replayable_size(SimpleNamespace(model=small), 100_000_000) < 1_000_000
    huge = small.model_copy(update={"n_layer": 48, "n_embd": 4096, "n_head": 32,
                                    "block_size": 4096})
    with pytest.raises(CaseError, match="more than this validator replays"):
        replayable_size(SimpleNamespace(model=huge), 100_000_000)
