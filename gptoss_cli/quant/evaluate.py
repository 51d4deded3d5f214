"""`gptoss eval`: KL divergence, top-1 agreement and perplexity of GGUFs against a reference GGUF.

The text is cut into chunks of --ctx-size tokens; as llama-perplexity does, only the second half of each
chunk is scored, so every scored token has at least ctx/2 tokens of context. The reference runs first and
its logits for the scored positions go to a temporary file, so only one model is in memory at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from converters.errors import BadInputError
from gptoss_cli import paths, ui
from gptoss_cli.engine.scorer import Scorer

ROWS = 32   # positions turned into log-probabilities at once (each row is vocab-sized)


@dataclass
class Scores:
    """One model's numbers on the text; KL and top-1 are against the reference (None for the reference)."""

    path: str
    ppl: float
    kl_mean: float | None = None
    kl_p99: float | None = None
    top1: float | None = None


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def chunk_positions(n_tokens: int, ctx: int) -> list[tuple[int, int]]:
    """(start, first scored offset) of each whole chunk: offsets ctx//2 .. ctx-2 predict the next token."""
    return [(c * ctx, ctx // 2) for c in range(n_tokens // ctx)]


def _load(path: Path, ctx: int, threads: int | None) -> Scorer:
    return Scorer(path, ctx, threads=threads)


def _scored_logits(llm: Scorer, tokens: list[int], start: int, first: int, ctx: int) -> np.ndarray:
    """Logits [ctx - 1 - first, vocab] of the positions that predict tokens start+first+1 .. start+ctx-1."""
    logits = llm.run(tokens[start:start + ctx])
    assert logits is not None  # _load's Scorer keeps all logits
    return logits[first:ctx - 1]


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = np.empty(len(targets))
    for i in range(0, len(targets), ROWS):
        lp = log_softmax(logits[i:i + ROWS])
        out[i:i + ROWS] = -lp[np.arange(len(lp)), targets[i:i + ROWS]]
    return out


def kl_rows(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position KL(ref || test) in nats and whether the argmax agrees."""
    kl, same = np.empty(len(ref)), np.empty(len(ref), bool)
    for i in range(0, len(ref), ROWS):
        lp, lq = log_softmax(ref[i:i + ROWS]), log_softmax(test[i:i + ROWS])
        kl[i:i + ROWS] = (np.exp(lp) * (lp - lq)).sum(axis=-1)
        same[i:i + ROWS] = ref[i:i + ROWS].argmax(-1) == test[i:i + ROWS].argmax(-1)
    return kl, same


@dataclass
class Reference:
    """The reference's logits at the scored positions of the text, and what a test file is scored on."""

    logits: np.ndarray        # [scored tokens, vocab], float32 (a memory-mapped temporary file)
    tokens: list[int]
    chunks: list[tuple[int, int]]
    targets: np.ndarray       # the token each scored position predicts
    ctx: int
    n_vocab: int


def evaluate(reference: Path, tests: list[Path], text: str, *, ctx: int = 512, threads: int | None = None,
             max_chunks: int | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Score the reference and each test GGUF on the text; returns the report as plain data."""
    llm = _load(reference, ctx, threads)
    tokens = llm.tokenize(text)
    chunks = chunk_positions(len(tokens), ctx)[:max_chunks]
    if not chunks:
        llm.close()
        raise BadInputError("--text", f"the text has {len(tokens)} tokens, fewer than one chunk of {ctx}",
                            "Use a longer text or a smaller --ctx-size")
    n_vocab, per_chunk = llm.n_vocab, ctx - 1 - ctx // 2
    total = len(chunks) * (1 + len(tests))
    tick = (lambda: progress(1, total)) if progress else (lambda: None)
    targets = np.array([tokens[s + f + 1:s + ctx] for s, f in chunks]).reshape(-1)
    with tempfile.TemporaryDirectory(prefix="gptoss-eval-") as tmp:
        ref_logits = np.lib.format.open_memmap(Path(tmp) / "ref.npy", "w+", np.float32,
                                               (len(targets), n_vocab))
        try:
            for i, (s, f) in enumerate(chunks):
                ref_logits[i * per_chunk:(i + 1) * per_chunk] = _scored_logits(llm, tokens, s, f, ctx)
                tick()
        finally:
            llm.close()
        ref = Reference(ref_logits, tokens, chunks, targets, ctx, n_vocab)
        results = [Scores(str(reference), float(np.exp(_nll(ref_logits, targets).mean())))]
        results += [_score_test(path, ref, threads=threads, tick=tick) for path in tests]
    return {"reference": str(reference), "ctx_size": ctx, "chunks": len(chunks), "scored_tokens": len(targets),
            "results": [asdict(r) for r in results]}


def _score_test(path: Path, ref: Reference, *, threads: int | None, tick: Callable[[], None]) -> Scores:
    """One test GGUF's perplexity, KL and top-1 against the reference, chunk by chunk."""
    llm = _load(path, ref.ctx, threads)
    per_chunk = ref.ctx - 1 - ref.ctx // 2
    kls, same, nll = [], [], []
    try:
        if llm.n_vocab != ref.n_vocab:
            raise BadInputError(path, f"vocabulary of {llm.n_vocab} tokens, the reference has {ref.n_vocab}",
                                "Compare files of the same model")
        for i, (s, f) in enumerate(ref.chunks):
            rows = slice(i * per_chunk, (i + 1) * per_chunk)
            test = _scored_logits(llm, ref.tokens, s, f, ref.ctx)
            kl, agree = kl_rows(ref.logits[rows], test)
            kls.append(kl)
            same.append(agree)
            nll.append(_nll(test, ref.targets[rows]))
            tick()
    finally:
        llm.close()
    kl = np.concatenate(kls)
    return Scores(str(path), float(np.exp(np.concatenate(nll).mean())), float(kl.mean()),
                  float(np.percentile(kl, 99)), float(np.concatenate(same).mean()))


@dataclass
class EvalOptions:
    """Everything `gptoss eval` was asked for."""

    reference: str
    tests: list[str]
    text_file: str                   # --text: evaluation text (`-` reads stdin)
    ctx: int = 512                   # --ctx-size: tokens per chunk
    threads: int | None = None
    max_chunks: int | None = None    # --chunks: evaluate at most this many
    as_json: bool = False
    rpc: str | None = None           # --rpc HOST:PORT,...: workers that take layers (gptoss worker)


def run_eval(opts: EvalOptions) -> dict:
    """Resolve the GGUFs, read the text, evaluate with a progress bar, print a table or JSON.

    With rpc, the workers are registered with llama.cpp before any load: its default device choice then
    spreads every model's layers over them."""
    ref = paths.resolve_gguf(opts.reference)
    test_paths = [paths.resolve_gguf(t) for t in opts.tests]
    text = paths.read_text_arg(opts.text_file, "text file")
    if opts.rpc:
        from gptoss_cli.rpc.client import connect

        connect(opts.rpc)
    with ui.count_progress("evaluating") as advance:
        report = evaluate(ref, test_paths, text, ctx=opts.ctx, threads=opts.threads,
                          max_chunks=opts.max_chunks, progress=advance)
    if opts.as_json:
        ui.print_json(report)
    else:
        render(report)
    return report


def render(report: dict) -> None:
    """The table: one row per file, the reference first."""
    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    rows = []
    for r in report["results"]:
        rows.append((Path(r["path"]).name, fmt(r["kl_mean"], ".6f"), fmt(r["kl_p99"], ".6f"),
                     "-" if r["top1"] is None else f"{100 * r['top1']:.2f}%", f"{r['ppl']:.3f}"))
    ui.table(f"{report['scored_tokens']} tokens scored in {report['chunks']} chunks of {report['ctx_size']} "
             f"(KL vs {Path(report['reference']).name})", ["model", "KL mean", "KL p99", "top-1", "PPL"], rows,
             right=["KL mean", "KL p99", "top-1", "PPL"])
