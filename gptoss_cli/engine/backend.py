"""gpt-oss on llama.cpp through llama-cpp-python's C API: load, tokenize, and a lean decode loop."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from converters.errors import BadInputError, RunFailure
from gptoss_cli.engine.constrain import Controller
from gptoss_cli.engine.llama_log import llama_log, stop_echo
from gptoss_cli.engine.loader import LoadOptions, Model, ModelLoadFailure, load_model
from gptoss_cli.engine.sampling import Sampler
from gptoss_cli.engine.structured import GrammarChains
from gptoss_cli.engine.threads import math_threads

# The sliding-window cache is sized to the window (not llama.cpp's default, the whole context); a copy of
# it is kept at the end of each prompt, so the next turn can still reuse the prompt.
SWA_FULL = False


def swa_covers(lc, mem, seq: int, n_past: int, n_swa: int) -> bool:
    """Whether sequence seq's sliding-window cache still holds the window the token at n_past attends to."""
    if n_past == 0 or n_swa <= 0:
        return True
    pos_min = lc.llama_memory_seq_pos_min(mem, seq)
    return 0 <= pos_min <= max(0, n_past - n_swa)


class ContextFull(RunFailure):
    """The prompt does not fit the context window."""

    what = "context full"


@dataclass
class BackendOptions:
    """How to load the model and size the context; None/auto means llama.cpp's own default."""

    ctx_size: int = 8192
    threads: int | None = None
    gpu_layers: int | None = None
    flash_attn: str = "auto"
    cpu_moe: bool = False
    n_cpu_moe: int = 0
    seed: int = -1
    verbose: bool = False
    devices: tuple[int, ...] | None = None   # where layers go (RPC workers, GPUs); None: llama.cpp's choice
    tensor_split: tuple[float, ...] | None = None   # layers per device of `devices` (--fit over workers)
    parallel: int = 1   # sequences in the context (serve's slots), each with ctx_size tokens of its own


def context_params(lc, opts: BackendOptions):
    """The llama_context_params chat and serve create their context with (the memory planner models them)."""
    cp = lc.llama_context_default_params()
    cp.n_ctx = opts.ctx_size * opts.parallel
    cp.n_seq_max = opts.parallel
    cp.kv_unified = False   # one KV stream per sequence: no cross-sequence masking work per step
    cp.n_batch = min(2048, opts.ctx_size)
    cp.n_ubatch = min(512, cp.n_batch)
    cp.n_threads = cp.n_threads_batch = opts.threads or math_threads()
    cp.flash_attn_type = {"auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                          "off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED}[opts.flash_attn]
    # Only the last token's logits (per sequence) are read: saves n_vocab * n_batch * 4 bytes of buffers.
    if hasattr(cp, "n_outputs_max"):
        cp.n_outputs_max = opts.parallel
    cp.no_perf = True
    cp.swa_full = SWA_FULL
    return cp


class Backend:
    """One loaded gpt-oss model and context; `generate` streams sampled token ids."""

    def __init__(self, model_path: Path, opts: BackendOptions) -> None:
        import llama_cpp as lc

        self._lc = lc
        self.model_path = Path(model_path)
        self.opts = opts
        self._model: Model | None = None
        self._ctx = None
        self._pool = None
        self.load_log: list[str] = []
        load = LoadOptions(gpu_layers=opts.gpu_layers, cpu_moe=opts.cpu_moe, n_cpu_moe=opts.n_cpu_moe,
                           verbose=opts.verbose, devices=opts.devices,
                           tensor_split=opts.tensor_split)
        log = llama_log()
        try:
            self._model = load_model(self.model_path, load, self.load_log)
            self._vocab = self._model.vocab
            self._ctx = lc.llama_init_from_model(self._model.ptr, context_params(lc, opts))
            if not self._ctx:
                raise ModelLoadFailure(self.model_path, log.why("llama.cpp could not create the context"),
                                       "Try a smaller --ctx-size, or --n-cpu-moe to free GPU memory")
            self._pool = attach_threadpool(self._ctx, opts.threads or math_threads())
        except BaseException:
            self.close()
            raise
        finally:
            log.capture = None
        self.n_ctx: int = lc.llama_n_ctx(self._ctx)
        self.n_swa: int = lc.llama_model_n_swa(self._model.ptr)
        self.n_vocab: int = lc.llama_vocab_n_tokens(self._vocab)
        self._mem = lc.llama_get_memory(self._ctx)
        self._cached: list[int] = []  # tokens whose K/V are in the cache, in order
        self._piece = ctypes.create_string_buffer(256)
        self.reused_tokens = 0  # prompt tokens the last generate took from the cache instead of decoding
        self._window: tuple[list[int], int] | None = None  # saved sliding-window cache: (its tokens, bytes)
        self._window_buf: ctypes.Array | None = None
        self._grammar_tok = None
        self._grammar_lock = threading.Lock()

    @property
    def ctx(self):
        """The llama_context handle (None once closed), for an engine that decodes in it itself."""
        return self._ctx

    @property
    def vocab(self):
        """The model's llama_vocab handle."""
        return self._vocab

    # --- tokens -----------------------------------------------------------------------------------

    @property
    def _loaded(self) -> Model:
        assert self._model is not None, "the model is loaded from __init__ until close()"
        return self._model

    def tokenize(self, text: str) -> list[int]:
        """Token ids of text; special tokens written as text (`<|start|>`) become their ids."""
        return self._loaded.tokenize(text)

    def tokenize_plain(self, text: str) -> list[int]:
        """Token ids of text with special-token spellings kept as text (message contents, tool results)."""
        from gptoss_cli.engine.harmony import plain_pieces

        return [t for piece in plain_pieces(text) for t in self._loaded.tokenize(piece, special=False)]

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token; special tokens give their text (`<|end|>`)."""
        n = self._lc.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, -n, 0, True)
            return buf.raw[:n]
        return self._piece.raw[:n]

    def grammar_tokenizer(self):
        """llguidance's tokenizer for this vocabulary (engine/structured.py), built on first use."""
        from gptoss_cli.engine import structured

        with self._grammar_lock:
            if self._grammar_tok is None:
                self._grammar_tok = structured.tokenizer(structured.vocab_pieces(self._vocab, self.n_vocab))
            return self._grammar_tok

    # --- generation -------------------------------------------------------------------------------

    def generate(self, prompt: list[int], *, temperature: float, top_p: float, max_tokens: int,
                 stop: set[int], control: Controller | None = None) -> Generator[int, None, None]:
        """Sample ids after prompt, reusing the cached prefix; a stop id is yielded, then it ends.
        With `control`, its forced tokens are yielded and decoded like sampled ones (engine/constrain.py)."""
        lc = self._lc
        if not prompt:
            raise BadInputError(None, "empty prompt")
        if len(prompt) >= self.n_ctx:
            raise ContextFull(None, f"the prompt is {len(prompt)} tokens, the context holds {self.n_ctx}",
                              "Start a new conversation or raise --ctx-size")
        sampler = Sampler(self.n_vocab, temperature=temperature, top_p=top_p, seed=self.opts.seed)
        sample, chains = sampler.sample, GrammarChains(self.grammar_tokenizer, sampler)
        try:
            self._feed(prompt)
            one = (ctypes.c_int32 * 1)()
            decode, get_one = lc.llama_decode, lc.llama_batch_get_one
            ctx, cached, n_ctx = self._ctx, self._cached, self.n_ctx
            forced = control.begin() if control is not None else []
            for i in range(max_tokens):
                if forced:
                    token = forced.pop(0)
                elif control is None:
                    token = sample(ctx, -1)
                else:
                    grammar = control.grammar if control.grammar_active else None
                    token = control.choose(chains.sample(grammar, ctx, -1) if grammar is not None else sample(ctx, -1))
                if control is not None:
                    forced += control.commit(token)
                yield token
                if token in stop or len(cached) >= n_ctx:
                    return
                if i == 0:
                    self._save_window()  # here, after the first token is out, it costs no time to first token
                one[0] = token
                rc = decode(ctx, get_one(one, 1))
                if rc != 0:
                    raise RunFailure(self.model_path, f"llama_decode failed with code {rc}")
                cached.append(token)
        finally:
            chains.close()

    def _feed(self, prompt: list[int]) -> None:
        """Decode the part of prompt the cache lacks, leaving the last token's logits ready."""
        lc = self._lc
        n_past = common_prefix(self._cached, prompt)
        n_past = min(n_past, len(prompt) - 1)  # the last prompt token is always decoded for fresh logits
        if not lc.llama_memory_seq_rm(self._mem, 0, n_past, -1):
            n_past = 0
        elif not swa_covers(lc, self._mem, 0, n_past, self.n_swa):
            n_past = self._restore_window(prompt, n_past)
        if n_past == 0:
            lc.llama_memory_clear(self._mem, True)
        del self._cached[n_past:]
        self.reused_tokens = n_past
        todo = prompt[n_past:]
        arr = (ctypes.c_int32 * len(todo))(*todo)
        step = min(2048, self.n_ctx)
        for start in range(0, len(todo), step):
            n = min(step, len(todo) - start)
            ptr = ctypes.cast(ctypes.byref(arr, start * 4), ctypes.POINTER(ctypes.c_int32))
            rc = lc.llama_decode(self._ctx, lc.llama_batch_get_one(ptr, n))
            if rc != 0:
                raise RunFailure(self.model_path, f"llama_decode failed on the prompt with code {rc}",
                                 "Try a smaller --ctx-size or prompt")
            self._cached.extend(todo[start:start + n])

    def _save_window(self) -> None:
        """Copy the sliding-window cache as it stands at the end of the prompt (llama-server's context
        checkpoint): a reply longer than the window evicts it, and the next turn shares exactly that prefix."""
        lc = self._lc
        if self.n_swa <= 0 or SWA_FULL or not hasattr(lc, "llama_state_seq_get_data_ext"):
            return
        flags = lc.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        size = lc.llama_state_seq_get_size_ext(self._ctx, 0, flags)
        if self._window_buf is None or len(self._window_buf) < size:
            self._window_buf = (ctypes.c_uint8 * size)()
        n = lc.llama_state_seq_get_data_ext(self._ctx, self._window_buf, size, 0, flags)
        self._window = (list(self._cached), n) if n else None

    def _restore_window(self, prompt: list[int], n_past: int) -> int:
        """Put back the saved window if prompt extends its prefix; the new n_past, 0 if it cannot."""
        lc = self._lc
        if self._window is None:
            return 0
        tokens, size = self._window
        n = len(tokens)
        if n > n_past or prompt[:n] != tokens:
            return 0
        flags = lc.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        if lc.llama_state_seq_set_data_ext(self._ctx, self._window_buf, size, 0, flags) != size:
            return 0
        lc.llama_memory_seq_rm(self._mem, 0, n, -1)
        return n if swa_covers(lc, self._mem, 0, n, self.n_swa) else 0

    def close(self) -> None:
        """Free the context and model (idempotent)."""
        lc = self._lc
        if self.opts.verbose:
            stop_echo()
        if self._ctx:
            lc.llama_free(self._ctx)
            self._ctx = None
        if self._pool is not None:   # after the context that used it
            pool, free = self._pool
            free(pool)
            self._pool = None
        if self._model:
            self._model.close()
            self._model = None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def attach_threadpool(ctx, n_threads: int):
    """Give the context a persistent CPU threadpool, as llama.cpp's tools (llama-cli, llama-server,
    llama-bench) do: without one every llama_decode starts and joins its worker threads. (pool, free) or None."""
    import llama_cpp.llama_cpp as llama

    from gptoss_cli.engine import ggml

    made = ggml.threadpool_new(n_threads)
    if made is not None:
        fn = llama._lib.llama_attach_threadpool
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], None
        fn(ctx, made[0], None)
    return made
