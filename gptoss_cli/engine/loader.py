"""The one model loader: every command that runs a GGUF gets its llama.cpp model parameters here.

It decides where tensors go beyond llama.cpp's own choice: experts kept in system RAM (`--cpu-moe`,
`--n-cpu-moe`), and no tensor handed to llama.cpp's AMX buffer type. On CPUs with AMX (Intel Sapphire Rapids
and later) llama.cpp repacks Q8_0/Q4_K/... matrices into that buffer at load, and the first decode crashes in
ggml_backend_amx_mul_mat (ggml-org/llama.cpp#20824, unfixed in llama-cpp-python 0.3.36's llama.cpp). Those
tensors go where llama.cpp puts them when the OS refuses AMX: CPU_REPACK for the types its x86 kernels take,
else the plain CPU buffer. `GPTOSS_AMX=1` leaves them to AMX, for a llama.cpp that has fixed it.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from converters import seams
from converters.errors import BadInputError, RunFailure
from gptoss_cli.engine.gguf_header import GGUFHeader, TensorInfo, read_header

Q = gguf.GGMLQuantizationType
# Types the AMX buffer takes for a 2-D MUL_MAT weight, with the row-length multiple it needs
# (ggml-cpu/amx/amx.cpp, extra_buffer_type::supports_op); the output-feature count must be a multiple of 32.
AMX_TYPES = {Q.Q4_0: 32, Q.Q4_1: 32, Q.Q8_0: 32, Q.Q4_K: 256, Q.Q5_K: 256, Q.Q6_K: 256, Q.IQ4_XS: 256, Q.F16: 16}
AMX_ROWS = 32
# CPU_REPACK's x86 (AVX2) kernels among those types, for matrices whose row count is a multiple of 8
# (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type).
REPACK_TYPES, REPACK_ROWS = {Q.Q4_0, Q.Q4_K}, 8
# Read with GET_ROWS, never MUL_MAT: no extra buffer type takes it.
INPUT_TENSOR = "token_embd.weight"
# llama.cpp's pattern for expert tensors (common/common.h LLM_FFN_EXPS_REGEX); it also matches the
# expert biases (`blk.N.ffn_gate_exps.bias`), exactly as `--cpu-moe` does.
FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
PLAIN, REPACK, CPU = "CPU_Mapped", "CPU_REPACK", "CPU"   # override targets, by buffer type name


@dataclass
class LoadOptions:
    """Where the weights go."""

    gpu_layers: int | None = None     # None or -1: all when a GPU backend exists
    cpu_moe: bool = False
    n_cpu_moe: int = 0
    verbose: bool = False
    # Device handles llama.cpp spreads the offloaded layers over, in order (RPC workers first, as llama.cpp
    # orders them, then local GPUs); None: llama.cpp's own choice, every GPU it has registered.
    devices: tuple[int, ...] | None = None
    # Share of the offloaded layers per device of `devices` (llama.cpp's tensor_split); None: by free memory.
    tensor_split: tuple[float, ...] | None = None
    # Experts in the file's memory map (CPU_Mapped), never copied to a repacked buffer: runs with less RAM
    # than the model, reading experts from disk as they are needed.
    mapped_experts: bool = False


@dataclass
class Overrides:
    """Tensor buffer-type overrides as (regex, target) pairs; llama.cpp uses the first pattern that matches."""

    rules: list[tuple[str, str]] = field(default_factory=list)


def expert_override_patterns(n_layers: int | None, *, cpu_moe: bool, n_cpu_moe: int) -> list[str]:
    """Regexes for the expert tensors to keep in system RAM, as llama.cpp's --cpu-moe / --n-cpu-moe."""
    if n_cpu_moe < 0:
        raise BadInputError(None, f"--n-cpu-moe must be >= 0, got {n_cpu_moe}")
    if cpu_moe or (n_layers is not None and n_cpu_moe >= n_layers):
        return [FFN_EXPS_REGEX]
    return [rf"blk\.{i}{FFN_EXPS_REGEX}" for i in range(n_cpu_moe)]


def on_cpu(name: str, n_layers: int, gpu_layers: int) -> bool:
    """Whether llama.cpp keeps this tensor on the CPU when gpu_layers layers are offloaded (llama-model.cpp)."""
    first_gpu = max(n_layers + 1 - gpu_layers, 0)   # the output layer counts as layer n_layers
    if name == INPUT_TENSOR:
        return True
    m = re.match(r"blk\.(\d+)\.", name)
    return (int(m.group(1)) if m else n_layers) < first_gpu


def amx_would_take(t: TensorInfo) -> bool:
    """Whether llama.cpp would put this tensor in the AMX buffer if it lives on the CPU."""
    if t.name == INPUT_TENSOR or len(t.shape) != 2 or t.type not in AMX_TYPES:
        return False
    row_len, rows = t.shape
    return rows % AMX_ROWS == 0 and row_len % AMX_TYPES[t.type] == 0


def avoid_amx(tensors: list[TensorInfo], n_layers: int, gpu_layers: int, extra_bufts: list[str]) -> Overrides:
    """Overrides that keep every tensor out of the AMX buffer, each sent where llama.cpp puts it without AMX."""
    if "AMX" not in extra_bufts:
        return Overrides()
    groups: dict[tuple[str, str], list[str]] = {}
    for t in tensors:
        if not (amx_would_take(t) and on_cpu(t.name, n_layers, gpu_layers)):
            continue
        repack = REPACK in extra_bufts and t.type in REPACK_TYPES and t.shape[1] % REPACK_ROWS == 0
        m = re.match(r"blk\.(\d+)\.(.+)$", t.name)
        layer, rest = (m.group(1), m.group(2)) if m else ("", t.name)
        groups.setdefault((REPACK if repack else PLAIN, rest), []).append(layer)
    rules = []
    for (target, rest), layers in sorted(groups.items()):
        tail = re.escape(rest) + "$"
        if layers == [""]:
            rules.append(("^" + tail, target))
        else:
            rules.append((rf"^blk\.({'|'.join(layers)})\." + tail, target))
    return Overrides(rules)


def plan_overrides(tensors: list[TensorInfo], n_layers: int, gpu_layers: int, opts: LoadOptions,
                   extra_bufts: list[str]) -> Overrides:
    """All overrides for one load: AMX avoidance first, then the experts kept in system RAM."""
    rules = [] if os.environ.get("GPTOSS_AMX") == "1" else avoid_amx(tensors, n_layers, gpu_layers,
                                                                        extra_bufts).rules
    experts = expert_override_patterns(n_layers, cpu_moe=opts.cpu_moe, n_cpu_moe=opts.n_cpu_moe)
    mapped = [(FFN_EXPS_REGEX, PLAIN)] if opts.mapped_experts else []
    return Overrides(rules + mapped + [(p, CPU) for p in experts])


class _BuftOverride(ctypes.Structure):
    # struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def override_array(overrides: Overrides) -> ctypes.Array | None:
    """The NULL-terminated C array llama_model_params.tensor_buft_overrides points to; None when empty.

    Target CPU is ggml_backend_cpu_buffer_type(), which llama.cpp resolves over the CPU's buffer types
    (as `-ot X=CPU` does); CPU_Mapped and CPU_REPACK are taken as they are.
    """
    if not overrides.rules:
        return None
    from gptoss_cli.engine import ggml

    targets = {CPU: ggml.lib().cpu_buffer_type, PLAIN: ggml.plain_cpu_buffer_type,
               REPACK: lambda: ggml.cpu_extra_buffer_types()[REPACK]}
    arr = (_BuftOverride * (len(overrides.rules) + 1))()
    for slot, (pattern, target) in zip(arr, overrides.rules, strict=False):  # arr has one more slot
        slot.pattern, slot.buft = pattern.encode(), targets[target]()
    return arr  # the last slot stays {NULL, NULL}; ctypes keeps the pattern bytes alive with arr


def resolve_gpu_layers(gpu_layers: int | None) -> int:
    """The layer count llama.cpp offloads: all (-1/None) only when there is a GPU or an RPC worker."""
    from gptoss_cli.engine import ggml

    has_gpu = ggml.has_gpu_device()
    if gpu_layers is None or gpu_layers < 0:
        return 0x7FFFFFFF if has_gpu else 0
    return gpu_layers if has_gpu else 0


def model_params(path: Path, tensors: list[TensorInfo], n_layers: int, opts: LoadOptions):
    """llama_model_params for path, and the C array it points to (keep it alive until the load returns)."""
    import llama_cpp as lc

    from gptoss_cli.engine import ggml

    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = resolve_gpu_layers(opts.gpu_layers)
    overrides = plan_overrides(tensors, n_layers, mparams.n_gpu_layers, opts,
                               list(ggml.cpu_extra_buffer_types()))
    arr = override_array(overrides)
    keep: object = arr
    if arr is not None:
        mparams.tensor_buft_overrides = ctypes.addressof(arr)
    if opts.devices is not None:
        devs = (ctypes.c_void_p * (len(opts.devices) + 1))(*opts.devices)   # NULL-terminated
        mparams.devices = ctypes.addressof(devs)
        keep = (keep, devs)
    if opts.tensor_split:
        import llama_cpp as lc

        split = (ctypes.c_float * lc.llama_max_devices())(*opts.tensor_split)
        mparams.tensor_split = split
        keep = (keep, split)
    return mparams, keep


class BadModelFile(BadInputError):
    """The file is not a gpt-oss GGUF llama.cpp can load."""

    what = "cannot load model"


class ModelLoadFailure(RunFailure):
    """llama.cpp refused the model or context at run time (memory, unsupported tensor type)."""

    what = "cannot load model"


@dataclass
class Model:
    """A loaded llama.cpp model: its handle, vocabulary, layer count and what llama.cpp logged while loading."""

    path: Path
    ptr: int | None   # None once closed
    vocab: int
    n_layers: int
    log: list[str]

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of text; with special, special tokens written as text (`<|start|>`) become their ids."""
        import llama_cpp

        data = text.encode("utf-8")
        n_max = len(data) + 8   # a token is at least one byte
        buf = (ctypes.c_int32 * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, special)
        return list(buf[:n])

    def close(self) -> None:
        """Free the model (idempotent)."""
        if self.ptr:
            import llama_cpp

            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None


def load_model(path: Path, opts: LoadOptions, log_lines: list[str] | None = None) -> Model:
    """Load a gpt-oss GGUF with gptoss's placement rules; BadModelFile / ModelLoadFailure when llama.cpp refuses."""
    import llama_cpp as lc

    from gptoss_cli.engine.llama_log import llama_log

    path = Path(path)
    header = check_gguf(path)
    n_layers = header.metadata.get("gpt-oss.block_count") or 0
    log = llama_log()
    log.verbose = opts.verbose
    lines = [] if log_lines is None else log_lines
    log.capture, log.recent_errors = lines, deque(maxlen=8)
    try:
        mparams, keep = model_params(path, header.tensors, n_layers, opts)
        ptr = lc.llama_model_load_from_file(str(path).encode(), mparams)
        del keep
        if not ptr:
            raise load_error(path, log.why("llama.cpp could not load the weights"))
    finally:
        if log_lines is None:
            log.capture = None
        _record_load_log(lines)
    return Model(path, ptr, lc.llama_model_get_vocab(ptr), n_layers, lines)


def _record_load_log(lines: list[str]) -> None:
    """Test seam (converters/seams.py): GPTOSS_TEST_LLAMA_LOG=FILE gets llama.cpp's log of each load appended."""
    target = seams.value(seams.LLAMA_LOG)
    if target is not None:
        with open(target, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)


def load_error(path: Path, why: str) -> Exception:
    """Out of memory is a run-time failure (exit 1); anything else means a malformed file (exit 2)."""
    if re.search(r"alloc|memory", why, re.IGNORECASE):
        return ModelLoadFailure(path, why, "Free memory, or try --n-cpu-moe N / --cpu-moe / a smaller --ctx-size")
    return BadModelFile(path, why, "Re-create it with `gptoss quantize`")


def check_gguf(path: Path) -> GGUFHeader:
    """The header of a gpt-oss GGUF; BadModelFile unless path is one."""
    if not path.is_file():
        raise BadModelFile(path, "no such file", "Pass a .gguf path or a model name like 20b")
    header = read_header(path)
    arch = header.metadata.get("general.architecture")
    if arch != "gpt-oss":
        raise BadModelFile(path, f"its architecture is {arch!r}, not gpt-oss",
                           "Pass a GGUF written by `gptoss quantize`")
    return header
