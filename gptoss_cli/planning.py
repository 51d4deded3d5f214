"""The I/O side of planning: GGUF headers, free memory per device, and the `gptoss plan` / `chat --fit` entry points."""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import gguf

from converters.errors import BadInputError, ModelNotFound
from gptoss_cli.plan import (GiB, KNOWN_CONFIGS, DoesNotFit, ModelShape, Plan, advice, plan_memory, plan_rows,
                             plan_title, shape_from_config, shape_from_tensors)

# --- GGUF header ----------------------------------------------------------------------------------

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, buf, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def __enter__(self) -> "_Cursor":
        return self

    def __exit__(self, *exc) -> None:
        self.buf.close()

    def unpack(self, fmt: str):
        try:
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error:
            raise BadInputError(self.path, "truncated GGUF header", "Re-create the file") from None
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.unpack("<Q")
        s = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return s.decode("utf-8", "replace")

    def value(self, vtype: int, keep: bool = True):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALAR and not keep:
                self.pos += count * struct.calcsize(_SCALAR[etype])
                return None
            if etype == _STRING and not keep:
                unpack, buf, pos = struct.unpack_from, self.buf, self.pos
                for _ in range(count):
                    pos += 8 + unpack("<Q", buf, pos)[0]
                self.pos = pos
                return None
            items = [self.value(etype, keep) for _ in range(count)]
            return items if keep else None
        raise BadInputError(self.path, f"unknown GGUF value type {vtype}", "Re-create the file")


def _open_gguf(path: Path):
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                raise BadInputError(path, "not a GGUF file (too short)", "Pass a .gguf written by `gptoss quantize`")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise BadInputError(path, f"cannot read it: {exc.strerror or exc}") from None
    cur = _Cursor(buf, path)
    if bytes(buf[:4]) != b"GGUF":
        buf.close()
        raise BadInputError(path, "not a GGUF file (bad magic)", "Pass a .gguf written by `gptoss quantize`")
    cur.pos = 4
    version = cur.unpack("<I")
    if version < 2:
        buf.close()
        raise BadInputError(path, f"GGUF version {version} is too old", "Re-create the file")
    return cur


def read_architecture(path: Path) -> str | None:
    """general.architecture of a GGUF file, reading only as far as that key."""
    return read_metadata(path, {"general.architecture"}).get("general.architecture")


def read_metadata(path: Path, keys: set[str]) -> dict:
    """The given scalar metadata keys of a GGUF file, reading only until all are found."""
    found = {}
    with _open_gguf(path) as cur:
        cur.pos += 8  # tensor count
        for _ in range(cur.unpack("<Q")):
            key, vtype = cur.string(), cur.unpack("<I")
            value = cur.value(vtype, keep=key in keys)
            if key in keys:
                found[key] = value
                if len(found) == len(keys):
                    break
    return found


def read_gguf_header(path: Path) -> tuple[dict, list[tuple[str, tuple[int, ...], int]]]:
    """Scalar metadata and (name, shape, bytes) of every tensor; arrays are skipped."""
    with _open_gguf(path) as cur:
        return _header(cur)


def _header(cur: "_Cursor") -> tuple[dict, list[tuple[str, tuple[int, ...], int]]]:
    path = cur.path
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    meta = {}
    for _ in range(n_kv):
        key, vtype = cur.string(), cur.unpack("<I")
        value = cur.value(vtype, keep=vtype != _ARRAY)
        if vtype != _ARRAY:
            meta[key] = value
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = tuple(cur.unpack("<Q") for _ in range(cur.unpack("<I")))
        ttype = cur.unpack("<I")
        cur.unpack("<Q")  # data offset
        try:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise BadInputError(path, f"tensor {name} has unknown type {ttype}", "Re-create the file") from None
        n = 1
        for d in dims:
            n *= d
        tensors.append((name, dims, n // block * size))
    return meta, tensors


# --- free memory per device -------------------------------------------------------------------------

_DEV_GPU, _DEV_IGPU = 1, 2   # enum ggml_backend_dev_type


@dataclass(frozen=True)
class Device:
    """A memory pool the planner can place tensors in."""

    name: str
    kind: str       # "gpu" or "ram"
    free: int
    total: int
    source: str     # where the numbers came from


def gpu_devices() -> list[Device]:
    """GPUs with their free memory: llama.cpp's device list (CUDA, Metal working set), else nvidia-smi."""
    found = _llama_gpus()
    return found if found else _nvidia_smi_gpus()


def _llama_gpus() -> list[Device]:
    try:
        import llama_cpp
        from llama_cpp._ctypes_extensions import load_shared_library
    except ImportError:
        return []
    if not llama_cpp.llama_supports_gpu_offload():
        return []
    from gptoss_cli.backend import _llama_log

    _llama_log()  # backends registered, logs silenced
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    reg, base = load_shared_library("ggml", lib_dir), load_shared_library("ggml-base", lib_dir)
    reg.ggml_backend_dev_count.restype = ctypes.c_size_t
    reg.ggml_backend_dev_get.argtypes, reg.ggml_backend_dev_get.restype = [ctypes.c_size_t], ctypes.c_void_p
    base.ggml_backend_dev_type.argtypes, base.ggml_backend_dev_type.restype = [ctypes.c_void_p], ctypes.c_int
    base.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_description.restype = ctypes.c_char_p
    base.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                             ctypes.POINTER(ctypes.c_size_t)]
    devices = []
    for i in range(reg.ggml_backend_dev_count()):
        dev = reg.ggml_backend_dev_get(i)
        if base.ggml_backend_dev_type(dev) not in (_DEV_GPU, _DEV_IGPU):
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = (base.ggml_backend_dev_description(dev) or b"GPU").decode("utf-8", "replace")
        devices.append(Device(name, "gpu", free.value, total.value, "llama.cpp"))
    return devices


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


# --- model shapes from files -------------------------------------------------------------------

def shape_from_config_file(path: Path) -> ModelShape:
    """shape_from_config on a config.json file (or a snapshot folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"cannot read config.json: {exc}") from None
    return shape_from_config(config, path.parent.name)


def shape_from_gguf(path: Path) -> ModelShape:
    """Exact tensor sizes from a gpt-oss GGUF header (no tensor data is read)."""
    meta, tensors = read_gguf_header(path)
    return shape_from_tensors(meta, tensors, Path(path).name)


# --- entry points -----------------------------------------------------------------------------------

def load_shape(model: str | None) -> tuple[ModelShape, str]:
    """The shape of a model argument and where it came from: GGUF header, config.json, or built-in."""
    from gptoss_cli import paths

    if model is not None and Path(model).expanduser().exists():
        p = Path(model).expanduser()
        if p.is_dir():
            return shape_from_config_file(p), "estimate from config.json (recipe mxfp4)"
        return shape_from_gguf(p), "GGUF header"
    try:
        gguf_path = paths.resolve_gguf(model)
        return shape_from_gguf(gguf_path), f"GGUF header of {gguf_path.name}"
    except ModelNotFound:
        if model is None or model.endswith(".gguf"):
            raise
    repo = paths.repo_id_for(model)
    snap = paths.cached_snapshot(repo)
    if snap is not None:
        return shape_from_config_file(snap), f"estimate from {repo} config.json (recipe mxfp4)"
    size = paths.short_name(repo).lower()
    if size in KNOWN_CONFIGS:
        return (shape_from_config(KNOWN_CONFIGS[size], f"gpt-oss-{size}"),
                f"estimate from the gpt-oss-{size} release shape (recipe mxfp4)")
    raise ModelNotFound(model, "no GGUF, snapshot or known shape for it", "Pass a .gguf, a folder, 20b or 120b")


def probe(vram: str | None, ram: str | None) -> tuple[int, int, list[Device]]:
    """(GPU bytes free, RAM bytes free, devices) from --vram/--ram or from the machine."""
    devices = []
    if vram is None:
        devices += gpu_devices()
        gpu_free = sum(d.free for d in devices)
    else:
        gpu_free = parse_size(vram)
        devices.append(Device("GPU (--vram)", "gpu", gpu_free, gpu_free, "--vram"))
    if ram is None:
        r = ram_device()
    else:
        r = Device("system RAM (--ram)", "ram", parse_size(ram), parse_size(ram), "--ram")
    return gpu_free, r.free, devices + [r]


def run_plan(model: str | None, ctx: int, vram: str | None, ram: str | None, flash_attn: bool,
             as_json: bool) -> None:
    """`gptoss plan`: print where everything goes; DoesNotFit when nothing does."""
    from gptoss_cli import ui

    if ctx < 1:
        raise BadInputError(str(ctx), "--ctx-size must be positive")
    shape, source = load_shape(model)
    gpu_free, ram_free, devices = probe(vram, ram)
    plan = plan_memory(shape, ctx, gpu_free, ram_free, flash_attn=flash_attn)
    flags = f" --n-cpu-moe {plan.n_cpu_moe}" if plan.gpu and plan.n_cpu_moe else ""
    flags += f" --ctx-size {ctx}" + (" --flash-attn" if flash_attn else "")
    command = f"gptoss chat {model or ''}".rstrip() + flags
    if as_json:
        ui.print_json({**plan.to_json(), "source": source, "command": command if plan.fits else None,
                       "devices": [asdict(d) for d in devices]})
    else:
        ui.info(f"shape: {source}; free: " + ", ".join(f"{d.name} {d.free / GiB:.1f} GiB" for d in devices))
        ui.table(plan_title(plan), ["where", "what", "size"], plan_rows(plan, shape), right=["size"])
        if plan.fits:
            ui.out.print(command, markup=False, highlight=False)
    if not plan.fits:
        raise DoesNotFit(shape.name, plan.reason, advice(plan, flash_attn))


def fit(model_path: Path, ctx: int, flash_attn: bool = False) -> Plan:
    """`chat --fit`: plan from the GGUF and this machine's free memory; the table goes to stderr."""
    from gptoss_cli import ui

    shape = shape_from_gguf(model_path)
    gpu_free, ram_free, _ = probe(None, None)
    plan = plan_memory(shape, ctx, gpu_free, ram_free, flash_attn=flash_attn)
    ui.err_table(plan_title(plan), ["where", "what", "size"], plan_rows(plan, shape), right=["size"])
    if not plan.fits:
        raise DoesNotFit(model_path, plan.reason, advice(plan, flash_attn))
    return plan
