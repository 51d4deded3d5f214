"""A GGUF's layout without its data: raw key/value entries, a few values, tensor infos and offsets; and a
header writer. gguf-py's GGUFReader parses every array item in Python (seconds on the 201k-token vocabulary);
this reader steps over arrays, keeping each entry's raw bytes so a writer can copy them unchanged."""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

from converters.errors import BadInputError

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY, UINT32, INT32, UINT64 = 8, 9, 4, 5, 10


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of the source file: GGML dims (ne order), type, byte size and absolute file offset."""

    name: str
    dims: tuple[int, ...]
    qtype: int
    nbytes: int
    offset: int


@dataclass
class SourceLayout:
    """What the writer needs of a GGUF: raw key/value entries (key, bytes), a few values, tensor infos."""

    path: Path
    version: int
    entries: list[tuple[str, bytes]]
    values: dict
    tensors: list[SourceTensor]
    alignment: int

    @property
    def arch(self) -> str:
        return str(self.values.get("general.architecture", ""))

    def get(self, suffix: str, default=None):
        """The value of `<arch>.<suffix>`."""
        return self.values.get(f"{self.arch}.{suffix}", default)


class Cursor:
    """Reads GGUF values from a buffer at pos, naming the file in its errors."""

    def __init__(self, buf, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def u(self, fmt: str):
        """Unpack one struct value at pos and step past it."""
        try:
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error:
            raise BadInputError(self.path, "truncated GGUF header", "Re-create the file") from None
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        """A GGUF string (u64 length, UTF-8 bytes)."""
        n = self.u("<Q")
        s = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return s.decode("utf-8", "replace")

    def skip(self, vtype: int) -> None:
        """Step over one value of this type."""
        if vtype in _SCALAR:
            self.pos += _SCALAR[vtype]
        elif vtype == STRING:
            self.pos += 8 + self.u("<Q")
        elif vtype == ARRAY:
            self.skip_array()
        else:
            raise BadInputError(self.path, f"unknown GGUF value type {vtype}", "Re-create the file")

    def skip_array(self) -> int:
        """Step over an array value (after its type); its item count."""
        etype, count = self.u("<I"), self.u("<Q")
        if etype in _SCALAR:
            self.pos += count * _SCALAR[etype]
        elif etype == STRING:      # only the length prefixes are read: the vocabulary takes milliseconds
            pos, buf = self.pos, self.buf
            for _ in range(count):
                pos += 8 + struct.unpack_from("<Q", buf, pos)[0]
            self.pos = pos
        else:
            for _ in range(count):
                self.skip(etype)
        return count

    def value(self, vtype: int):
        """Read one value of this type (arrays item by item)."""
        if vtype in FMT:
            return self.u(FMT[vtype])
        if vtype == STRING:
            return self.string()
        etype, count = self.u("<I"), self.u("<Q")
        return [self.value(etype) for _ in range(count)]


def read_layout(path: Path, keep_arrays: frozenset[str] = frozenset()) -> SourceLayout:
    """Key/value entries as raw bytes, scalar and string values (arrays only when named in keep_arrays), and
    every tensor's info and file offset."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(Cursor(buf, path), path, os.fstat(f.fileno()).st_size, keep_arrays)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"cannot read it as GGUF ({exc})",
                            "Pass a .gguf written by `gptoss quantize`") from None


def _parse(r: Cursor, path: Path, size: int, keep_arrays: frozenset[str]) -> SourceLayout:
    if bytes(r.buf[:4]) != b"GGUF":
        raise BadInputError(path, "not a GGUF file (bad magic)", "Pass a .gguf written by `gptoss quantize`")
    r.pos = 4
    version, n_tensors, n_kv = r.u("<I"), r.u("<Q"), r.u("<Q")
    entries, values = [], {}
    for _ in range(n_kv):
        start = r.pos
        key = r.string()
        vtype = r.u("<I")
        if vtype != ARRAY or key in keep_arrays:
            values[key] = r.value(vtype)
        else:
            r.skip(vtype)
        entries.append((key, bytes(r.buf[start:r.pos])))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        dims = tuple(r.u("<Q") for _ in range(r.u("<I")))
        infos.append((name, dims, r.u("<I"), r.u("<Q")))
    alignment = int(values.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
    data = pad(r.pos, alignment)
    tensors = []
    for name, dims, qtype, offset in infos:
        try:
            block, tsize = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
        except (ValueError, KeyError):
            raise BadInputError(path, f"tensor {name} has unknown type {qtype}", "Re-create the file") from None
        n = 1
        for d in dims:
            n *= d
        t = SourceTensor(name, dims, qtype, n // block * tsize, data + offset)
        if t.offset + t.nbytes > size:
            raise BadInputError(path, f"tensor {name} ends past the end of the file; it is truncated",
                                "Re-create or re-download it")
        tensors.append(t)
    return SourceLayout(path, version, entries, values, tensors, alignment)


def pad(n: int, align: int) -> int:
    """n rounded up to align."""
    return (n + align - 1) // align * align


def kv_entry(key: str, vtype: int, payload: bytes) -> bytes:
    """One raw GGUF key/value entry: key string, value type, value bytes."""
    raw = key.encode()
    return struct.pack("<Q", len(raw)) + raw + struct.pack("<I", vtype) + payload


def kv_string(key: str, value: str) -> bytes:
    """A raw string key/value entry."""
    raw = value.encode()
    return kv_entry(key, STRING, struct.pack("<Q", len(raw)) + raw)


def build_header(entries: list[bytes], tensors: list[tuple[str, tuple[int, ...], int]], alignment: int) -> bytes:
    """A GGUF v3 header: raw key/value entries, then tensor infos at consecutive aligned offsets, padded."""
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(entries)), *entries]
    offset = 0
    for name, dims, qtype in tensors:
        raw = name.encode()
        parts.append(struct.pack("<Q", len(raw)) + raw + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, qtype,
                                                                       offset))
        offset += pad(tensor_bytes(dims, qtype), alignment)
    head = b"".join(parts)
    return head + b"\0" * (pad(len(head), alignment) - len(head))


def tensor_bytes(dims: tuple[int, ...], qtype: int) -> int:
    """Bytes of a tensor of these GGML dims and type."""
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
    n = 1
    for d in dims:
        n *= d
    return n // block * size
