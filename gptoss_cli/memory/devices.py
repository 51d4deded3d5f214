"""Free memory per device (GPUs through llama.cpp or nvidia-smi, system RAM) and memory-size parsing."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from converters import seams
from converters.errors import BadInputError
from gptoss_cli.engine import ggml


@dataclass(frozen=True)
class Device:
    """A memory pool the planner can place tensors in."""

    name: str
    kind: str       # "gpu" or "ram"
    free: int
    total: int
    source: str     # where the numbers came from


def gpu_devices() -> list[Device]:
    """GPUs with their free memory: llama.cpp's device list (CUDA, Metal working set), else nvidia-smi.
    Test seam (converters/seams.py): GPTOSS_TEST_GPUS replaces them in a test run."""
    injected = seams.value(seams.GPUS)
    if injected is not None:
        return parse_test_gpus(injected)
    found = _llama_gpus()
    return found if found else _nvidia_smi_gpus()


def _llama_gpus() -> list[Device]:
    try:
        import llama_cpp
    except ImportError:
        return []
    if not llama_cpp.llama_supports_gpu_offload():
        return []
    g = ggml.lib()
    found = []
    for dev in ggml.devices():
        if g.dev_type(dev) not in (ggml.DEV_GPU, ggml.DEV_IGPU):
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        g.dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = (g.dev_description(dev) or b"GPU").decode("utf-8", "replace")
        found.append(Device(name, "gpu", free.value, total.value, "llama.cpp"))
    return found


def _nvidia_smi_gpus() -> list[Device]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(text: str) -> list[Device]:
    """Devices from `nvidia-smi --query-gpu=name,memory.free,memory.total --format=csv,noheader,nounits`."""
    devices = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            devices.append(Device(parts[0], "gpu", int(parts[1]) << 20, int(parts[2]) << 20, "nvidia-smi"))
    return devices


def parse_test_gpus(text: str) -> list[Device]:
    """Devices from GPTOSS_TEST_GPUS: `NAME:TOTAL:FREE` entries separated by commas, sizes as parse_size reads."""
    devices = []
    for entry in text.split(","):
        parts = entry.rsplit(":", 2)
        if len(parts) != 3 or not parts[0].strip():
            raise BadInputError(seams.GPUS, f"{entry!r} is not NAME:TOTAL:FREE", "Write it like GPU0:24GiB:20GiB")
        total, free = parse_size(parts[1]), parse_size(parts[2])
        devices.append(Device(parts[0].strip(), "gpu", free, total, seams.GPUS))
    return devices


def ram_device() -> Device:
    """System RAM: MemAvailable from /proc/meminfo on Linux, physical memory elsewhere."""
    try:
        info = parse_meminfo(Path("/proc/meminfo").read_text())
        return Device("system RAM", "ram", info["MemAvailable"], info["MemTotal"], "/proc/meminfo")
    except (OSError, KeyError):
        pass
    total = 0
    if sys.platform == "darwin":
        try:
            total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True,
                                       timeout=5).stdout.strip() or 0)
        except (OSError, ValueError, subprocess.SubprocessError):
            total = 0
    if not total and hasattr(os, "sysconf"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError):
            total = 0
    return Device("system RAM", "ram", total, total, "physical memory")


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field (values there are in kB)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key.strip()] = int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)
    return out


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
          "tib": 1 << 40}


def parse_size(text: str) -> int:
    """'24GB', '24 GiB', '16000M', '0' -> bytes. Memory sizes are binary: 1 GB here is 1024^3 bytes."""
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in _UNITS or value < 0:
        raise BadInputError(text, "not a memory size", "Write it like 24GB, 24GiB or 16000MB")
    return int(value * _UNITS[unit])
