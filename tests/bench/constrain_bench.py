"""Per-token cost of constrained sampling over gpt-oss's 201k-token vocabulary: free sampling, gptoss's
llguidance masks (engine/structured.py), and the GBNF path gptoss used before (llama-cpp-python's schema
converter and llama.cpp's grammar sampler, reproduced here as it was).

    python -m tests.bench.constrain_bench FIXTURE.gguf [--seeds 2] [--max-tokens 96]

Each schema of tests/schema_suite.py (but the long ones) is answered from the same prompt, opened at the
final channel, with each sampler and seed; the same random-weight model decodes every token. A row gives the
sampling time per token (the decode step excluded) and how many answers finished valid for their schema
(jsonschema with format checks). All three samplers use the same draw: sample the free distribution, check
that token, and only when it is refused filter the vocabulary and draw again.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

FINAL = "<|start|>assistant<|channel|>final<|message|>"


class _Gbnf:
    """The former GrammarSampler: llama.cpp's grammar sampler on llama-cpp-python's GBNF."""

    def __init__(self, vocab, schema: dict, sampler) -> None:
        import llama_cpp as lc
        import numpy as np
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        from gptoss_cli.engine.harmony import FIRST_SPECIAL_ID, STOP_IDS

        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # noqa: BLE001 - the converter raises bare exceptions (KeyError on $defs)
            raise ValueError(f"the converter refused the schema: {exc!r}") from None
        gbnf = gbnf.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |')
        self._lc, self._sampler, self._stop = lc, sampler, STOP_IDS
        self._grammar = lc.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self._grammar:
            raise ValueError("llama.cpp refused the grammar")
        self.n_vocab = lc.llama_vocab_n_tokens(vocab)
        self._first_special = FIRST_SPECIAL_ID
        self._one = (lc.llama_token_data * 1)()
        self._one_arr = lc.llama_token_data_array(self._one, 1, -1, False)
        self._all = np.zeros(self.n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._banned = np.array([t for t in range(FIRST_SPECIAL_ID, self.n_vocab) if t not in STOP_IDS])

    def allows(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._one_arr.size, self._one_arr.selected, self._one_arr.sorted = 1, -1, False
        self._lc.llama_sampler_apply(self._grammar, ctypes.byref(self._one_arr))
        return self._one[0].logit != float("-inf")

    def choose(self, logits) -> int:
        import numpy as np

        token = self._sampler.draw(logits)
        if not ((token < self._first_special or token in self._stop) and self.allows(token)):
            cand = self._all
            cand["id"] = self._ids
            cand["logit"] = logits
            cand["logit"][self._banned] = -np.inf
            lc = self._lc
            arr = lc.llama_token_data_array(cand.ctypes.data_as(lc.llama_token_data_p), self.n_vocab, -1, False)
            lc.llama_sampler_apply(self._grammar, ctypes.byref(arr))
            token = int(cand["id"][self._sampler.draw(cand["logit"])])
        self._lc.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        self._lc.llama_sampler_free(self._grammar)


class _Free:
    def __init__(self, sampler) -> None:
        self._sampler = sampler

    def choose(self, logits) -> int:
        return self._sampler.draw(logits)

    def close(self) -> None:
        pass


def _answer(backend, prompt: list[int], make, seed: int, max_tokens: int) -> tuple[str | None, int, float]:
    """One answer: its text (None if cut), tokens sampled, seconds spent sampling."""
    import llama_cpp as lc

    from gptoss_cli.engine.harmony import STOP_IDS
    from gptoss_cli.engine.sampling import Sampler

    sampler = Sampler(backend.n_vocab, temperature=1.0, top_p=1.0, seed=seed)
    chooser = make(sampler)
    backend._feed(prompt)
    one = (ctypes.c_int32 * 1)()
    out: list[int] = []
    spent = 0.0
    try:
        for _ in range(max_tokens):
            logits = sampler.logits(backend._ctx, -1)
            t0 = time.perf_counter()
            token = chooser.choose(logits)
            spent += time.perf_counter() - t0
            if token in STOP_IDS:
                return b"".join(backend.token_bytes(t) for t in out).decode("utf-8", "replace"), len(out) + 1, spent
            out.append(token)
            one[0] = token
            lc.llama_decode(backend._ctx, lc.llama_batch_get_one(one, 1))
            backend._cached.append(token)
        return None, len(out), spent
    finally:
        chooser.close()


def _valid(text: str | None, schema: dict, check) -> bool:
    """Whether a finished answer is valid for its schema (jsonschema with format checks)."""
    import jsonschema

    if text is None:
        return False
    try:
        jsonschema.validate(json.loads(text), schema, format_checker=check)
    except Exception:  # noqa: BLE001 - any failure is an invalid answer (1e999 even breaks multipleOf)
        return False
    return True


def run(gguf: Path, seeds: int = 2, max_tokens: int = 96) -> dict:
    """Every sampler on every bounded suite schema; rows of per-token cost and valid answers."""
    import jsonschema

    from gptoss_cli.engine import harmony, structured
    from gptoss_cli.engine.backend import Backend, BackendOptions
    from tests.bench.prune_stats_bench import cpu_model
    from tests.schema_suite import LONG, SCHEMAS

    backend = Backend(gguf, BackendOptions(ctx_size=1024, seed=0, gpu_layers=0, threads=1))
    t0 = time.perf_counter()
    tok = backend.grammar_tokenizer()
    tokenizer_s = time.perf_counter() - t0
    prompt = backend.tokenize(harmony.render_prompt([harmony.Message("user", "Answer in JSON.")])[
        :-len("<|start|>assistant")] + FINAL)
    check = jsonschema.Draft202012Validator.FORMAT_CHECKER
    schemas = {k: v for k, v in SCHEMAS.items() if k not in LONG}
    modes = {
        "free": lambda schema: (lambda s: _Free(s)),
        "llguidance": lambda schema: (lambda s: structured.MaskedSampler(tok, structured.compile_schema(schema), s)),
        "gbnf (before)": lambda schema: (lambda s: _Gbnf(backend._vocab, schema, s)),
    }
    rows = []
    try:
        for mode, maker in modes.items():
            tokens = answers = valid = refused = cut = 0
            spent = 0.0
            for schema in schemas.values():
                for seed in range(1, seeds + 1):
                    try:
                        text, n, s = _answer(backend, prompt, maker(schema), seed, max_tokens)
                    except ValueError:
                        refused += 1
                        continue
                    tokens, spent, answers, cut = tokens + n, spent + s, answers + 1, cut + (text is None)
                    valid += _valid(text, schema, check)
            rows.append({"sampler": mode, "answers": answers, "valid": valid, "refused": refused, "cut": cut,
                         "tokens": tokens, "us_per_token": round(spent / max(tokens, 1) * 1e6)})
    finally:
        backend.close()
    return {"cpu": cpu_model(), "vocab": backend.n_vocab, "schemas": len(schemas), "seeds": seeds,
            "max_tokens": max_tokens, "tokenizer_build_s": round(tokenizer_s, 2), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    print(json.dumps(run(args.gguf, args.seeds, args.max_tokens), indent=2))


if __name__ == "__main__":
    main()
