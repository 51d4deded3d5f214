"""Free disk space, with the one testing hook the suite uses to simulate a full disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Tests set this to simulate a small disk; it is read here and nowhere else.
FAKE_FREE_ENV = "GPTOSS_FAKE_FREE_BYTES"


def free_bytes(path: Path) -> int:
    """Free bytes on the disk holding path (or its nearest existing parent); $GPTOSS_FAKE_FREE_BYTES overrides."""
    if os.environ.get(FAKE_FREE_ENV):
        return int(os.environ[FAKE_FREE_ENV])
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free
