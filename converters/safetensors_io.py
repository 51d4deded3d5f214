"""Strict, lazy safetensors reading: headers validated before any data is touched; data via mmap."""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from itertools import pairwise
from math import prod
from pathlib import Path

import numpy as np

from converters.errors import InvalidCheckpoint

# safetensors dtype tag -> (numpy dtype used to view the bytes, bytes per element).
# BF16 is viewed as uint16: its bits are the top half of a float32.
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "BF16": (np.dtype("<u2"), 2),
    "F16": (np.dtype("<f2"), 2),
    "F32": (np.dtype("<f4"), 4),
    "F64": (np.dtype("<f8"), 8),
    "U8": (np.dtype("u1"), 1),
    "I8": (np.dtype("i1"), 1),
    "I16": (np.dtype("<i2"), 2),
    "I32": (np.dtype("<i4"), 4),
    "I64": (np.dtype("<i8"), 8),
    "BOOL": (np.dtype("u1"), 1),
}
HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header record: dtype tag, shape, and absolute byte range in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Byte length of the tensor's data."""
        return self.end - self.start


class SafetensorsFile:
    """A validated safetensors file; tensors are read lazily through a read-only mmap."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries, self.metadata = parse_header(self.path)
        self._mmap: mmap.mmap | None = None
        self._fd: int | None = None

    def _map(self) -> mmap.mmap:
        if self._mmap is None:
            with open(self.path, "rb") as fh:
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mmap

    def array(self, name: str) -> np.ndarray:
        """The tensor as a read-only numpy view of the mapped file (no copy; pages stay resident)."""
        entry = self.entries[name]
        dtype, _ = DTYPES[entry.dtype]
        data = np.frombuffer(self._map(), dtype=dtype, count=prod(entry.shape), offset=entry.start)
        return data.reshape(entry.shape)

    def read_rows(self, name: str, start: int = 0, count: int | None = None,
                  buffer: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, start+count) of the tensor's first axis, read into a fresh array (bounded memory), or into
        the front of buffer (uint8, large enough), which the result then views."""
        entry = self.entries[name]
        dtype, size = DTYPES[entry.dtype]
        rows = entry.shape[0] if entry.shape else 1
        count = rows - start if count is None else min(count, rows - start)
        inner = entry.shape[1:] if entry.shape else ()
        row_bytes = prod(inner) * size
        shape = (count, *inner) if entry.shape else ()
        out = np.empty(shape, dtype=dtype) if buffer is None \
            else buffer[:prod(shape) * size].view(dtype).reshape(shape)
        fd = self._open()
        view = out.reshape(-1).view(np.uint8).data
        offset, done = entry.start + start * row_bytes, 0
        while done < view.nbytes:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise _fail(self.path, f"tensor {name!r}: file ended early; it is truncated")
            done += n
        return out

    def locate(self, name: str) -> tuple[int, int, Path]:
        """An open descriptor of this file, the offset of the tensor's first byte in it, and the file's path."""
        return self._open(), self.entries[name].start, self.path

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        """Release the mapping and file handle (views taken from the mapping must be dropped first)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a numpy view is still alive; the OS unmaps when it is collected
            self._mmap = None


def _fail(path: Path, why: str) -> InvalidCheckpoint:
    return InvalidCheckpoint(path, why, "Re-download the file (gptoss pull) or check the folder")


def parse_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Read and validate a safetensors header; raise InvalidCheckpoint naming the file on any problem."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(HEADER_LEN_BYTES)
            if len(head) < HEADER_LEN_BYTES:
                raise _fail(path, f"file is {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or HEADER_LEN_BYTES + n > size:
                raise _fail(path, f"header length {n} runs past the end of the file ({size} bytes); "
                                  "the file is truncated or not safetensors")
            raw = fh.read(n)
    except OSError as exc:
        raise InvalidCheckpoint(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(path, f"header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    base = HEADER_LEN_BYTES + n
    entries = {name: _entry(path, name, rec, base, size) for name, rec in header.items()}
    _check_overlaps(path, entries)
    return entries, metadata


def _entry(path: Path, name: str, rec: object, base: int, size: int) -> TensorEntry:
    if not isinstance(rec, dict) or not {"dtype", "shape", "data_offsets"} <= rec.keys():
        raise _fail(path, f"tensor {name!r}: header entry needs dtype, shape and data_offsets")
    dtype, shape, offsets = rec["dtype"], rec["shape"], rec["data_offsets"]
    if dtype not in DTYPES:
        raise _fail(path, f"tensor {name!r}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _fail(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise _fail(path, f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end or base + end > size:
        raise _fail(path, f"tensor {name!r}: data_offsets [{begin}, {end}] out of range "
                          f"(data section is {size - base} bytes); the file may be truncated")
    expected = prod(shape) * DTYPES[dtype][1]
    if end - begin != expected:
        raise _fail(path, f"tensor {name!r}: {dtype} {shape} needs {expected} bytes "
                          f"but data_offsets span {end - begin}")
    return TensorEntry(name, dtype, tuple(shape), base + begin, base + end)


def _check_overlaps(path: Path, entries: dict[str, TensorEntry]) -> None:
    ordered = sorted((e for e in entries.values() if e.nbytes), key=lambda e: e.start)
    for prev, cur in pairwise(ordered):
        if cur.start < prev.end:
            raise _fail(path, f"tensors {prev.name!r} and {cur.name!r} overlap in the data section")
