"""What a request hands to the client from a token stream: reasoning, content and the tool call, with no
control token ever in the text, over normal and quirky harmony streams (scripted tokens from the model's own
tokenizer through the real parser; the engine is the seam that is replaced)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from oracles import o200k_harmony

from gptoss_cli.serve.generation import Generation, StopText


def _enc():
    return o200k_harmony()


class ScriptedEngine:
    """Stands in for BatchEngine: submit() plays a token script into the job's callbacks."""

    def __init__(self, script: str, end: str) -> None:
        self.tokens = _enc().encode(script, allowed_special="all")
        self.end = end
        self.backend = SimpleNamespace(token_bytes=_enc().decode_single_token_bytes)

    def submit(self, job) -> None:
        for token in self.tokens:
            if not job.on_token(token):
                job.on_end("stop")
                return
        job.on_end(self.end)

    def cancel(self, job) -> None:
        job.cancelled = True


def _run(script: str, end: str = "stop", stop: list[str] | None = None):
    async def go():
        gen = Generation(ScriptedEngine(script, end), [1, 2, 3], max_tokens=100, temperature=1.0, top_p=1.0,
                         seed=None, control=None, stop=stop or [])
        gen.start()
        events = [e async for e in gen.events()]
        return gen.out, events

    return asyncio.run(go())


CASES = {
    # script, reasoning, content, call name, call arguments, finish reason
    "answer": ("<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Hi!<|return|>",
               "Think.", "Hi!", None, None, "stop"),
    "call": ("<|channel|>analysis<|message|>Need it.<|end|><|start|>assistant<|channel|>commentary "
             'to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}<|call|>',
             "Need it.", "", "get_weather", '{"city":"Oslo"}', "tool_calls"),
    "call_in_analysis_channel": ('<|channel|>analysis to=functions.get_weather<|message|>{"city":"Oslo"}<|call|>',
                                 "", "", "get_weather", '{"city":"Oslo"}', "tool_calls"),
    "no_constrain": ('<|channel|>commentary to=functions.get_weather<|message|>{"city":"Oslo"}<|call|>',
                     "", "", "get_weather", '{"city":"Oslo"}', "tool_calls"),
    "no_call_token": ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}'
                      "<|end|>", "", "", "get_weather", '{"city":"Oslo"}', "tool_calls"),
    "recipient_before_channel": ('<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>'
                                 '{"city":"Oslo"}<|call|>', "", "", "get_weather", '{"city":"Oslo"}', "tool_calls"),
    "stop_mid_header": ("<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>fin",
                        "Hm.", None, None, None, "length"),
    "no_header_at_all": ("Just text.<|return|>", "", "Just text.", None, None, "stop"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_streams_split_into_reasoning_content_and_call_without_leaks(case):
    script, reasoning, content, name, args, finish = CASES[case]
    out, events = _run(script, end="length" if finish == "length" else "stop")
    assert out.reasoning == reasoning
    if content is not None:
        assert out.content == content
    assert (out.call.name if out.call else None) == name
    assert (out.call.arguments if out.call else None) == args
    assert out.finish_reason == finish
    streamed = "".join(e.text for e in events if e.kind in ("reasoning", "content"))
    assert "<|" not in streamed and "<|" not in out.content and "<|" not in out.reasoning
    assert streamed == out.reasoning + out.content   # a call's arguments are never streamed as text
    calls = [e for e in events if e.kind == "call"]
    assert "".join(e.text for e in calls) == (args or "")   # they stream as they come, under the tool's name
    assert {e.name for e in calls} <= {name}
    assert events[-1].kind == "end"


def test_stop_strings_cut_the_answer_even_across_tokens():
    out, events = _run("<|channel|>final<|message|>one two three four<|return|>", stop=["thr"])
    assert out.content == "one two " and out.finish_reason == "stop"
    assert "".join(e.text for e in events if e.kind == "content") == "one two "


def test_stop_text_holds_back_only_what_may_begin_a_stop():
    s = StopText(["END!"])
    assert s.feed("abc E") == "abc "
    assert s.feed("N") == ""
    assert s.feed("x") == "ENx"
    assert s.feed("..END!tail") == ".." and s.hit
