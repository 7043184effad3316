"""A finished lease's artifacts, downloaded by its tenant (`Tenant.fetch_results`).

Everything here comes from the provider, which also chose what it committed on chain, so the
listing is checked before any byte is written: it must be the listing of exactly the artifacts a
training job writes (`compute.train.ARTIFACT_NAMES`, plain file names: a name such as
`../../.bashrc` would otherwise be a path out of the results folder), each with a lowercase
sha256 and a size no larger than the job's model can make (`size_limit`: a size is the
provider's word, and the download's limits follow it); and it must hash to the committed
result. Each artifact is streamed to a
`.part` file beside its place, hashed on the way, within a time limit by its listed size and never
past that size, and renamed into place only when it matches: a refused download leaves nothing
behind, whatever the provider sends.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tessera.errors import TenantError
from tessera.http_deadline import json_of, raw_chunks, transfer_time_s, within
from tessera.protocol.workload import TrainingWorkload

SHA256 = re.compile(r"^[0-9a-f]{64}$")
# An artifact's most bytes per parameter: a checkpoint holds the parameters and AdamW's two
# moments (12 bytes), with room for torch's framing; plus the loss history, per step, and slack.
BYTES_PER_PARAMETER, BYTES_PER_STEP, SLACK_BYTES = 16, 128, 16 << 20


def size_limit(workload: TrainingWorkload, name: str) -> int:
    """The most bytes artifact `name` of a job running `workload` can take (a bound, not a
    fit): the JSON files by the steps (a loss history entry per step), the models by the
    parameters too (review 16: a JSON file given the model's bound parsed into 12x its size)."""
    json_bytes = BYTES_PER_STEP * workload.steps + (1 << 20)
    if name.endswith(".json"):
        return json_bytes
    from tessera.compute.model import parameter_count

    return BYTES_PER_PARAMETER * parameter_count(workload) + json_bytes + SLACK_BYTES


def check_listing(listing: object, committed: str, names: tuple[str, ...],
                  max_size: Callable[[str], int]) -> dict[str, dict]:
    """The artifacts of a provider's listing `{"result_hash", "artifacts": {name: {sha256,
    size}}}` once it is the listing of exactly `names`, each at most `max_size(name)` bytes, and
    hashes to `committed` (the result hash on chain, 64 hex digits); TenantError naming what is
    wrong otherwise."""
    from tessera.compute.train import result_hash_of

    if not isinstance(listing, dict) or not isinstance(listing.get("artifacts"), dict):
        raise TenantError("the provider's artifact list is not {result_hash, artifacts}")
    artifacts = listing["artifacts"]
    unknown = sorted(set(artifacts) - set(names), key=str)
    if unknown:
        raise TenantError(f"the provider lists artifacts a training job does not write: "
                          f"{', '.join(repr(n)[:80] for n in unknown[:3])}")
    missing = sorted(set(names) - set(artifacts))
    if missing:
        raise TenantError(f"the provider's artifact list lacks {', '.join(missing)}")
    for name, meta in artifacts.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or not SHA256.match(meta["sha256"]):
            raise TenantError(f"artifact {name}: no lowercase sha256 in the provider's list")
        size = meta.get("size")
        if type(size) is not int or size < 0:
            raise TenantError(f"artifact {name}: its size {str(size)[:40]!r} is not a byte count")
        if size > max_size(name):
            raise TenantError(f"artifact {name}: {size:,} bytes listed, more than this job's "
                              f"model can make ({max_size(name):,})")
    if listing.get("result_hash") != committed:
        raise TenantError(f"provider reports result {str(listing.get('result_hash'))[:80]} but "
                          f"committed 0x{committed} on chain")
    if result_hash_of(artifacts) != committed:
        raise TenantError("artifact list does not hash to the committed result")
    return artifacts


def download(http: httpx.Client, endpoint: str, name: str, meta: dict, directory: Path) -> Path:
    """Stream one checked artifact to `directory/name`; TenantError (and no file) unless the
    provider sends exactly its listed bytes within the limit for their size."""
    path, part = directory / name, directory / f"{name}.part"
    digest, size, cap = hashlib.sha256(), 0, meta["size"]
    try:
        with within(time.monotonic() + transfer_time_s(cap)), \
                http.stream("GET", f"{endpoint}/artifacts/{meta['sha256']}") as response:
            if response.status_code != 200:
                raise TenantError(f"artifact {name} could not be downloaded: HTTP "
                                  f"{response.status_code}")
            with open(part, "wb") as f:
                for chunk in raw_chunks(response):
                    size += len(chunk)
                    if size > cap:
                        raise TenantError(f"artifact {name} is larger than its listed {cap} bytes")
                    digest.update(chunk)
                    f.write(chunk)
    except (httpx.HTTPError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise TenantError(f"artifact {name} could not be downloaded: {exc}") from None
    except TenantError:
        part.unlink(missing_ok=True)
        raise
    if size != cap or digest.hexdigest() != meta["sha256"]:
        part.unlink(missing_ok=True)
        raise TenantError(f"artifact {name} does not match its sha256"
                          + (f" ({size} of {cap} bytes)" if size != cap else ""))
    os.replace(part, path)
    return path


def read_metrics(directory: Path) -> tuple[dict, list, float]:
    """(metrics, loss history, the reported held-out loss) from downloaded artifacts; TenantError
    if they do not read as a training job writes them, or the loss is not a finite number (a NaN
    passed the recompute check, which compares with `>`: review 15)."""
    try:
        metrics = json_of((directory / "metrics.json").read_bytes())
        history = json_of((directory / "loss_history.json").read_bytes())
        reported = metrics["final_val_loss"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TenantError(f"the provider's metrics.json or loss_history.json does not read: "
                          f"{type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(metrics, dict) or not isinstance(history, list):
        raise TenantError("the provider's metrics.json is not an object or its "
                          "loss_history.json not a list")
    if type(reported) not in (int, float) or not math.isfinite(reported):
        raise TenantError(f"the provider's metrics.json reports a held-out loss of "
                          f"{str(reported)[:40]!r}, not a finite number")
    return metrics, history, float(reported)
