"""Pseudo-gradient compression and the wire format that carries tensors between nodes.

int8 quantization: each tensor is flattened and cut into chunks of `chunk` elements (the last one
may be shorter); each chunk gets a float32 scale = absmax / 127 and its values are sent as
round(x / scale), clamped to [-127, 127]. The reconstruction error of every element is at most
scale / 2. int4 is the same with 7 levels a side (scale = absmax / 7, values in [-7, 7]), two
values to a byte on the wire: value + 8 in each nibble, the first in the low nibble, an odd
count padded with a zero value (nibble 8); nibble 0 (-8) is never sent and is refused.
`ErrorFeedback` keeps what quantization lost (the residual) and adds it to the next
tensor it compresses, so the cumulative sum of what was transmitted tracks the cumulative sum of
the true values to within one step's quantization error.

Wire format (`serialize` / `deserialize`), little-endian, no pickle:

    b"TSRW"  magic (4 bytes)
    u32      length L of the header
    L bytes  UTF-8 JSON: {"v": 1, "meta": {...}, "tensors": [{"name", "dtype", "shape"}, ...]}
    ...      the raw buffers, in header order, back to back

Only float32 and int8 tensors are accepted. `deserialize` refuses anything malformed (bad magic,
truncated or trailing bytes, unknown dtype, bad shape, duplicate names) with `WireFormatError`.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from dataclasses import dataclass

import numpy as np
import torch

from tessera.errors import WireFormatError

MAGIC = b"TSRW"
VERSION = 1
MAX_HEADER_BYTES = 1 << 20
MAX_HEADER_DEPTH = 32          # a header nests 4 levels (meta may hold small objects)
MAX_TENSORS = 100_000
DEFAULT_CHUNK = 4096
SCALE_SUFFIX = "::scale"
DTYPES = {"float32": torch.float32, "int8": torch.int8}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
ITEMSIZE = {"float32": 4, "int8": 1}


# ---------------------------------------------------------------------------------------------
# int8 quantization


@dataclass(frozen=True)
class Quantized:
    q: torch.Tensor       # int8, the original shape
    scales: torch.Tensor  # float32, (ceil(numel / chunk),)
    chunk: int


LEVELS = {"int8": 127, "int4": 7}   # the largest quantized magnitude of each compression


def quantize_int8(x: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> Quantized:
    """Per-chunk absmax int8 quantization; |x - dequantize(q)| <= scale / 2 elementwise."""
    return quantize(x, chunk, LEVELS["int8"])


def quantize(x: torch.Tensor, chunk: int = DEFAULT_CHUNK, levels: int = LEVELS["int8"]) -> Quantized:
    """Per-chunk absmax quantization to integers in [-levels, levels] (held as int8);
    |x - dequantize(q)| <= scale / 2 elementwise, scale = absmax / levels."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    flat = x.detach().to(torch.float32).reshape(-1)
    n = flat.numel()
    rows = _rows(flat, chunk)   # one row per chunk, the last padded with zeros
    scales = rows.abs().amax(dim=1) / float(levels)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    # each element divided by its own chunk's scale: the same float32 operations, element by
    # element, as dividing by a gathered per-element scale, without building the gather
    q = torch.round(rows / safe[:, None]).clamp_(-levels, levels).to(torch.int8).view(-1)[:n]
    return Quantized(q.view(x.shape), scales, chunk)


def _rows(flat: torch.Tensor, chunk: int) -> torch.Tensor:
    """`flat` as float32 rows of `chunk` elements (at least one row), zero-padded at the end."""
    n = flat.numel()
    n_chunks = max(1, math.ceil(n / chunk))
    padded = torch.zeros(n_chunks * chunk, dtype=torch.float32)
    padded[:n] = flat
    return padded.view(n_chunks, chunk)


def dequantize_int8(qt: Quantized) -> torch.Tensor:
    flat = qt.q.reshape(-1)
    rows = _rows(flat, qt.chunk)
    if qt.scales.shape != (rows.shape[0],):   # (never broadcast one scale over every chunk)
        raise ValueError(f"{tuple(qt.scales.shape)} scales for {rows.shape[0]} chunks")
    return (rows * qt.scales[:, None]).view(-1)[:flat.numel()].view(qt.q.shape)


class ErrorFeedback:
    """Compress a stream of tensor dicts, carrying each step's quantization residual forward."""

    def __init__(self, chunk: int = DEFAULT_CHUNK, levels: int = LEVELS["int8"]):
        self.chunk, self.levels = chunk, levels
        self.residual: dict[str, torch.Tensor] = {}

    def compress(self, tensors: dict[str, torch.Tensor]) -> dict[str, Quantized]:
        out = {}
        for name, t in tensors.items():
            x = t.detach().to(torch.float32)
            if name in self.residual:
                x = x + self.residual[name]
            qt = quantize(x, self.chunk, self.levels)
            self.residual[name] = x - dequantize_int8(qt)
            out[name] = qt
        return out

    @classmethod
    def for_compression(cls, compression: str, chunk: int) -> ErrorFeedback | None:
        """The error feedback a payload compressed this way carries (None: fp32, nothing lost)."""
        return cls(chunk, LEVELS[compression]) if compression in LEVELS else None

    def state_dict(self) -> dict:
        return {"chunk": self.chunk, "residual": {k: v.clone() for k, v in self.residual.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.chunk = state["chunk"]
        self.residual = {k: v.clone() for k, v in state["residual"].items()}


def pack_int8(quantized: dict[str, Quantized]) -> dict[str, torch.Tensor]:
    """Flatten quantized tensors into plain tensors for `serialize`: name -> int8, name::scale."""
    out = {}
    for name, qt in quantized.items():
        out[name] = qt.q
        out[name + SCALE_SUFFIX] = qt.scales
    return out


def pack_int4(quantized: dict[str, Quantized]) -> dict[str, torch.Tensor]:
    """`pack_int8` with two values to a byte (module docstring): name -> int8 of ceil(n / 2)."""
    out = {}
    for name, qt in quantized.items():
        nibbles = qt.q.reshape(-1).to(torch.int16) + 8
        if nibbles.numel() % 2:
            nibbles = torch.cat([nibbles, torch.tensor([8], dtype=torch.int16)])
        pairs = nibbles.view(-1, 2)
        out[name] = (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8).view(torch.int8)
        out[name + SCALE_SUFFIX] = qt.scales
    return out


def unpack_int4(tensors: dict[str, torch.Tensor], chunk: int,
                numel: int) -> dict[str, torch.Tensor]:
    """Inverse of `pack_int4` (each tensor holds `numel` values) followed by dequantization;
    refuses a wrong length, a nibble of 0 or a padding that is not a zero value."""
    values = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            values[name] = t
            continue
        if t.dtype != torch.int8 or t.dim() != 1 or t.numel() != (numel + 1) // 2:
            raise WireFormatError(f"{name!r}: expected int8 of shape ({(numel + 1) // 2},) "
                                  f"holding {numel} int4 values, got {t.dtype} {tuple(t.shape)}")
        b = t.view(torch.uint8).to(torch.int16)
        nibbles = torch.stack([b & 15, b >> 4], dim=1).reshape(-1)
        if (nibbles == 0).any():
            raise WireFormatError(f"{name!r}: int4 value -8 is outside [-7, 7]")
        if numel % 2 and nibbles[-1] != 8:
            raise WireFormatError(f"{name!r}: the padding nibble must hold 0")
        values[name] = (nibbles[:numel] - 8).to(torch.int8)
    return unpack_int8(values, chunk)


def unpack_int8(tensors: dict[str, torch.Tensor], chunk: int) -> dict[str, torch.Tensor]:
    """Inverse of `pack_int8` followed by dequantization; refuses inconsistent payloads."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            if name[: -len(SCALE_SUFFIX)] not in tensors:
                raise WireFormatError(f"scale {name!r} has no tensor")
            continue
        if t.dtype != torch.int8:
            raise WireFormatError(f"{name!r}: expected int8, got {t.dtype}")
        scales = tensors.get(name + SCALE_SUFFIX)
        if scales is None:
            raise WireFormatError(f"{name!r} has no {SCALE_SUFFIX} tensor")
        want = (max(1, math.ceil(t.numel() / chunk)),)
        if scales.dtype != torch.float32 or tuple(scales.shape) != want:
            raise WireFormatError(f"{name + SCALE_SUFFIX!r}: expected float32 of shape {want}, "
                                  f"got {scales.dtype} {tuple(scales.shape)}")
        if not torch.isfinite(scales).all() or (scales < 0).any():
            raise WireFormatError(f"{name + SCALE_SUFFIX!r}: scales must be finite and >= 0")
        out[name] = dequantize_int8(Quantized(t, scales, chunk))
    return out


# ---------------------------------------------------------------------------------------------
# wire format


def serialize(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> bytes:
    return b"".join(serialized_parts(tensors, meta))


def serialized_parts(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> list:
    """`serialize`'s bytes in parts, the tensors' own memory as views (no copy): for writing
    a large state to a file without building it in memory first (`files.write_atomic`)."""
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise RuntimeError("the wire format is little-endian")
    entries, buffers = [], []
    for name, t in tensors.items():
        dtype = DTYPE_NAMES.get(t.dtype)
        if dtype is None:
            raise ValueError(f"{name!r}: dtype {t.dtype} is not supported on the wire")
        entries.append({"name": name, "dtype": dtype, "shape": list(t.shape)})
        array = t.detach().contiguous().cpu().numpy()
        buffers.append(memoryview(array.reshape(-1)).cast("B"))
    header = json.dumps({"v": VERSION, "meta": meta or {}, "tensors": entries},
                        separators=(",", ":")).encode()
    return [MAGIC + struct.pack("<I", len(header)) + header, *buffers]


def deserialize(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """Parse `serialize`'s output; returns (tensors, meta) or raises WireFormatError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireFormatError("payload must be bytes")
    data = bytes(data)
    if len(data) < 8 or data[:4] != MAGIC:
        raise WireFormatError("bad magic: not a tensor payload")
    (hlen,) = struct.unpack("<I", data[4:8])
    if hlen > MAX_HEADER_BYTES or 8 + hlen > len(data):
        raise WireFormatError(f"header length {hlen} does not fit in {len(data)} bytes")
    raw = data[8:8 + hlen]
    if _nesting(raw) > MAX_HEADER_DEPTH:
        raise WireFormatError(f"header nests deeper than {MAX_HEADER_DEPTH} levels")
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise WireFormatError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise WireFormatError(f"header must be an object with v={VERSION}")
    meta, entries = header.get("meta", {}), header.get("tensors")
    if not isinstance(meta, dict) or not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise WireFormatError("header needs a 'meta' object and a 'tensors' list")
    out: dict[str, torch.Tensor] = {}
    pos = 8 + hlen
    for e in entries:
        if not isinstance(e, dict) or set(e) != {"name", "dtype", "shape"}:
            raise WireFormatError(f"bad tensor entry {e!r}")
        name, dtype, shape = e["name"], e["dtype"], e["shape"]
        if not isinstance(name, str) or name in out:
            raise WireFormatError(f"bad or duplicate tensor name {name!r}")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise WireFormatError(f"{name!r}: unsupported dtype {dtype!r}")
        if (not isinstance(shape, list) or len(shape) > 16
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                           for d in shape)):
            raise WireFormatError(f"{name!r}: bad shape {shape!r}")
        nbytes = math.prod(shape) * ITEMSIZE[dtype]
        if pos + nbytes > len(data):
            raise WireFormatError(f"{name!r}: payload truncated ({len(data) - pos} bytes left, "
                                  f"{nbytes} needed)")
        buf = bytearray(data[pos:pos + nbytes])
        t = torch.frombuffer(buf, dtype=DTYPES[dtype]) if nbytes else torch.empty(0, dtype=DTYPES[dtype])
        out[name] = t.reshape(shape)
        pos += nbytes
    if pos != len(data):
        raise WireFormatError(f"{len(data) - pos} trailing bytes after the last tensor")
    return out, meta


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _nesting(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets in strings not counted).
    Checked before parsing: the JSON decoder recurses once per level, and a header nested
    ~100,000 deep within MAX_HEADER_BYTES overflows the C stack of a process whose recursion
    limit was raised (a crash, not an exception)."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    if not skeleton.size:
        return 0
    step = (np.isin(skeleton, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(skeleton, (ord("]"), ord("}"))))
    return int(np.cumsum(step).max())


def analytic_bytes(numel: int, compression: str, chunk: int = DEFAULT_CHUNK) -> int:
    """Bytes of one payload counted as parameters x bytes per element (scales excluded)."""
    return {"int8": numel, "int4": (numel + 1) // 2}.get(compression, 4 * numel)
