"""gpt-oss snapshot -> GGUF: plan every tensor's type and size, then stream them into an atomic file."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from converters import __version__
from converters.data_writer import Chunk, Copy, Progress, interleave, split, write_pieces
from converters.disk import free_bytes
from converters.errors import OutputError
from converters.ggml_kernels import bf16_to_f32, quantize_rows
from converters.gguf_meta import FastGGUFWriter, write_metadata
from converters.mxfp4 import Scratch, repack_rows
from converters.recipes import Recipe, get_recipe
from converters.snapshot import Snapshot
from converters.tensor_map import EVEN, MXFP4, ODD, OutSpec, output_specs
from converters.tokenizer import Vocab, load_vocab

if TYPE_CHECKING:
    from converters.sizing import SizedTensor  # sizing imports this module

CHUNK_ELEMENTS = 1 << 23                         # rows are converted in chunks of about 8M elements
BF16_F16_OVERFLOW = 0x4780                       # |bf16 bits| >= this is >= 65536: beyond F16's max 65504
DISK_MARGIN = 256 * 1024 * 1024
_SCRATCH = threading.local()                     # each writer thread's Scratch: a chunk is made and written there


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: its GGUF name, class, type, element shape (numpy order) and byte size."""

    name: str
    cls: str
    qtype: T
    shape: tuple[int, ...]
    nbytes: int
    spec: OutSpec
    note: str = ""


@dataclass
class ConvertResult:
    """What a conversion wrote."""

    path: Path
    recipe: str
    tensors: list[PlannedTensor] | list[SizedTensor]  # SizedTensor: written through llama.cpp's quantizer
    bytes_written: int
    input_bytes: int
    seconds: float
    kept_f32: list[str] = field(default_factory=list)


def tensor_nbytes(qtype: T, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of this GGML type and element shape (last axis is the row)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    if shape and shape[-1] % block:
        raise ValueError(f"row length {shape[-1]} is not a multiple of {block} for {qtype.name}")
    return n // block * size


def _source_shape(snap: Snapshot, spec: OutSpec) -> tuple[int, ...]:
    if spec.kind == MXFP4:
        e, rows, nb, _ = snap.entry(spec.source + "_blocks").shape
        rows = len(range(rows)[spec.rows]) if spec.rows else rows
        return (e, rows, nb * 32)
    shape = snap.entry(spec.source).shape
    if spec.rows:
        shape = shape[:1] + (len(range(shape[1])[spec.rows]),) + shape[2:]
    return shape


def _row_chunks(snap: Snapshot, name: str, elements: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, int]]:
    """(start, count) row ranges of a source tensor, each about `elements` values."""
    shape = snap.entry(name).shape
    rows = shape[0] if shape else 1
    step = max(1, elements // max(1, int(np.prod(shape[1:]))))
    return ((s, min(step, rows - s)) for s in range(0, rows, step))


def _fits_f16(snap: Snapshot, spec: OutSpec) -> bool:
    def chunk_fits(rows: tuple[int, int]) -> bool:
        return int(np.max(snap.read_rows(spec.source, *rows) & 0x7FFF)) < BF16_F16_OVERFLOW

    with ThreadPoolExecutor(max_workers=_default_workers()) as pool:
        return all(pool.map(chunk_fits, _row_chunks(snap, spec.source)))


class F16Overflow(Exception):
    """A tensor planned as F16 holds values beyond F16's range (raised while writing, then re-planned)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def plan_tensors(snap: Snapshot, recipe: Recipe, keep_f32: set[str] | None = None) -> list[PlannedTensor]:
    """The type, shape and size of every output tensor; the writer and size estimates share it.

    keep_f32 names the F16 tensors that must stay F32; None scans the data to find them (exact, for
    estimates), while the writer starts from an empty set and learns them as it goes.
    """
    planned = []
    for spec in output_specs(snap.hparams.layers):
        qtype, note = recipe.type_for(spec.cls), ""
        if spec.kind == MXFP4 and qtype != T.MXFP4:
            raise NotImplementedError("re-quantizing experts needs llama.cpp's quantizer")
        if qtype == T.F16 and (spec.gguf in keep_f32 if keep_f32 is not None else not _fits_f16(snap, spec)):
            qtype, note = T.F32, "values exceed F16 range; kept F32"
        shape = _source_shape(snap, spec)
        planned.append(PlannedTensor(spec.gguf, spec.cls, qtype, shape, tensor_nbytes(qtype, shape), spec, note))
    return planned


def _float_chunk(bits: np.ndarray, qtype: T, name: str) -> np.ndarray:
    if qtype == T.BF16:
        return np.ascontiguousarray(bits)
    if qtype == T.F16 and bits.size and int(np.max(bits & 0x7FFF)) >= BF16_F16_OVERFLOW:
        raise F16Overflow(name)
    values = bf16_to_f32(bits)
    if qtype == T.F32 or values.ndim < 2:
        return values if qtype == T.F32 else gguf.quants.quantize(values, qtype)
    return quantize_rows(values, qtype)


def _chunks(snap: Snapshot, t: PlannedTensor, offset: int, pair: tuple[PlannedTensor, int] | None = None
            ) -> Iterator[Chunk]:
    """The tensor's bytes as chunks at their file offsets; each reads and converts one bounded slice.

    pair: the MXFP4 tensor (and its offset) made of the other rows of the same source, written by the same
    chunks so that each expert's source bytes are read once."""
    spec = t.spec
    rows = spec.rows or slice(None)
    if spec.kind == MXFP4:
        blocks, scales = spec.source + "_blocks", spec.source + "_scales"
        experts = snap.entry(blocks).shape[0]
        size = t.nbytes // experts
        selections = (rows,) if pair is None else (rows, pair[0].spec.rows)
        for e in range(experts):
            yield Chunk(t.name, offset + e * size, len(selections) * size,
                        functools.partial(_expert_chunk, snap, blocks, scales, e, selections),
                        -1 if pair is None else pair[1] + e * size)
        return
    for start, count in _row_chunks(snap, spec.source):
        nbytes = tensor_nbytes(t.qtype, (count, *t.shape[1:]))
        yield Chunk(t.name, offset, nbytes, functools.partial(_rows_chunk, snap, t, start, count))
        offset += nbytes


def _row_bytes(snap: Snapshot, name: str) -> int:
    return snap.entry(name).nbytes // snap.entry(name).shape[0]


def _scratch() -> Scratch:
    if not hasattr(_SCRATCH, "value"):
        _SCRATCH.value = Scratch()
    return _SCRATCH.value


def _expert_chunk(snap: Snapshot, blocks: str, scales: str, expert: int, selections: tuple
                  ) -> np.ndarray | tuple[np.ndarray, ...]:
    """One expert's MXFP4 blocks and scales, repacked to GGML's layout: one array per row selection."""
    scratch = _scratch()
    b = snap.read_rows(blocks, expert, 1, scratch.get("blocks", (_row_bytes(snap, blocks),), np.uint8))[0]
    s = snap.read_rows(scales, expert, 1, scratch.get("scales", (_row_bytes(snap, scales),), np.uint8))[0]
    out = tuple(repack_rows(b, s, rows, scratch, f"out{i}") for i, rows in enumerate(selections))
    return out if len(out) > 1 else out[0]


def _rows_chunk(snap: Snapshot, t: PlannedTensor, start: int, count: int) -> np.ndarray:
    """Rows [start, start+count) of a float tensor, converted to its planned type."""
    bits = snap.read_rows(t.spec.source, start, count)
    return _float_chunk(bits[:, t.spec.rows] if t.spec.rows else bits, t.qtype, t.name)


def check_output(out_path: Path, need: int, force: bool, what: str = "the output") -> None:
    """Refuse an existing output without force, an unwritable folder, or too little disk for need bytes."""
    folder = out_path.parent
    if out_path.exists() and not force:
        raise OutputError(out_path, "already exists", "Pass --force to overwrite it, or choose -o")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the folder ({exc.strerror})") from exc
    if not os.access(folder, os.W_OK):
        raise OutputError(folder, "folder is not writable", "Choose another place with -o")
    free = free_bytes(folder)
    if free < need + DISK_MARGIN:
        raise OutputError(folder, f"not enough disk space: need {need / 1e9:.2f} GB for {what} (+ margin), "
                                  f"{free / 1e9:.2f} GB free", "Free some space or choose -o elsewhere")


def convert_checkpoint(snapshot_dir: Path, out_path: Path, recipe: str = "mxfp4", force: bool = False,
                       progress: Progress | None = None, workers: int | None = None) -> ConvertResult:
    """Convert a gpt-oss snapshot folder to a GGUF at out_path with the named recipe."""
    started = time.perf_counter()
    rec = get_recipe(recipe)
    snap = Snapshot(Path(snapshot_dir))
    try:
        vocab = load_vocab(snap.folder, snap.hparams.vocab_size, snap.config)
        keep_f32: set[str] = set()
        out_path = Path(out_path)
        partial = out_path.with_name(out_path.name + ".partial")
        while True:
            planned = plan_tensors(snap, rec, keep_f32)
            check_output(out_path, sum(t.nbytes for t in planned), force)
            try:
                _write(snap, rec, vocab, planned, partial, progress, workers)
                os.replace(partial, out_path)
                break
            except F16Overflow as over:  # rare: start again with that tensor kept F32
                partial.unlink(missing_ok=True)
                keep_f32.add(over.name)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return ConvertResult(out_path, rec.name, planned, out_path.stat().st_size, snap.input_bytes(),
                             time.perf_counter() - started, [t.name for t in planned if t.note])
    finally:
        snap.close()


def _is_raw_copy(snap: Snapshot, t: PlannedTensor) -> bool:
    """True when the output bytes are exactly the source bytes (bf16 -> BF16, whole tensor)."""
    return t.spec.kind != MXFP4 and t.qtype == T.BF16 and not t.spec.rows \
        and snap.entry(t.spec.source).dtype == "BF16"


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def write_header(path: Path, snap: Snapshot, vocab: Vocab, rec: Recipe,
                 planned: list[PlannedTensor]) -> FastGGUFWriter:
    """Write a GGUF's header, key/values and tensor infos to path; returns the open writer for the data."""
    writer = FastGGUFWriter(path, arch="gpt-oss")
    repo, revision = snap.source
    write_metadata(writer, snap.hparams, vocab, rec, repo=repo, revision=revision, version=__version__)
    for t in planned:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    return writer


def _write(snap: Snapshot, rec: Recipe, vocab: Vocab, planned: list[PlannedTensor], partial: Path,
           progress: Progress | None, workers: int | None) -> None:
    writer = write_header(partial, snap, vocab, rec, planned)
    assert writer.fout is not None  # write_header opened the file
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    fout.flush()
    offset = fout.tell()
    copies: list[Copy] = []
    converted: list[tuple[PlannedTensor, int]] = []
    for t in planned:
        if _is_raw_copy(snap, t):
            copies += split(Copy(t.name, offset, t.nbytes, *snap.locate(t.spec.source)))
        else:
            converted.append((t, offset))
        offset += gguf.GGUFWriter.ggml_pad(t.nbytes, writer.data_alignment)
    chunks = (chunk for t, start, pair in _paired(converted) for chunk in _chunks(snap, t, start, pair))
    pieces = interleave(copies, chunks, sum(t.nbytes for t, _ in converted))
    try:
        write_pieces(fout.fileno(), offset, pieces, workers=workers or _default_workers(),
                     progress=progress, total=sum(t.nbytes for t in planned))
    finally:
        writer.close()  # the rename that follows is what makes the file visible under its name


def _paired(converted: list[tuple[PlannedTensor, int]]
            ) -> Iterator[tuple[PlannedTensor, int, tuple[PlannedTensor, int] | None]]:
    """Each converted tensor with its offset; an MXFP4 gate (even rows) takes its up tensor (odd rows of the same
    source) along as its pair, and the up tensor is then not listed on its own."""
    odd = {t.spec.source: (t, start) for t, start in converted if t.spec.kind == MXFP4 and t.spec.rows == ODD}
    evens = {t.spec.source for t, _ in converted if t.spec.kind == MXFP4 and t.spec.rows == EVEN}
    for t, start in converted:
        if t.spec.kind == MXFP4 and t.spec.rows == EVEN and t.spec.source in odd:
            yield t, start, odd[t.spec.source]
        elif not (t.spec.kind == MXFP4 and t.spec.rows == ODD and t.spec.source in evens):
            yield t, start, None
