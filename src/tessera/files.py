"""Writing a file so that a crash leaves either its old or its new content, never a part; reading
a config or spec file for the pure parsers of `protocol` (which do no I/O)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

# A spec or config is a short hand-written file; anything longer is refused unread.
MAX_TEXT_BYTES = 1 << 20


def read_text(path: Path | str, error: Callable[[str], Exception] = ValueError,
              max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of the regular file `path`. Every failure raises `error(message)` with the
    path named (a loader passes its own error class, e.g. `SpecError`): no such file, a
    directory, not a regular file (a FIFO, /dev/zero: refused without blocking or reading), no
    permission, over `max_bytes`, or bytes that are not UTF-8 (the offset and line named)."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it has no effect on a file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except PermissionError:
        raise error(f"{path}: permission denied") from None
    except (OSError, ValueError) as exc:     # ValueError: a NUL byte in the path
        raise error(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data, problem = _read_regular(fd, max_bytes)
    except OSError as exc:
        data, problem = b"", f"cannot be read ({exc.strerror or exc})"
    finally:
        os.close(fd)
    if problem:
        raise error(f"{path}: {problem}")
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes} bytes, the limit for this file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start}, line {line})") from None


def _read_regular(fd: int, max_bytes: int) -> tuple[bytes, str]:
    """Up to `max_bytes` + 1 bytes of an open file, or why it is not read."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        return b"", "is a directory, not a file"
    if not stat.S_ISREG(mode):
        return b"", "not a regular file"
    chunks, size = [], 0
    while size <= max_bytes:
        chunk = os.read(fd, max_bytes + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), ""


def write_atomic(path: Path, data: bytes | str | list, *, durable: bool = False) -> None:
    """Write `data` to `<name>.tmp` beside `path`, then rename it over `path` (the folder must
    exist). `durable`: fsync before the rename, for state a restart must find. A list of
    bytes-like parts is written one after another, never joined (a checkpoint state of a
    10 M-parameter model is 130 MB: joining it first costs a copy and twice the memory)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for part in data if isinstance(data, list) else [data]:
            f.write(part.encode() if isinstance(part, str) else part)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
