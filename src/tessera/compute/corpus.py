"""Content-addressed datasets, and the built-in demo corpus made from the Python standard
library's own source files (every machine with Python has them: nothing is downloaded)."""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

from tessera.files import write_atomic


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_stdlib_corpus(max_bytes: int = 1 << 20) -> bytes:
    """Concatenate stdlib .py files in sorted path order until `max_bytes` (deterministic for a
    given Python installation; the dataset is identified by its hash, not by how it was made)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes]


def write_dataset(data: bytes, folder: Path) -> Path:
    """Store `data` under its own sha256; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sha256_hex(data)
    if not path.exists():
        write_atomic(path, data)
    return path
