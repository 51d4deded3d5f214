"""The writers' output sink: whole pages go with O_DIRECT, the ends through the page cache, and the file holds the
same bytes as a plain buffered write whatever the offsets, sizes, threads and filesystem."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from converters import data_writer
from converters import sink as sink_mod
from converters.convert import convert_checkpoint
from converters.errors import BadInputError
from converters.sink import PAGE, Sink

DIRECT_FS = {"ext4", "xfs", "btrfs"}     # local filesystems that take O_DIRECT


def _fs_type(path: Path) -> str:
    """The filesystem type of the mount holding path (/proc/self/mounts)."""
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype = line.split()[:3]
        if str(path.resolve()).startswith(point) and len(point) > len(best):
            best, kind = point, fstype
    return kind


def _layout(rng: np.random.Generator, size: int) -> list[tuple[int, int]]:
    """Non-overlapping (offset, length) ranges over [0, size): odd offsets, lengths from 1 byte to many pages,
    holes between some of them (they must read back as zeros)."""
    out, pos = [], 0
    lengths = [1, 7, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE + 5, 9 * PAGE + 123, 17 * PAGE]
    while pos < size:
        n = int(rng.choice(lengths))
        if pos + n > size:
            break
        out.append((pos, n))
        pos += n + int(rng.choice([0, 0, 3, PAGE + 9]))
    return out


def _fill(path: Path, ranges, data: bytes, source: Path | None, direct: bool, workers: int = 4) -> bool:
    """Write each range of data to path at its offset (copied from source when given); whether it went direct."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    src_fd = os.open(source, os.O_RDONLY) if source else -1
    try:
        os.ftruncate(fd, len(data))
        with Sink(fd, direct) as out, ThreadPoolExecutor(workers) as pool:
            def put(r: tuple[int, int]) -> int:
                off, n = r
                if source:
                    return out.copy(src_fd, off + 11, n, off, source)   # the source holds data 11 bytes later
                return out.write(memoryview(data)[off:off + n], off)

            written = list(pool.map(put, ranges))
            used_direct = out.direct
        assert written == [n for _, n in ranges]
        return used_direct
    finally:
        os.close(fd)
        if src_fd >= 0:
            os.close(src_fd)


@pytest.fixture
def case(tmp_path, monkeypatch):
    monkeypatch.setattr(sink_mod, "WINDOW", 3 * PAGE)    # pieces span several staging windows
    rng = np.random.default_rng(7)
    size = 300 * PAGE + 77
    ranges = _layout(rng, size)
    want = bytearray(size)
    data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    for off, n in ranges:
        want[off:off + n] = data[off:off + n]
    return tmp_path, ranges, data, bytes(want)


def test_writes_land_byte_exact_and_go_direct_on_a_disk_filesystem(case):
    folder, ranges, data, want = case
    used_direct = _fill(folder / "direct.bin", ranges, data, None, direct=True)
    _fill(folder / "buffered.bin", ranges, data, None, direct=False)
    assert (folder / "direct.bin").read_bytes() == want
    assert (folder / "buffered.bin").read_bytes() == want
    if _fs_type(folder) in DIRECT_FS:
        assert used_direct, f"{_fs_type(folder)} takes O_DIRECT; the sink fell back to buffered writes"


def test_copies_from_another_file_land_byte_exact(case):
    folder, ranges, data, want = case
    source = folder / "source.bin"
    source.write_bytes(b"x" * 11 + data)
    _fill(folder / "direct.bin", ranges, data, source, direct=True)
    _fill(folder / "buffered.bin", ranges, data, source, direct=False)
    assert (folder / "direct.bin").read_bytes() == want
    assert (folder / "buffered.bin").read_bytes() == want


def _refuse_direct_opens(monkeypatch) -> None:
    """The filesystem answers EINVAL to an open with O_DIRECT (as tmpfs did before Linux 6.6, and FUSE mounts do)."""
    real = os.open

    def open_(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(sink_mod.os, "open", open_)


def test_a_filesystem_without_direct_io_gets_buffered_writes(case, monkeypatch):
    folder, ranges, data, want = case
    _refuse_direct_opens(monkeypatch)
    assert not _fill(folder / "out.bin", ranges, data, None, direct=True)
    assert (folder / "out.bin").read_bytes() == want


def test_a_device_refusing_an_aligned_write_falls_back_to_buffered(case, monkeypatch):
    # A device whose logical block is larger than a page answers EINVAL to the first direct write.
    folder, ranges, data, want = case
    real = os.pwrite
    refused = []

    def pwrite(fd, view, offset):
        if _flags(fd) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, view, offset)

    monkeypatch.setattr(sink_mod.os, "pwrite", pwrite)
    used_direct = _fill(folder / "out.bin", ranges, data, None, direct=True)
    assert (folder / "out.bin").read_bytes() == want
    if _fs_type(folder) in DIRECT_FS:
        assert refused and not used_direct


def _flags(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0


def test_a_source_that_ends_early_is_named(tmp_path):
    source = tmp_path / "short.safetensors"
    source.write_bytes(b"\0" * (3 * PAGE))
    fd = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    src_fd = os.open(source, os.O_RDONLY)
    try:
        for direct in (True, False):
            with Sink(fd, direct) as out, pytest.raises(BadInputError, match="short.safetensors.*truncated"):
                out.copy(src_fd, 0, 10 * PAGE, 0, source)
    finally:
        os.close(fd)
        os.close(src_fd)


def test_conversion_is_the_same_file_with_and_without_direct_io(tiny_checkpoint, tmp_path, monkeypatch):
    buffered = convert_checkpoint(tiny_checkpoint, tmp_path / "b.gguf", recipe="bf16").path   # small: buffered
    monkeypatch.setattr(sink_mod, "WINDOW", 5 * PAGE)
    monkeypatch.setattr(data_writer, "worth_direct", lambda nbytes: True)   # as for a file beyond the dirty limit
    direct = convert_checkpoint(tiny_checkpoint, tmp_path / "a.gguf", recipe="bf16").path
    assert direct.read_bytes() == buffered.read_bytes()


@pytest.mark.skipif(not Path("/proc/sys/vm/dirty_ratio").exists(), reason="Linux's dirty-page limit")
def test_files_beyond_the_dirty_page_limit_go_direct():
    meminfo = Path("/proc/meminfo").read_text()
    total = int(meminfo.split("MemTotal:")[1].split()[0]) * 1024
    assert sink_mod.worth_direct(total)               # a file as large as the memory: throttled if buffered
    assert not sink_mod.worth_direct(64 << 20)        # a small one is written at memory speed
