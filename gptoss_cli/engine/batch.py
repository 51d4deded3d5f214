"""Continuous batching: several requests decoded together in one llama.cpp context (serve's engine).

Each slot is one llama.cpp sequence with its own sampler, constraint controller and prefix cache (the
tokens whose K/V it holds). Every step carries the next token of every generating slot plus prompt chunks
of slots still reading their prompt, in one `llama_decode`; jobs join and leave between steps. The loop
runs in one thread; `submit`, `cancel` and `health` may be called from any other.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from converters.errors import BadInputError
from gptoss_cli.engine.backend import Backend, BackendOptions, ContextFull, common_prefix
from gptoss_cli.engine.constrain import GrammarChains
from gptoss_cli.engine.harmony import STOP_IDS
from gptoss_cli.engine.jobs import Job, QueueFull, ShuttingDown
from gptoss_cli.engine.sampling import Sampler


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)   # tokens whose K/V this sequence holds, in order
    job: Job | None = None
    todo: list[int] = field(default_factory=list)     # prompt tokens still to decode
    next_token: int | None = None                     # the committed token to decode next step
    forced: list[int] = field(default_factory=list)
    sampler: Sampler | None = None
    chains: GrammarChains | None = None
    last_used: float = 0.0


class BatchEngine:
    """A loaded model with `parallel` slots and a waiting queue of `queue` jobs."""

    def __init__(self, model_path: Path, opts: BackendOptions, parallel: int = 4, queue: int = 16,
                 chunk: int | None = None) -> None:
        import llama_cpp as lc

        if parallel < 1:
            raise BadInputError(None, f"--parallel must be >= 1, got {parallel}")
        self._lc = lc
        opts.parallel = parallel
        self.backend = Backend(model_path, opts)
        self._ctx, self._vocab = self.backend._ctx, self.backend._vocab
        self._mem = lc.llama_get_memory(self._ctx)
        self._n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_seq: int = lc.llama_n_ctx_seq(self._ctx)
        self.n_swa = self.backend.n_swa
        self.n_batch = min(2048, self.n_ctx_seq)
        self.chunk = min(chunk or self.n_batch, self.n_batch)   # most prompt tokens one step takes
        self._batch = lc.llama_batch_init(self.n_batch, 0, parallel)
        self._slots = [_Slot(i) for i in range(parallel)]
        self._waiting: deque[Job] = deque()
        self.queue_size = queue
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gptoss-batch", daemon=True)
        self._thread.start()

    # --- any thread -------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of text, special tokens parsed."""
        return self.backend.tokenize(text)

    def submit(self, job: Job) -> None:
        """Queue a job; ContextFull if its prompt does not fit a slot, QueueFull if nothing is free."""
        if not job.prompt:
            raise BadInputError(None, "empty prompt")
        if len(job.prompt) >= self.n_ctx_seq:
            raise ContextFull(None, f"the prompt is {len(job.prompt)} tokens, a request may use {self.n_ctx_seq}",
                              "Shorten the conversation or raise --ctx-size")
        job.max_tokens = max(1, min(job.max_tokens, self.n_ctx_seq - len(job.prompt)))
        with self._cv:
            if self._stopping:
                raise ShuttingDown(None, "the server is shutting down")
            busy = sum(s.job is not None for s in self._slots)
            if busy + len(self._waiting) >= len(self._slots) + self.queue_size:
                raise QueueFull(None, f"all {len(self._slots)} slots are busy and {len(self._waiting)} requests wait",
                                "Retry later, or start the server with a larger --parallel or --queue")
            self._waiting.append(job)
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job at the next step (its slot is freed; on_end gets "cancelled")."""
        job.cancelled = True
        with self._cv:
            self._cv.notify()

    def health(self) -> dict:
        """Slot and queue counts."""
        with self._cv:
            busy = sum(s.job is not None for s in self._slots)
            return {"slots_busy": busy, "slots_free": len(self._slots) - busy, "queued": len(self._waiting)}

    def stop(self) -> None:
        """Refuse new jobs and end every open one ("shutdown") at the next step; the model stays loaded."""
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def fail_open(self, reason: str) -> None:
        """End every open and waiting job with reason ("error: why") and refuse new ones. Only for a fault
        handler running on the engine thread, stuck inside llama.cpp until the process exits."""
        with self._cv:
            self._stopping = True
            waiting, self._waiting = list(self._waiting), deque()
        for job in [s.job for s in self._slots if s.job is not None] + waiting:
            try:
                job.on_end(reason)
            except Exception:  # noqa: BLE001 - every job is told, whatever one consumer does
                pass

    def close(self) -> None:
        """End every job ("shutdown"), stop the loop, free the model (idempotent)."""
        self.stop()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        if self._batch is not None:
            self._lc.llama_batch_free(self._batch)
            self._batch = None
        self.backend.close()

    # --- engine thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._stopping and not self._waiting and not any(s.job for s in self._slots):
                        self._cv.wait()
                    if self._stopping:
                        break
                    self._admit()
                for slot in self._slots:
                    if slot.job is not None and slot.job.cancelled:
                        self._end(slot, "cancelled")
                if any(s.job for s in self._slots):
                    try:
                        self._step()
                    except Exception as exc:  # noqa: BLE001 - fail the open jobs, keep serving the next ones
                        for slot in self._slots:
                            if slot.job is not None:
                                self._lc.llama_memory_seq_rm(self._mem, slot.seq, 0, -1)
                                slot.cached.clear()
                                self._end(slot, f"error: {type(exc).__name__}: {exc}")
        finally:
            with self._cv:
                waiting, self._waiting = list(self._waiting), deque()
            for job in waiting:
                job.on_end("shutdown")
            for slot in self._slots:
                if slot.job is not None:
                    self._end(slot, "shutdown")

    def _admit(self) -> None:
        while self._waiting:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._waiting.popleft()
            if job.cancelled:
                job.on_end("cancelled")
                continue
            slot = max(free, key=lambda s: (common_prefix(s.cached, job.prompt), -s.last_used))
            try:
                self._start(slot, job)
            except Exception as exc:  # noqa: BLE001 - reported to the request, the engine goes on
                self._end(slot, f"error: {exc}")

    def _start(self, slot: _Slot, job: Job) -> None:
        lc = self._lc
        slot.job = job
        if job.on_start is not None:
            job.on_start()
        n_past = min(common_prefix(slot.cached, job.prompt), len(job.prompt) - 1)
        if not lc.llama_memory_seq_rm(self._mem, slot.seq, n_past, -1) or not self._swa_covers(slot.seq, n_past):
            n_past = 0
            lc.llama_memory_seq_rm(self._mem, slot.seq, 0, -1)
        del slot.cached[n_past:]
        job.reused_tokens = n_past
        slot.todo = job.prompt[n_past:]
        slot.next_token = None
        slot.sampler = Sampler(self._n_vocab, temperature=job.temperature, top_p=job.top_p, seed=job.seed)
        ctl = job.control
        if ctl is not None:
            slot.chains = GrammarChains(self._vocab, slot.sampler)
        slot.forced = ctl.begin() if ctl is not None else []

    def _swa_covers(self, seq: int, n_past: int) -> bool:
        if n_past == 0 or self.n_swa <= 0:
            return True
        pos_min = self._lc.llama_memory_seq_pos_min(self._mem, seq)
        return 0 <= pos_min <= max(0, n_past - self.n_swa)

    def _step(self) -> None:
        b, n, outputs = self._batch, 0, []
        for slot in self._slots:   # one token for every generating slot
            if slot.job is not None and slot.next_token is not None:
                n = self._add(n, slot.next_token, len(slot.cached), slot.seq, not slot.forced)
                slot.cached.append(slot.next_token)
                slot.next_token = None
                outputs.append((slot, n - 1))
        for slot in self._slots:   # prompt chunks fill the rest of the batch
            if slot.job is None or not slot.todo or n >= self.n_batch:
                continue
            chunk = slot.todo[:min(self.n_batch - n, self.chunk)]
            last = len(chunk) == len(slot.todo)
            for i, token in enumerate(chunk):
                n = self._add(n, token, len(slot.cached) + i, slot.seq,
                              last and i == len(chunk) - 1 and not slot.forced)
            slot.cached.extend(chunk)
            del slot.todo[:len(chunk)]
            if last:
                outputs.append((slot, n - 1))
        b.n_tokens = n
        rc = self._lc.llama_decode(self._ctx, b)
        if rc != 0:   # every sequence in this batch may be half-written: drop their caches
            for slot in self._slots:
                if slot.job is not None:
                    self._lc.llama_memory_seq_rm(self._mem, slot.seq, 0, -1)
                    slot.cached.clear()
                    self._end(slot, f"error: llama_decode failed with code {rc}")
            return
        for slot, idx in outputs:
            try:
                self._next(slot, idx)
            except Exception as exc:  # noqa: BLE001 - e.g. a grammar llama.cpp refuses: this job only
                self._end(slot, f"error: {exc}")

    def _add(self, n: int, token: int, pos: int, seq: int, logits: bool) -> int:
        b = self._batch
        b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = token, pos, 1, logits
        b.seq_id[n][0] = seq
        return n + 1

    def _next(self, slot: _Slot, idx: int) -> None:
        """The token after output idx, and every forced token that follows it: they all go out now and are
        decoded together next step (a forced harmony header costs one step, not one per token)."""
        job, sampler = slot.job, slot.sampler
        assert job is not None and sampler is not None, "only a slot with a job has outputs"
        ctl = job.control
        if slot.forced:
            token = slot.forced.pop(0)
        else:
            grammar = ctl.grammar if ctl is not None and ctl.grammar_active else None
            if grammar is not None and slot.chains is not None:  # chains: set for every job with a control
                token = slot.chains.sample(grammar, self._ctx, idx)
            else:
                token = sampler.sample(self._ctx, idx)
            if ctl is not None:
                token = ctl.choose(token)
        run = [token]
        while True:
            if ctl is not None:
                slot.forced += ctl.commit(token)
            job.gen_tokens += 1
            if job.t_first is None:
                job.t_first = time.perf_counter()
            try:
                keep = job.on_token(token)
            except Exception as exc:  # noqa: BLE001 - a broken consumer ends its own job only
                self._end(slot, f"error: {exc}")
                return
            if token in STOP_IDS or not keep:
                self._end(slot, "stop")
                return
            if job.gen_tokens >= job.max_tokens or len(slot.cached) + len(run) >= self.n_ctx_seq:
                self._end(slot, "length")
                return
            if not slot.forced:
                break
            token = slot.forced.pop(0)
            run.append(token)
        if len(run) == 1:
            slot.next_token = token
        else:
            slot.todo = run   # decoded like a prompt chunk, logits for the last token only

    def _end(self, slot: _Slot, reason: str) -> None:
        job = slot.job
        if slot.chains is not None:
            slot.chains.close()
        slot.sampler = slot.chains = slot.next_token = None
        slot.job, slot.todo, slot.forced, slot.last_used = None, [], [], time.perf_counter()
        if job is not None:
            try:
                job.on_end(reason)
            except Exception:  # noqa: BLE001 - the slot is free whatever the consumer does
                pass
