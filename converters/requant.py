"""Quantize a lossless gpt-oss GGUF with llama.cpp's own quantizer (llama_model_quantize, via llama-cpp-python).

Every quantizable tensor gets an exact-name type override (llama_model_tensor_override), so the written types
are the plan's and nothing is left to llama.cpp's mixture heuristics; `pure` keeps the rest at the default.
The call runs in a worker thread so Ctrl-C is seen at once; llama.cpp's per-tensor log lines drive progress.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from converters.convert import check_output
from converters.errors import RunFailure
from converters.sizing import LOSSLESS, SizePlan, pad, quantizable

Progress = Callable[[int, int, str], None]      # (bytes done now, total bytes, tensor name)
KEY_RECIPE = b"gptoss.recipe"
_TENSOR_LINE = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)")
_STILL_RUNNING: list = []


def quantize_file(src: Path, dst: Path, plan: SizePlan, imatrix: dict[str, np.ndarray] | None = None,
                  threads: int | None = None, progress: Progress | None = None) -> None:
    """Write dst from the lossless src with the plan's per-tensor types; RunFailure if llama.cpp refuses."""
    import llama_cpp

    keep: list[object] = []   # ctypes buffers that must outlive the call
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads or 0
    params.ftype = int(plan.spec.recipe.file_type)
    params.allow_requantize = True      # experts arrive as MXFP4; dequantizing them is exact
    params.quantize_output_tensor = True
    params.pure = True
    params.tt_overrides = _overrides(llama_cpp, plan, keep)
    params.kv_overrides = _kv_recipe(llama_cpp, plan.spec.name, keep)
    if imatrix:
        params.imatrix = _imatrix(llama_cpp, imatrix, keep)
    log = _Log(plan, progress)
    result: list[int] = []

    def work() -> None:
        result.append(llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)))

    prev_cb, prev_ud = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(prev_cb), ctypes.byref(prev_ud))
    llama_cpp.llama_log_set(log.callback, ctypes.c_void_p(0))
    worker = threading.Thread(target=work, name="llama-quantize", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except BaseException:
        _STILL_RUNNING.append((log, params, keep))   # C code still uses them until the process exits
        raise
    llama_cpp.llama_log_set(prev_cb, prev_ud)
    log.finish()
    if result != [0]:
        raise RunFailure(src, f"llama.cpp's quantizer failed: {log.last_error or 'no reason given'}",
                         "Rerun with GPTOSS_DEBUG=1 to see its log")


def _overrides(llama_cpp, plan: SizePlan, keep: list):
    rows = [(f"^{re.escape(t.name)}$".encode(), int(t.qtype)) for t in plan.tensors if quantizable(t.name, t.shape)]
    arr = (llama_cpp.llama_model_tensor_override * (len(rows) + 1))()
    for i, (pattern, qtype) in enumerate(rows):
        arr[i].pattern, arr[i].type = pattern, qtype
    arr[len(rows)].pattern = None
    keep.append(arr)
    return ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_tensor_override))


def _kv_recipe(llama_cpp, name: str, keep: list):
    arr = (llama_cpp.llama_model_kv_override * 2)()
    arr[0].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
    arr[0].key = KEY_RECIPE
    arr[0].value.val_str = name.encode()[:127]
    arr[1].key = b""
    keep.append(arr)
    return ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_kv_override))


def _imatrix(llama_cpp, imatrix: dict[str, np.ndarray], keep: list):
    arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
    for i, (name, values) in enumerate(imatrix.items()):
        data = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(data)
        arr[i].name = name.encode()
        arr[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = data.size
    arr[len(imatrix)].name = None
    keep.append(arr)
    return ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))


class _Log:
    """llama.cpp's log during quantization: '[ i/ n] name ...' lines become progress; errors are kept."""

    def __init__(self, plan: SizePlan, progress: Progress | None) -> None:
        import llama_cpp

        self.sizes = {t.name: t.nbytes for t in plan.tensors}
        self.total = sum(self.sizes.values())
        self.progress, self.last_error = progress, ""
        self.current: str | None = None
        self.lines: list[str] = []
        self.callback = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes, user_data) -> None:
        line = text.decode("utf-8", "replace")
        if level == 3 and line.strip() and not set(line.strip()) <= set("="):
            self.last_error = line.strip().rstrip(".")
        if len(self.lines) < 4000:
            self.lines.append(line)
        m = _TENSOR_LINE.match(line.strip())
        if m:
            self._done()
            self.current = m.group(1)

    def _done(self) -> None:
        if self.current and self.progress:
            self.progress(self.sizes.get(self.current, 0), self.total, self.current)
        self.current = None

    def finish(self) -> None:
        """Count the last tensor once the quantizer returned."""
        self._done()


def write_quantized(snapshot_dir: Path, out_path: Path, plan: SizePlan, imatrix: dict[str, np.ndarray] | None = None,
                    force: bool = False, convert_progress: Progress | None = None,
                    quant_progress: Progress | None = None, threads: int | None = None) -> Path:
    """Snapshot -> lossless GGUF (temporary, next to the output) -> llama.cpp quantizer -> verified, renamed."""
    from converters.convert import convert_checkpoint, tensor_nbytes

    out_path = Path(out_path)
    lossless_bytes = plan.header_bytes + sum(pad(tensor_nbytes(t.source, t.shape)) for t in plan.tensors)
    check_output(out_path, plan.total_bytes + lossless_bytes, force,
                 what="the output and a temporary lossless copy")
    # Both intermediate files live in a private folder: on Ctrl-C llama.cpp may still be about to create its
    # output, and removing the folder makes that creation fail instead of leaving a stray file behind.
    work = out_path.with_name(f".{out_path.name}.tmp")
    work.mkdir(exist_ok=True)
    lossless, partial = work / f"lossless-{LOSSLESS}.gguf", work / (out_path.name + ".partial")
    try:
        convert_checkpoint(snapshot_dir, lossless, recipe=LOSSLESS, force=True, progress=convert_progress)
        quantize_file(lossless, partial, plan, imatrix, threads, quant_progress)
        verify(partial, plan)
        os.replace(partial, out_path)
    finally:
        _remove_folder(work)
    return out_path


def _remove_folder(folder: Path) -> None:
    for _ in range(100):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05)


def verify(path: Path, plan: SizePlan) -> None:
    """The file's tensor infos must match the plan: every tensor's type, and the size to the byte."""
    want = {t.name: int(t.qtype) for t in plan.tensors}
    got = tensor_types(path)
    wrong = [f"{n}: type {got.get(n)} instead of {plan_t.name}" for n, plan_t in
             ((t.name, t.qtype) for t in plan.tensors) if got.get(n) != want[n]]
    size = path.stat().st_size
    if wrong or set(got) != set(want) or size != plan.total_bytes:
        why = "; ".join(wrong[:3]) or f"{size} bytes instead of {plan.total_bytes}"
        raise RunFailure(path, f"llama.cpp wrote something other than the plan ({why})",
                         "Report this with the command line")


_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def tensor_types(path: Path) -> dict[str, int]:
    """GGML type id of every tensor in a GGUF file, skipping the key/values quickly (the vocabulary is big)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _tensor_types(buf)


def _tensor_types(buf) -> dict[str, int]:
    pos = 8

    def u(fmt: str) -> int:
        nonlocal pos
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    def skip(vtype: int) -> None:
        nonlocal pos
        if vtype in _SCALAR_SIZE:
            pos += _SCALAR_SIZE[vtype]
        elif vtype == 8:
            n = u("<Q")
            pos += n
        else:                                   # 9: array of (type, count)
            etype, count = u("<I"), u("<Q")
            if etype in _SCALAR_SIZE:
                pos += count * _SCALAR_SIZE[etype]
            elif etype == 8:
                for _ in range(count):
                    n = u("<Q")
                    pos += n
            else:
                for _ in range(count):
                    skip(etype)

    n_tensors, n_kv = u("<Q"), u("<Q")
    for _ in range(n_kv):
        n = u("<Q")
        pos += n
        skip(u("<I"))
    out = {}
    for _ in range(n_tensors):
        n = u("<Q")
        name = bytes(buf[pos:pos + n]).decode()
        pos += n
        n_dims = u("<I")
        pos += 8 * n_dims
        out[name] = u("<I")
        pos += 8
    return out
