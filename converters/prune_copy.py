"""Write a planned pruned GGUF: the header once, then every kept byte run copied (converters/sink.py).

The file is `<name>.partial` until every byte is in place, then renamed; any failure or Ctrl-C removes it.
Runs go to a thread pool in file order (data_writer.write_pieces), so memory stays flat whatever the size.
"""

from __future__ import annotations

import os
from pathlib import Path

from converters.convert import check_output
from converters.data_writer import Copy, Progress, split, write_pieces
from converters.errors import BadInputError
from converters.prune import PrunePlan

WORKERS = 4


def pieces(plan: PrunePlan, src_fd: int) -> list[Copy]:
    """Every run of the plan as Copy pieces of bounded size, in output order."""
    out: list[Copy] = []
    for t in plan.tensors:
        for run in t.runs:
            out += split(Copy(t.name, run.dst, run.nbytes, src_fd, run.src, plan.source.path))
    return out


def write_pruned(plan: PrunePlan, out_path: Path, force: bool = False, progress: Progress | None = None,
                 workers: int = WORKERS) -> Path:
    """Write the plan to out_path atomically; the size is checked against the plan before the rename."""
    out_path = Path(out_path)
    if out_path.resolve() == plan.source.path.resolve():
        raise BadInputError(out_path, "the output is the file being pruned", "Choose another -o")
    check_output(out_path, plan.total_bytes, force)
    partial = out_path.with_name(out_path.name + ".partial")
    src_fd = os.open(plan.source.path, os.O_RDONLY)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.pwrite(fd, plan.header, 0)
            write_pieces(fd, plan.total_bytes, pieces(plan, src_fd), workers=workers, progress=progress,
                         total=sum(t.nbytes for t in plan.tensors))
        finally:
            os.close(fd)
        size = partial.stat().st_size
        if size != plan.total_bytes:
            raise AssertionError(f"wrote {size} bytes, planned {plan.total_bytes}")
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        os.close(src_fd)
    return out_path
