"""Thread counts as llama.cpp's own tools choose them (common/common.cpp, common_cpu_get_num_math).

llama.cpp uses one thread per physical core for decoding and, unless told otherwise, the same number for
prompt batches: SMT siblings share a core's vector units, and on hybrid CPUs efficiency cores hold the
performance cores back in lockstep matrix work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SYS_CPU = Path("/sys/devices/system/cpu")
# Intel hybrid CPUs (Alder Lake and later) list their performance cores' logical CPUs here (perf's PMU).
P_CORES = Path("/sys/devices/cpu_core/cpus")


def parse_cpu_list(text: str) -> list[int]:
    """CPU numbers from a sysfs list such as '0-3,8,10-11'."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _fallback(logical: int) -> int:
    """llama.cpp's guess where the topology cannot be read: all CPUs up to 4, else half."""
    return logical if logical <= 4 else logical // 2


def linux_math_cores(sys_cpu: Path = SYS_CPU, p_cores: Path = P_CORES) -> int | None:
    """Physical cores on Linux (distinct thread-sibling sets), performance cores only on hybrid CPUs."""
    siblings: dict[int, str] = {}
    cpu = 0
    while True:
        f = sys_cpu / f"cpu{cpu}" / "topology" / "thread_siblings"
        try:
            siblings[cpu] = f.read_text().strip()
        except OSError:
            break
        cpu += 1
    if not siblings:
        return None
    try:
        wanted = set(parse_cpu_list(p_cores.read_text()))
    except (OSError, ValueError):
        wanted = set(siblings)
    cores = {s for c, s in siblings.items() if c in wanted}
    return len(cores) or len(set(siblings.values()))


def mac_math_cores() -> int | None:
    """Performance cores on Apple Silicon, physical cores on Intel Macs."""
    for key in ("hw.perflevel0.physicalcpu", "hw.physicalcpu"):
        try:
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip().isdigit():
                return int(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def math_threads() -> int:
    """The thread count llama.cpp's tools use by default for decoding and prompt batches."""
    found = None
    if sys.platform.startswith("linux"):
        found = linux_math_cores()
    elif sys.platform == "darwin":
        found = mac_math_cores()
    return found or _fallback(os.cpu_count() or 1)
