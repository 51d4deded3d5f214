"""Free disk space, with the test seam the suite uses to simulate a full disk (converters/seams.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from converters import seams


def free_bytes(path: Path) -> int:
    """Free bytes on the disk holding path (or its nearest existing parent); in a test run, $GPTOSS_FAKE_FREE_BYTES."""
    fake = seams.value(seams.FAKE_FREE_BYTES)
    if fake is not None:
        return int(fake)
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free
