"""The output file of a writer: whole pages with O_DIRECT for files beyond the page cache's reach, else buffered.

A buffered write copies every byte into page-cache pages, and once the dirty pages pass the kernel's limit
the writer is throttled to the disk's speed on top of that copy; Linux also serialises buffered writes to
one file on its inode lock (writers here take a lock of their own instead of spinning on it). For a file
beyond that limit (worth_direct) O_DIRECT sends the bytes from a reused buffer straight to the disk, and
the page cache keeps the input instead of the output.

O_DIRECT needs the file offset, the length and the memory address aligned to the device's logical block
(512 or 4096 bytes): each piece's whole 4 KiB pages inside its byte range go direct, staged through a
page-aligned buffer, and its unaligned ends (less than a page each) go through the page cache. No page is
written both ways, so pieces may be written in any order by any thread. Where the filesystem refuses
O_DIRECT, or a platform lacks it, everything is buffered.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

from converters.errors import BadInputError

PAGE = 4096                 # alignment of direct writes: a multiple of every common logical block size
WINDOW = 8 << 20            # bytes staged and written per direct write (per thread)
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def worth_direct(nbytes: int) -> bool:
    """Whether a file of nbytes is better written with O_DIRECT: when it is larger than the kernel's dirty-page
    limit (vm.dirty_bytes, else vm.dirty_ratio percent of available memory), past which buffered writes are
    throttled to the disk's speed anyway. Smaller files are written at memory speed and stay in the page cache."""
    try:
        limit = int(Path("/proc/sys/vm/dirty_bytes").read_text())
        if not limit:
            ratio = int(Path("/proc/sys/vm/dirty_ratio").read_text())
            meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
            limit = ratio * int(meminfo["MemAvailable"].split()[0]) * 1024 // 100
    except (OSError, ValueError, KeyError):
        return False
    return nbytes > limit


def _open_direct(fd: int) -> int | None:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or not os.path.exists(f"/proc/self/fd/{fd}"):
        return None
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | flag)
    except OSError:
        return None


class Sink:
    """Writes at fixed offsets of an open file, from any thread: write() for bytes in memory, copy() from a file."""

    def __init__(self, fd: int, direct: bool = True) -> None:
        self.fd = fd
        self.direct_fd = _open_direct(fd) if direct else None
        self.direct = self.direct_fd is not None      # False once the device refuses an aligned write
        self._local = threading.local()
        self._lock = threading.Lock()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the direct handle (the caller owns fd)."""
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None

    def write(self, data: memoryview, offset: int) -> int:
        """Write bytes at offset; returns the count."""
        def fill(a: int, b: int, buf: mmap.mmap) -> None:
            buf[:b - a] = data[a:b]

        def buffered(a: int, b: int) -> int:
            with self._lock:
                return _pwrite(self.fd, data[a:b], offset + a)

        return self._put(len(data), offset, fill, buffered)

    def copy(self, src_fd: int, src: int, nbytes: int, offset: int, source: Path) -> int:
        """Copy nbytes of src_fd from byte src to offset; source names the file in the error if it ends early."""
        def fill(a: int, b: int, buf: mmap.mmap) -> None:
            _pread_exact(src_fd, memoryview(buf)[:b - a], src + a, source)

        def buffered(a: int, b: int) -> int:
            with self._lock:
                return _copy_buffered(src_fd, src + a, b - a, self.fd, offset + a, source)

        return self._put(nbytes, offset, fill, buffered)

    def _put(self, n: int, offset: int, fill: Callable[[int, int, mmap.mmap], None],
             buffered: Callable[[int, int], int]) -> int:
        """Bytes [0, n) of a piece at offset: the aligned middle staged by fill(a, b, buf) and written direct,
        the ends (or everything, without direct I/O) by buffered(a, b); a and b are positions in the piece."""
        head = -offset % PAGE
        middle_end = head + (n - head) // PAGE * PAGE if n > head else head
        if not self.direct or middle_end - head < PAGE:
            return buffered(0, n) if n else 0
        done = buffered(0, head) if head else 0
        for a in range(head, middle_end, WINDOW):
            b = min(a + WINDOW, middle_end)
            buf = self._staging()
            fill(a, b, buf)
            done += self._direct(buf, b - a, offset + a, functools.partial(buffered, a, b))
        if middle_end < n:
            done += buffered(middle_end, n)
        return done

    def _direct(self, buf: mmap.mmap, n: int, at: int, fallback: Callable[[], int]) -> int:
        if not self.direct or self.direct_fd is None:
            return fallback()
        try:
            return _pwrite(self.direct_fd, memoryview(buf)[:n], at)
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            self.direct = False         # this device wants another alignment: buffered from here on
            return fallback()

    def _staging(self) -> mmap.mmap:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = mmap.mmap(-1, WINDOW)   # anonymous maps are page-aligned
        return buf


def _pwrite(fd: int, view: memoryview, offset: int) -> int:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def _pread_exact(fd: int, view: memoryview, offset: int, source: Path) -> None:
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise _ended(source)
        done += n


def _copy_buffered(src_fd: int, src: int, nbytes: int, dst_fd: int, dst: int, source: Path) -> int:
    """nbytes from src_fd to dst_fd in the kernel (copy_file_range), else through memory."""
    done = 0
    try:
        while done < nbytes:
            n = os.copy_file_range(src_fd, dst_fd, nbytes - done, src + done, dst + done)
            if n <= 0:
                raise _ended(source)
            done += n
    except OSError:     # no in-kernel copy between these files
        while done < nbytes:
            data = os.pread(src_fd, min(nbytes - done, 1 << 26), src + done)
            if not data:
                raise _ended(source) from None
            done += os.pwrite(dst_fd, data, dst + done)
    return done


def _ended(source: Path) -> BadInputError:
    return BadInputError(source, "the file ended early; it is truncated", "Re-create or re-download it")
