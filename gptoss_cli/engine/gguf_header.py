"""A small GGUF header reader: metadata and tensor infos, without touching tensor data.

gguf-py's `GGUFReader` parses every array item in Python (seconds on the 201k-token vocabulary); this
reader skips arrays it does not keep, and `read_metadata` stops at the last key it was asked for.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import gguf

from converters.errors import BadInputError
from converters.gguf_layout import ARRAY, Cursor


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    name: str
    shape: tuple[int, ...]
    type: gguf.GGMLQuantizationType
    n_bytes: int


@dataclass
class GGUFHeader:
    """Scalar and string metadata, the item count of each array, and every tensor's info."""

    metadata: dict
    array_lengths: dict[str, int]
    tensors: list[TensorInfo]


class _Cursor(Cursor):
    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc) -> None:
        self.buf.close()


def _open_gguf(path: Path) -> _Cursor:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                raise BadInputError(path, "not a GGUF file (too short)", "Pass a .gguf written by `gptoss quantize`")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise BadInputError(path, f"cannot read it: {exc.strerror or exc}") from None
    cur = _Cursor(buf, path)
    if bytes(buf[:4]) != b"GGUF":
        buf.close()
        raise BadInputError(path, "not a GGUF file (bad magic)", "Pass a .gguf written by `gptoss quantize`")
    cur.pos = 4
    version = cur.u("<I")
    if version < 2:
        buf.close()
        raise BadInputError(path, f"GGUF version {version} is too old", "Re-create the file")
    return cur


def read_metadata(path: Path, keys: set[str]) -> dict:
    """The given scalar metadata keys of a GGUF file, reading only until all are found."""
    found = {}
    with _open_gguf(path) as cur:
        cur.pos += 8  # tensor count
        for _ in range(cur.u("<Q")):
            key, vtype = cur.string(), cur.u("<I")
            if key not in keys:
                cur.skip(vtype)
                continue
            found[key] = cur.value(vtype)
            if len(found) == len(keys):
                break
    return found


def read_header(path: Path) -> GGUFHeader:
    """All metadata but array items, and the name, shape, type and byte size of every tensor."""
    with _open_gguf(path) as cur:
        n_tensors, n_kv = cur.u("<Q"), cur.u("<Q")
        meta, lengths = {}, {}
        for _ in range(n_kv):
            key, vtype = cur.string(), cur.u("<I")
            if vtype == ARRAY:
                lengths[key] = cur.skip_array()
            else:
                meta[key] = cur.value(vtype)
        tensors = [_tensor_info(cur) for _ in range(n_tensors)]
    return GGUFHeader(meta, lengths, tensors)


def _tensor_info(cur: _Cursor) -> TensorInfo:
    name = cur.string()
    dims = tuple(cur.u("<Q") for _ in range(cur.u("<I")))
    ttype = cur.u("<I")
    cur.u("<Q")  # data offset
    try:
        qtype = gguf.GGMLQuantizationType(ttype)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise BadInputError(cur.path, f"tensor {name} has unknown type {ttype}", "Re-create the file") from None
    n = 1
    for d in dims:
        n *= d
    return TensorInfo(name, dims, qtype, n // block * size)
