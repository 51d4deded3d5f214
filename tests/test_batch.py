"""The continuous-batching engine on the tiny GGUF: several requests decoded together give exactly what one
request alone gives (greedy), prompts fed in chunks share steps with generating slots, slots keep their prefix
cache, cancelled and queued jobs end cleanly."""

from __future__ import annotations

import threading

import pytest

from gptoss_cli.engine import harmony
from gptoss_cli.engine.backend import Backend, BackendOptions, ContextFull
from gptoss_cli.engine.batch import BatchEngine
from gptoss_cli.engine.jobs import Job, QueueFull

pytest.importorskip("llama_cpp")
# Flash attention off: llama.cpp's CPU flash-attention kernel rounds differently with the number of tokens in a
# step (up to 0.12 in the fixture's logits between a 66-token prompt fed whole or in two pieces), which flips
# near-tie greedy picks of random weights; without it a prompt fed in chunks gives bit-identical logits.
OPTS = dict(ctx_size=512, gpu_layers=0, threads=1, flash_attn="off")


def _prompt(tok, i: int) -> list[int]:
    return tok(harmony.render_prompt([harmony.Message("user", f"Question {i}: " + "why " * (5 + 9 * i))]))


class Run:
    """Collects one job's tokens and end reason."""

    def __init__(self, prompt: list[int], max_tokens: int, stop_after: int | None = None) -> None:
        self.tokens: list[int] = []
        self.reason: str | None = None
        self.done = threading.Event()
        self.stop_after = stop_after
        self.job = Job(prompt, max_tokens, self._token, self._end, temperature=0.0)

    def _token(self, token: int) -> bool:
        self.tokens.append(token)
        return self.stop_after is None or len(self.tokens) < self.stop_after

    def _end(self, reason: str) -> None:
        self.reason = reason
        self.done.set()


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    e = BatchEngine(tiny_gguf, BackendOptions(**OPTS), parallel=3, queue=2, chunk=16)
    yield e
    e.close()


def test_batched_greedy_equals_one_request_alone(engine, tiny_gguf):
    runs = [Run(_prompt(engine.tokenize, i), 24) for i in range(5)]   # 3 slots, 2 wait; prompts up to ~60 tokens
    before = engine.health()["tokens_generated"]
    for r in runs:
        engine.submit(r.job)
    for r in runs:
        assert r.done.wait(120)
    generated = engine.health()["tokens_generated"] - before
    assert generated == sum(len(r.tokens) for r in runs)
    with Backend(tiny_gguf, BackendOptions(**OPTS)) as alone:
        for r in runs:
            ref = list(alone.generate(r.job.prompt, temperature=0.0, top_p=1.0, max_tokens=24,
                                      stop=set(harmony.STOP_IDS)))
            assert r.tokens == ref
            assert r.reason == ("stop" if ref[-1] in harmony.STOP_IDS else "length")
    assert engine.health() == {"slots_busy": 0, "slots_free": 3, "queued": 0, "tokens_generated": before + generated}


def test_a_slot_reuses_its_prefix_and_a_consumer_can_end_a_job(engine):
    prompt = _prompt(engine.tokenize, 7)
    first = Run(prompt, 8, stop_after=3)
    engine.submit(first.job)
    assert first.done.wait(60) and first.reason == "stop" and len(first.tokens) == 3
    again = Run(prompt, 4)
    engine.submit(again.job)
    assert again.done.wait(60)
    assert again.job.reused_tokens == len(prompt) - 1


def test_cancel_full_queue_and_context(engine):
    runs = [Run(_prompt(engine.tokenize, i), 400) for i in range(5)]
    for r in runs:
        engine.submit(r.job)
    with pytest.raises(QueueFull):
        engine.submit(Run(_prompt(engine.tokenize, 9), 4).job)
    for r in runs:
        engine.cancel(r.job)
    for r in runs:
        assert r.done.wait(60) and r.reason == "cancelled"
    health = engine.health()
    assert {k: health[k] for k in ("slots_busy", "slots_free", "queued")} == {"slots_busy": 0, "slots_free": 3,
                                                                              "queued": 0}
    with pytest.raises(ContextFull):
        engine.submit(Run(list(range(1000, 1000 + engine.n_ctx_seq)), 4).job)


def test_forced_tokens_decoded_together_give_what_one_at_a_time_gives(engine, tiny_gguf):
    """A forced header goes out at once and is decoded in one step; the reply equals chat's loop, which
    decodes forced tokens one per step (greedy, the grammar answer included)."""
    from gptoss_cli.engine.constrain import Constraint, Controller

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
              "required": ["ok", "n"]}
    prompt = _prompt(engine.tokenize, 3)
    r = Run(prompt, 60)
    r.job.control = Controller(Constraint(schema=schema, thinking_budget=5), engine.tokenize,
                               engine.backend.token_bytes)
    engine.submit(r.job)
    assert r.done.wait(60) and r.reason == "stop"
    with Backend(tiny_gguf, BackendOptions(**OPTS)) as alone:
        ctl = Controller(Constraint(schema=schema, thinking_budget=5), alone.tokenize, alone.token_bytes)
        ref = list(alone.generate(prompt, temperature=0.0, top_p=1.0, max_tokens=60, stop=set(harmony.STOP_IDS),
                                  control=ctl))
    assert r.tokens == ref and ref[-1] == harmony.RETURN
