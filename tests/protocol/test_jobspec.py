import pytest

from tessera.errors import SpecError
from tessera.files import read_text
from tessera.protocol.jobspec import parse_job_spec

GOOD = """
name = "t"
[order]
max_price_per_gpu_hour = "3.00"
duration = "10m"
[workload]
kind = "train-charlm"
"""


def load_job_spec(path):
    """What `tessera job submit` does with a spec file: read it, then parse it (protocol is pure)."""
    return parse_job_spec(read_text(path, SpecError), path)


def write(tmp_path, text):
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_good_spec_parses_money_and_durations(tmp_path):
    spec = load_job_spec(write(tmp_path, GOOD))
    assert spec.order.max_price_per_gpu_hour == 3_000_000
    assert spec.order.duration == 600
    assert spec.order.escrow == 3_000_000 * 600 // 3600
    assert len(spec.spec_hash()) == 32


@pytest.mark.parametrize("text,field", [
    (GOOD.replace('duration = "10m"', ""), "order.duration"),
    (GOOD.replace('"3.00"', '"3.0000001"'), "order.max_price_per_gpu_hour"),
    (GOOD.replace('"3.00"', '"0"'), "max_price_per_gpu_hour"),
    (GOOD + "\n[dataset]\nsauce = 'x'\n", "dataset.sauce"),
    (GOOD.replace("[order]", "[order]\nnodes = 0"), "order.nodes"),
    (GOOD.replace("[order]", "[order]\ndeposit = '0.01'"), "deposit"),
    (GOOD.replace('kind = "train-charlm"', 'kind = "mine-bitcoin"'), "workload.kind"),
])
def test_bad_spec_names_the_field(tmp_path, text, field):
    with pytest.raises(SpecError) as info:
        load_job_spec(write(tmp_path, text))
    assert field in str(info.value)
    assert "job.toml" in str(info.value)


def test_missing_file_and_bad_toml_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="nope.toml: file not found"):
        load_job_spec(tmp_path / "nope.toml")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_job_spec(write(tmp_path, "[order\n"))


def test_several_nodes_need_diloco_mode(tmp_path):
    with pytest.raises(SpecError, match='mode = "diloco"'):
        load_job_spec(write(tmp_path, GOOD.replace("[order]", "[order]\nnodes = 3")))
    spec = load_job_spec(write(tmp_path, 'mode = "diloco"\n' + GOOD.replace(
        "[order]", "[order]\nnodes = 3") + "\n[diloco]\ninner_steps = 20\nrounds = 4\n"))
    assert spec.order.nodes == 3 and spec.diloco.inner_steps == 20
    assert spec.order.escrow == 3 * 3_000_000 * 600 // 3600


def test_example_specs_parse():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("job.toml", "diloco.toml"):
        load_job_spec(examples / name)


def test_verification_is_on_by_default_and_its_table_is_checked(tmp_path):
    spec = load_job_spec(write(tmp_path, GOOD))
    v = spec.verification
    assert v.enabled and v.checkpoint_every == 5 and v.spot_check_probability == 0.4
    assert v.replay_tolerance == 0.0 and v.challenge
    off = load_job_spec(write(tmp_path, GOOD + "\n[verification]\nenabled = false\n"))
    assert not off.verification.enabled and off.spec_hash() != spec.spec_hash()
    for bad, field in (("checkpoint_every = 0", "verification.checkpoint_every"),
                       ("spot_check_probability = 1.5", "verification.spot_check_probability"),
                       ("replay_tolerance = -1", "verification.replay_tolerance"),
                       ("replay_tolerance = 1e-6", "only 0 (a bitwise replay) is offered"),
                       ("sample = 3", "verification.sample")):
        with pytest.raises(SpecError) as info:
            load_job_spec(write(tmp_path, GOOD + f"\n[verification]\n{bad}\n"))
        assert field in str(info.value)


DILOCO = 'mode = "diloco"\n' + GOOD.replace("[order]", "[order]\nnodes = 2")


def test_verified_diloco_job_trains_on_the_cpu(tmp_path):
    """Segments are replayed bitwise on CPUs (compute/numerics.py): "auto" becomes "cpu" before
    the spec is hashed, and the hash is that of a spec saying "cpu"."""
    spec = load_job_spec(write(tmp_path, DILOCO))
    assert spec.verification.enabled and spec.workload.device == "cpu"
    explicit = load_job_spec(write(tmp_path, DILOCO + 'device = "cpu"\n'))
    assert explicit.spec_hash() == spec.spec_hash()
    again = type(spec).model_validate(spec.model_dump(mode="json"))
    assert again.workload.device == "cpu" and again.spec_hash() == spec.spec_hash()


def test_verified_diloco_job_refuses_cuda_and_says_why(tmp_path):
    with pytest.raises(SpecError) as info:
        load_job_spec(write(tmp_path, DILOCO + 'device = "cuda"\n'))
    message = str(info.value)
    assert 'workload.device = "cuda" cannot be verified' in message
    assert "no CUDA replay profile" in message and "enabled = false" in message


def test_unverified_or_single_jobs_keep_their_device(tmp_path):
    off = load_job_spec(write(tmp_path, DILOCO + 'device = "cuda"\n'
                              "[verification]\nenabled = false\n"))
    assert off.workload.device == "cuda"
    assert load_job_spec(write(tmp_path, DILOCO + "[verification]\nenabled = false\n")
                         ).workload.device == "auto"
    assert load_job_spec(write(tmp_path, GOOD)).workload.device == "auto"
    assert load_job_spec(write(tmp_path, GOOD + 'device = "cuda"\n')).workload.device == "cuda"
