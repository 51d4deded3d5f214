"""Importance matrices: the graph callback that collects them (run by `gptoss imatrix`), llama.cpp's file formats.

Collection follows llama-imatrix (tools/imatrix): a graph callback sees every matrix multiplication by a
`blk.*` weight and adds the squared input activations per column (per expert for MUL_MAT_ID, counting the
tokens routed to each). Files are llama-imatrix's GGUF format (`<tensor>.in_sum2`, `<tensor>.counts`,
imatrix.* keys), so `llama-quantize --imatrix` reads ours; its legacy .dat format is read too.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.errors import BadInputError

KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE = "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"
MIN_TOKENS = 16          # llama-imatrix ignores smaller dense multiplications


@dataclass
class Stats:
    """Raw sums of squared activations (n_mat x n_cols per tensor) and token counts (n_mat)."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def add(self, name: str, n_mat: int, ncols: int, sq: np.ndarray, counts: np.ndarray) -> None:
        """Accumulate per-matrix squared sums [n_mat, ncols] and counts [n_mat]."""
        if name not in self.sums:
            self.sums[name] = np.zeros((n_mat, ncols), np.float64)
            self.counts[name] = np.zeros(n_mat, np.int64)
        self.sums[name] += sq
        self.counts[name] += counts

    def normalized(self) -> dict[str, np.ndarray]:
        """What llama.cpp's quantizer takes: sums / counts per matrix (1 where a matrix saw no token), flat."""
        out = {}
        for name, sums in self.sums.items():
            counts = self.counts[name].astype(np.float64)[:, None]
            values = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
            out[name] = values.astype(np.float32).reshape(-1)
        return out


def write_imatrix(stats: Stats, path: Path) -> None:
    """Write stats in llama-imatrix's GGUF format (atomic: <path>.partial, then rename)."""
    import gguf

    partial = path.with_name(path.name + ".partial")
    try:
        w = gguf.GGUFWriter(partial, arch="imatrix")
        w.add_type("imatrix")
        w.add_array(KEY_DATASETS, stats.datasets or [""])
        w.add_uint32(KEY_CHUNK_COUNT, stats.chunk_count)
        w.add_uint32(KEY_CHUNK_SIZE, stats.chunk_size)
        for name in sorted(stats.sums):
            w.add_tensor(f"{name}.in_sum2", stats.sums[name].astype(np.float32))
            w.add_tensor(f"{name}.counts", stats.counts[name].astype(np.float32)[:, None])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def load_imatrix(path: Path) -> Stats:
    """Read an imatrix file (GGUF or legacy .dat); BadInputError if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "imatrix file not found", "Make one with `gptoss imatrix MODEL --text FILE`")
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        return _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    except (ValueError, KeyError, IndexError, struct.error) as exc:
        raise BadInputError(path, f"not a readable imatrix file ({exc})",
                            "Pass a file written by `gptoss imatrix` or llama-imatrix") from None


def _load_gguf(path: Path) -> Stats:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    stats = Stats()
    field_ = reader.get_field(KEY_DATASETS)
    stats.datasets = list(field_.contents()) if field_ is not None else []
    for key, attr in ((KEY_CHUNK_COUNT, "chunk_count"), (KEY_CHUNK_SIZE, "chunk_size")):
        f = reader.get_field(key)
        setattr(stats, attr, int(f.contents()) if f is not None else 0)
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    for name, data in tensors.items():
        if name.endswith(".in_sum2"):
            base = name[: -len(".in_sum2")]
            counts = tensors[base + ".counts"].reshape(-1)
            stats.sums[base] = data.reshape(len(counts), -1).astype(np.float64)
            stats.counts[base] = np.rint(counts).astype(np.int64)
    if not stats.sums:
        raise ValueError("no <tensor>.in_sum2 entries")
    return stats


def _load_legacy(path: Path) -> Stats:
    """llama-imatrix's .dat: per entry name, ncall and sums already divided by count and times ncall."""
    buf, off, stats = path.read_bytes(), 0, Stats()

    def take(fmt: str):
        nonlocal off
        vals = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return vals

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise ValueError("no entries")
    for _ in range(n_entries):
        (length,) = take("<i")
        name = buf[off:off + length].decode()
        off += length
        ncall, nval = take("<ii")
        values = np.frombuffer(buf, np.float32, nval, off).astype(np.float64)
        off += 4 * nval
        # Same normalisation as llama-quantize: divide by ncall; store as sums with count 1.
        stats.sums[name] = (values / ncall if ncall > 0 else values)[None, :]
        stats.counts[name] = np.ones(1, np.int64)
    return stats


class _GGMLTensor(ctypes.Structure):
    """struct ggml_tensor of ggml.h (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10, GGML_MAX_NAME 64)."""

    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def _ggml_base():
    import llama_cpp
    import llama_cpp._ctypes_extensions as ext

    lib = ext.load_shared_library("ggml-base", Path(llama_cpp.__file__).parent / "lib")
    lib.ggml_op_name.argtypes, lib.ggml_op_name.restype = [ctypes.c_int], ctypes.c_char_p
    lib.ggml_nbytes.argtypes, lib.ggml_nbytes.restype = [ctypes.c_void_p], ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    return lib


class Collector:
    """The graph callback: squared activations of every blk.* matrix multiplication."""

    def __init__(self, stats: Stats) -> None:
        self.stats, self.lib = stats, _ggml_base()
        self.error: Exception | None = None
        self.ops: dict[int, str] = {}

    def op(self, t: _GGMLTensor) -> str:
        if t.op not in self.ops:
            self.ops[t.op] = self.lib.ggml_op_name(t.op).decode()
        return self.ops[t.op]

    def __call__(self, ptr, ask, user_data) -> bool:
        try:
            t = _GGMLTensor.from_address(ptr)
            op = self.op(t)
            if op not in ("MUL_MAT", "MUL_MAT_ID"):
                return False
            src0, src1 = _GGMLTensor.from_address(t.src[0]), _GGMLTensor.from_address(t.src[1])
            name = _weight_name(src0.name.decode(errors="replace"))
            if ask:
                return op == "MUL_MAT_ID" or (src1.ne[1] >= MIN_TOKENS and src1.type == 0 and name.startswith("blk."))
            if op == "MUL_MAT_ID":
                self._mul_mat_id(name, src0, t.src[1], src1, t.src[2])
            else:
                self._mul_mat(name, src0, t.src[1], src1)
        except Exception as exc:  # noqa: BLE001 - an exception must not cross into C; reported after decode
            self.error = exc
        return True

    def _read(self, ptr, t: _GGMLTensor) -> bytes:
        n = self.lib.ggml_nbytes(ptr)
        buf = ctypes.create_string_buffer(n)
        self.lib.ggml_backend_tensor_get(ptr, buf, 0, n)
        return buf.raw

    def _mul_mat_id(self, name, src0, p1, src1, p_ids) -> None:
        ids_t = _GGMLTensor.from_address(p_ids)
        ids = np.frombuffer(self._read(p_ids, ids_t), np.int32)
        x = np.frombuffer(self._read(p1, src1), np.float32)
        n_as, ncols, n_ids, n_tok = src0.ne[2], src1.ne[0], ids_t.ne[0], src1.ne[2]
        rows, idx = np.meshgrid(np.arange(n_tok), np.arange(n_ids), indexing="ij")
        ex = ids[(rows * ids_t.nb[1] + idx * ids_t.nb[0]) // 4].reshape(-1)
        start = ((idx % src1.ne[1]) * src1.nb[1] + rows * src1.nb[2]) // 4
        vals = x[start.reshape(-1, 1) + np.arange(ncols)].astype(np.float64)
        sq = np.zeros((n_as, ncols))
        np.add.at(sq, ex, vals * vals)
        self.stats.add(name, n_as, ncols, sq, np.bincount(ex, minlength=n_as))

    def _mul_mat(self, name, src0, p1, src1) -> None:
        x = np.frombuffer(self._read(p1, src1), np.float32)
        n_mat = src0.ne[2] * src0.ne[3]
        ne, nb = list(src1.ne), [s // 4 for s in src1.nb]
        view = np.lib.stride_tricks.as_strided(x, shape=(ne[3], ne[2], ne[1], ne[0]),
                                               strides=[4 * s for s in (nb[3], nb[2], nb[1], nb[0])])
        sq = (view.astype(np.float64) ** 2).sum(axis=2)            # [ne3, ne2, ncols]
        mats = np.zeros((n_mat, ne[0]))
        for i3 in range(ne[3]):
            for i2 in range(ne[2]):
                mats[(i3 % src0.ne[3]) * src0.ne[2] + (i2 % src0.ne[2])] += sq[i3, i2]
        rows = ne[1] * ne[2] * ne[3]
        self.stats.add(name, n_mat, ne[0], mats, np.full(n_mat, rows // n_mat))


def _weight_name(name: str) -> str:
    """llama-imatrix's filter: a backend copy is named like 'CPU#blk.0.attn_q.weight#0'."""
    if "#" in name:
        return name.split("#")[1]
    return name
