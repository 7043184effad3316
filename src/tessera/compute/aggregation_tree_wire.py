"""The bytes a tree of aggregators sends besides its payloads (compute/aggregation_tree.py): a
member's commitment, and an aggregator's openings of sampled chunks. Little-endian, no pickle;
`*_from_bytes` refuses anything malformed with WireFormatError and the reason, before a check
runs on it.

    commitment   b"TSRC" | u32 members | u32 chunks | value root (32) | chunks x f32 scales
    openings     b"TSRO" | u32 samples | u32 members | u32 path length L
                 then per sampled chunk: u32 index, then per member: u32 n | n value bytes |
                 L x 32 path bytes

A commitment is for a job whose payloads have `chunks` chunks; openings are for one partial of
`members` members, each value run at most `chunk` bytes (the last chunk may be shorter).
"""

from __future__ import annotations

import math
import struct

import torch

from tessera.compute.aggregation_tree import ChunkOpening, Commitment
from tessera.compute.diloco import MAX_WORKERS
from tessera.errors import WireFormatError

COMMITMENT_MAGIC = b"TSRC"
OPENINGS_MAGIC = b"TSRO"
_U32 = struct.Struct("<I")


def commitment_to_bytes(c: Commitment) -> bytes:
    scales = c.scales.to(torch.float32).contiguous().numpy().tobytes()
    return b"".join([COMMITMENT_MAGIC, _U32.pack(c.members), _U32.pack(c.scales.numel()),
                     c.value_root, scales])


def commitment_from_bytes(data: bytes, chunks: int) -> Commitment:
    """A commitment for payloads of `chunks` chunks."""
    head = 4 + 4 + 4 + 32
    if len(data) < head or data[:4] != COMMITMENT_MAGIC:
        raise WireFormatError("not a tree commitment (bad magic or too short)")
    (members,), (count,) = _U32.unpack_from(data, 4), _U32.unpack_from(data, 8)
    if not 1 <= members <= MAX_WORKERS:
        raise WireFormatError(f"a commitment's member count must be 1 to {MAX_WORKERS}, not {members}")
    if count != chunks or len(data) != head + 4 * chunks:
        raise WireFormatError(f"a commitment for this job holds {chunks} scales "
                              f"({head + 4 * chunks} bytes), got {count} in {len(data)} bytes")
    scales = torch.frombuffer(bytearray(data[head:]), dtype=torch.float32)
    if not torch.isfinite(scales).all() or (scales < 0).any():
        raise WireFormatError("a commitment's scales must be finite and >= 0")
    return Commitment(members, scales, bytes(data[12:head]))


def openings_to_bytes(openings: dict[int, list[ChunkOpening]]) -> bytes:
    rows = list(openings.items())
    members = len(rows[0][1]) if rows else 0
    length = len(rows[0][1][0].path) if rows and members else 0
    out = [OPENINGS_MAGIC, _U32.pack(len(rows)), _U32.pack(members), _U32.pack(length)]
    for index, shown in rows:
        if len(shown) != members or any(len(o.path) != length for o in shown):
            raise ValueError("every sampled chunk needs one opening per member, paths alike")
        out.append(_U32.pack(index))
        for o in shown:
            out += [_U32.pack(len(o.values)), o.values, *o.path]
    return b"".join(out)


def openings_from_bytes(data: bytes, chunks: int, chunk: int,
                        members: int) -> dict[int, list[ChunkOpening]]:
    """An aggregator's openings for a partial of `members` members over payloads of `chunks`
    chunks of at most `chunk` values; the paths must be as long as such a tree is deep."""
    if len(data) < 16 or data[:4] != OPENINGS_MAGIC:
        raise WireFormatError("not tree openings (bad magic or too short)")
    samples, shown, length = (_U32.unpack_from(data, k)[0] for k in (4, 8, 12))
    depth = math.ceil(math.log2(max(1, chunks)))
    if samples > chunks or shown != members or length != depth:
        raise WireFormatError(f"openings must hold at most {chunks} chunks of {members} members "
                              f"with paths of {depth} hashes; got {samples} of {shown} with {length}")
    out: dict[int, list[ChunkOpening]] = {}
    pos = 16
    for _ in range(samples):
        if pos + 4 > len(data):
            raise WireFormatError("openings truncated")
        (index,) = _U32.unpack_from(data, pos)
        pos += 4
        if index >= chunks or index in out:
            raise WireFormatError(f"bad or repeated chunk index {index} (the payloads have {chunks})")
        row = []
        for _ in range(members):
            if pos + 4 > len(data):
                raise WireFormatError("openings truncated")
            (n,) = _U32.unpack_from(data, pos)
            end = pos + 4 + n + 32 * length
            if n > chunk or end > len(data):
                raise WireFormatError(f"an opening of chunk {index} claims {n} values (at most "
                                      f"{chunk}) or runs past the end")
            values = bytes(data[pos + 4:pos + 4 + n])
            path = tuple(bytes(data[k:k + 32]) for k in range(pos + 4 + n, end, 32))
            row.append(ChunkOpening(values, path))
            pos = end
        out[index] = row
    if pos != len(data):
        raise WireFormatError(f"{len(data) - pos} trailing bytes after the openings")
    return out
