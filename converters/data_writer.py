"""Fill a GGUF's data section at fixed offsets: copies of unchanged bytes and converted chunks at the same time.

Every piece knows its byte offset before any data moves (the tensor infos fix them), so pieces need no
ordering: one thread pool takes both kinds, copies of unchanged bytes from their source file and chunks
converted in memory, mixed in proportion to their bytes so that both cores stay busy to the end. Both go
through a Sink (converters/sink.py: whole pages with O_DIRECT, the rest buffered). Memory stays bounded by
the pieces in flight; padding between tensors is the zero-filled hole left by ftruncate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from converters.sink import Sink, worth_direct

Progress = Callable[[int, int, str], None]      # (bytes done now, total bytes, tensor name)
COPY_PIECE = 128 << 20                          # unchanged tensors are copied in pieces of this many bytes


@dataclass(frozen=True)
class Copy:
    """Unchanged bytes: nbytes of the file `source` (open as src_fd) from byte src, to the output at offset."""

    name: str
    offset: int
    nbytes: int
    src_fd: int
    src: int
    source: Path


@dataclass(frozen=True)
class Chunk:
    """Bytes computed in memory: make() returns them; they go to offset (a pair: the second array to offset2)."""

    name: str
    offset: int
    nbytes: int
    make: Callable[[], np.ndarray | tuple[np.ndarray, ...]]
    offset2: int = -1


def split(copy: Copy, piece: int | None = None) -> Iterator[Copy]:
    """The copy as pieces of at most `piece` bytes (default COPY_PIECE), so threads can share a large tensor."""
    piece = piece or COPY_PIECE
    for start in range(0, copy.nbytes, piece):
        n = min(piece, copy.nbytes - start)
        yield replace(copy, offset=copy.offset + start, nbytes=n, src=copy.src + start)


def _run(sink: Sink, piece: Copy | Chunk) -> int:
    if isinstance(piece, Copy):
        done = sink.copy(piece.src_fd, piece.src, piece.nbytes, piece.offset, piece.source)
    else:
        made = piece.make()
        arrays = made if isinstance(made, tuple) else (made,)
        done = sum(sink.write(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data, off)
                   for a, off in zip(arrays, (piece.offset, piece.offset2), strict=False))
    if done != piece.nbytes:
        raise AssertionError(f"{piece.name}: wrote {done} bytes, planned {piece.nbytes}")
    return done


def interleave(copies: list[Copy], chunks: Iterable[Chunk], chunk_bytes: int) -> Iterator[Copy | Chunk]:
    """Copies and chunks merged so that each stream's share of its own bytes advances at the same pace."""
    copy_bytes = sum(c.nbytes for c in copies) or 1
    copied = converted = 0
    pending = iter(copies)
    next_copy = next(pending, None)
    for chunk in chunks:
        while next_copy is not None and copied / copy_bytes <= converted / max(chunk_bytes, 1):
            yield next_copy
            copied += next_copy.nbytes
            next_copy = next(pending, None)
        yield chunk
        converted += chunk.nbytes
    if next_copy is not None:
        yield next_copy
    yield from pending


def write_pieces(fd: int, end: int, pieces: Iterable[Copy | Chunk], *, workers: int,
                 progress: Progress | None = None, total: int = 0, direct: bool | None = None) -> None:
    """Write every piece to fd, whose data section ends at byte `end`; at most 2 x workers pieces in flight.

    direct: whole pages go with O_DIRECT where the filesystem takes it (converters/sink.py); None decides by the
    file's size (sink.worth_direct)."""
    os.ftruncate(fd, end)
    direct = worth_direct(end) if direct is None else direct
    names: dict[Future, str] = {}
    with Sink(fd, direct) as sink, ThreadPoolExecutor(workers, thread_name_prefix="gguf-write") as pool:
        try:
            for piece in pieces:
                while len(names) >= 2 * workers:
                    _settle(names, wait(names, return_when=FIRST_COMPLETED).done, progress, total)
                names[pool.submit(_run, sink, piece)] = piece.name
            while names:
                _settle(names, wait(names, return_when=FIRST_COMPLETED).done, progress, total)
        except BaseException:
            for fut in names:
                fut.cancel()
            raise


def _settle(names: dict[Future, str], done: set[Future], progress: Progress | None, total: int) -> None:
    """Collect finished pieces (raising the first failure) and report their bytes."""
    for fut in done:
        written = fut.result()
        name = names.pop(fut)
        if progress:
            progress(written, total, name)
