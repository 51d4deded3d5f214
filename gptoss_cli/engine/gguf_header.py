"""A small GGUF header reader: metadata and tensor infos, without touching tensor data.

gguf-py's `GGUFReader` parses every array item in Python (seconds on the 201k-token vocabulary); this
reader skips arrays it does not keep, and `read_metadata` stops at the last key it was asked for.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

from converters.errors import BadInputError

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


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


class _Cursor:
    def __init__(self, buf, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc) -> None:
        self.buf.close()

    def unpack(self, fmt: str):
        try:
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error:
            raise BadInputError(self.path, "truncated GGUF header", "Re-create the file") from None
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.unpack("<Q")
        s = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return s.decode("utf-8", "replace")

    def value(self, vtype: int, keep: bool = True):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if keep:
                return [self.value(etype) for _ in range(count)]
            self.skip_items(etype, count)
            return None
        raise BadInputError(self.path, f"unknown GGUF value type {vtype}", "Re-create the file")

    def skip_array(self) -> int:
        """Step over an array value (after its type); its item count."""
        etype, count = self.unpack("<I"), self.unpack("<Q")
        self.skip_items(etype, count)
        return count

    def skip_items(self, etype: int, count: int) -> None:
        if etype in _SCALAR:
            self.pos += count * struct.calcsize(_SCALAR[etype])
        elif etype == _STRING:  # only the length prefixes are read: 201k tokens take milliseconds
            unpack, buf, pos = struct.unpack_from, self.buf, self.pos
            for _ in range(count):
                pos += 8 + unpack("<Q", buf, pos)[0]
            self.pos = pos
        else:
            for _ in range(count):
                self.value(etype, keep=False)


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
    version = cur.unpack("<I")
    if version < 2:
        buf.close()
        raise BadInputError(path, f"GGUF version {version} is too old", "Re-create the file")
    return cur


def read_architecture(path: Path) -> str | None:
    """general.architecture of a GGUF file, reading only as far as that key."""
    return read_metadata(path, {"general.architecture"}).get("general.architecture")


def read_metadata(path: Path, keys: set[str]) -> dict:
    """The given scalar metadata keys of a GGUF file, reading only until all are found."""
    found = {}
    with _open_gguf(path) as cur:
        cur.pos += 8  # tensor count
        for _ in range(cur.unpack("<Q")):
            key, vtype = cur.string(), cur.unpack("<I")
            value = cur.value(vtype, keep=key in keys)
            if key in keys:
                found[key] = value
                if len(found) == len(keys):
                    break
    return found


def read_header(path: Path) -> GGUFHeader:
    """All metadata but array items, and the name, shape, type and byte size of every tensor."""
    with _open_gguf(path) as cur:
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        meta, lengths = {}, {}
        for _ in range(n_kv):
            key, vtype = cur.string(), cur.unpack("<I")
            if vtype == _ARRAY:
                lengths[key] = cur.skip_array()
            else:
                meta[key] = cur.value(vtype)
        tensors = [_tensor_info(cur) for _ in range(n_tensors)]
    return GGUFHeader(meta, lengths, tensors)


def _tensor_info(cur: _Cursor) -> TensorInfo:
    name = cur.string()
    dims = tuple(cur.unpack("<Q") for _ in range(cur.unpack("<I")))
    ttype = cur.unpack("<I")
    cur.unpack("<Q")  # data offset
    try:
        qtype = gguf.GGMLQuantizationType(ttype)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise BadInputError(cur.path, f"tensor {name} has unknown type {ttype}", "Re-create the file") from None
    n = 1
    for d in dims:
        n *= d
    return TensorInfo(name, dims, qtype, n // block * size)


def read_gguf_header(path: Path) -> tuple[dict, list[tuple[str, tuple[int, ...], int]]]:
    """Scalar metadata and (name, shape, bytes) of every tensor; arrays are skipped."""
    header = read_header(path)
    return header.metadata, [(t.name, t.shape, t.n_bytes) for t in header.tensors]
