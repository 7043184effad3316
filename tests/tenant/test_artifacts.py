"""A finished lease's artifacts from a provider that lies (tenant/artifacts.py): the listing is
checked before any byte is written (a name that is a path out of the results folder, names a
training job does not write, a missing one, a malformed hash or size, a listing that is not the
committed one), and each download ends in the artifact's exact bytes or in a refusal that leaves
no file behind (wrong bytes, more or fewer than listed, an error status). The provider is a real
HTTP server (uvicorn) serving what a dishonest provider would: the honest provider's code cannot
be made to serve it."""

from __future__ import annotations

import hashlib

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from tests.support.uvicorn_server import serve

from tessera.compute.train import ARTIFACT_NAMES, result_hash_of
from tessera.errors import TenantError
from tessera.http_deadline import DeadlineClient
from tessera.tenant.artifacts import check_listing, download

BODY = {name: f"the bytes of {name}".encode() for name in ARTIFACT_NAMES}
def LIMIT(name: str) -> int:   # what the job's model could make (tenant.artifacts.size_limit)
    return 1 << 20


def meta(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def listing_of(artifacts: dict) -> tuple[dict, str]:
    """A listing and the result hash a provider would commit for it (it chooses both)."""
    committed = result_hash_of(artifacts)
    return {"result_hash": committed, "artifacts": artifacts}, committed


def honest() -> dict:
    return {name: meta(data) for name, data in BODY.items()}


def test_an_honest_listing_is_taken():
    listing, committed = listing_of(honest())
    assert check_listing(listing, committed, ARTIFACT_NAMES, LIMIT) == honest()


@pytest.mark.parametrize("case, artifacts, says", [
    ("a path out of the folder", {**honest(), "../../.bashrc": meta(b"x")}, "does not write"),
    ("an absolute path", {**honest(), "/tmp/evil": meta(b"x")}, "does not write"),
    ("a name the job does not write", {**honest(), "notes.txt": meta(b"x")}, "does not write"),
    ("a missing artifact", {k: v for k, v in honest().items() if k != "model.pt"}, "lacks model.pt"),
    ("an uppercase hash", {**honest(), "model.pt": {**meta(b"m"), "sha256": "A" * 64}}, "sha256"),
    ("a hash that is a path", {**honest(), "model.pt": {**meta(b"m"), "sha256": "../" * 20}},
     "sha256"),
    ("a negative size", {**honest(), "model.pt": {**meta(b"m"), "size": -1}}, "byte count"),
    ("a size that is true", {**honest(), "model.pt": {**meta(b"m"), "size": True}}, "byte count"),
    ("a size in words", {**honest(), "model.pt": {**meta(b"m"), "size": "12"}}, "byte count"),
    ("meta that is a list", {**honest(), "model.pt": [1, 2]}, "sha256"),
])
def test_a_listing_a_training_job_would_not_write_is_refused_before_any_byte(case, artifacts, says):
    listing, committed = listing_of(artifacts)      # committed by the provider: hashes agree
    with pytest.raises(TenantError, match=says):
        check_listing(listing, committed, ARTIFACT_NAMES, LIMIT)


def test_a_listing_that_is_not_the_committed_one_is_refused():
    listing, committed = listing_of(honest())
    for bad in ([], {"artifacts": []}, {"result_hash": committed}):
        with pytest.raises(TenantError, match="not {result_hash, artifacts}"):
            check_listing(bad, committed, ARTIFACT_NAMES, LIMIT)
    with pytest.raises(TenantError, match="but committed"):
        check_listing(listing, "0" * 64, ARTIFACT_NAMES, LIMIT)
    other = {**honest(), "model.pt": meta(b"another model")}
    with pytest.raises(TenantError, match="does not hash to the committed result"):
        check_listing({"result_hash": committed, "artifacts": other}, committed, ARTIFACT_NAMES,
                      LIMIT)


MODES = {"exact": BODY["model.pt"], "wrong": b"x" * len(BODY["model.pt"]),
         "longer": BODY["model.pt"] + b"tail", "shorter": BODY["model.pt"][:-3]}


@pytest.fixture(scope="module")
def provider():
    app = FastAPI()

    @app.get("/{mode}/artifacts/{sha256}")
    def artifact(mode: str, sha256: str) -> Response:
        if mode == "missing":
            return Response(status_code=404)
        return Response(MODES[mode], media_type="application/octet-stream")

    with serve(app) as url:
        yield url


@pytest.mark.parametrize("mode, says", [("wrong", "does not match its sha256"),
                                        ("longer", "larger than its listed"),
                                        ("shorter", "does not match its sha256"),
                                        ("missing", "HTTP 404")])
def test_a_download_that_is_not_the_listed_bytes_leaves_nothing(provider, tmp_path, mode, says):
    with DeadlineClient(timeout=5.0) as http, pytest.raises(TenantError, match=says):
        download(http, f"{provider}/{mode}", "model.pt", meta(BODY["model.pt"]), tmp_path)
    assert list(tmp_path.iterdir()) == []            # no artifact, no .part


def test_the_listed_bytes_land_in_place(provider, tmp_path):
    with DeadlineClient(timeout=5.0) as http:
        path = download(http, f"{provider}/exact", "model.pt", meta(BODY["model.pt"]), tmp_path)
    assert path == tmp_path / "model.pt" and path.read_bytes() == BODY["model.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
