"""Writing a file so that a crash leaves either its old or its new content, never a part; reading
a config or spec file for the pure parsers of `protocol` (which do no I/O)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_text(path: Path | str, missing: Callable[[str], Exception] = FileNotFoundError) -> str:
    """The text of `path`; when there is no such file, raises `missing("<path>: file not found")`
    (a loader passes its own error class, e.g. `SpecError`)."""
    path = Path(path)
    if not path.exists():
        raise missing(f"{path}: file not found")
    return path.read_text()


def write_atomic(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Write `data` to `<name>.tmp` beside `path`, then rename it over `path` (the folder must
    exist). `durable`: fsync before the rename, for state a restart must find."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
