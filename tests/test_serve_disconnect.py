"""A client that hangs up mid-generation ends its job at once: its slot is free within ~2 s and the server
generated far fewer tokens than the request allowed.

The jobs cannot finish on their own in that time: 4000 greedy tokens in an 8192-token slot take the tiny
model tens of seconds here. That the job was ended by the hang-up and not by a stop token of its own is
checked afterwards: the same greedy request, allowed a few tokens more than the job got, still ends by length.
"""

from __future__ import annotations

import json
import time

import pytest
from serveutil import start, stop

MAX_TOKENS = 4000
FREED_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def served(tiny_gguf):
    s = start(tiny_gguf, "-c", "8192", "--parallel", "1")
    yield s
    assert stop(s) == 130


def _body(prompt: str, max_tokens: int, stream: bool) -> str:
    return json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0, "stream": stream})


def _send(served, prompt: str, stream: bool):
    conn = served.connect(timeout=120)
    conn.request("POST", "/v1/chat/completions", body=_body(prompt, MAX_TOKENS, stream),
                 headers={"Content-Type": "application/json"})
    return conn


def _freed_after_hang_up(served, before: int) -> int:
    """Tokens the job generated, once /health shows its slot free; fails if that takes over FREED_WITHIN_S."""
    hung_up = time.monotonic()
    while True:
        health = served.health()
        if health["slots_busy"] == 0:
            break
        assert time.monotonic() - hung_up < FREED_WITHIN_S, f"slot still busy after the hang-up: {health}"
        time.sleep(0.02)
    return health["tokens_generated"] - before


def _ends_by_length_after(served, prompt: str, n: int) -> None:
    """The same greedy request allowed n tokens runs all n: no stop token of its own came by then."""
    status, raw = served.request("POST", "/v1/chat/completions", _body(prompt, n, False).encode(),
                                 {"Content-Type": "application/json"}, timeout=300)
    answer = json.loads(raw)
    assert status == 200 and answer["choices"][0]["finish_reason"] == "length", answer
    assert answer["usage"]["completion_tokens"] == n


def test_a_stream_hung_up_after_a_content_delta_frees_its_slot(served):
    prompt = "Tell me a long story."
    before = served.generated()
    conn = _send(served, prompt, stream=True)
    response = conn.getresponse()
    assert response.status == 200
    while True:   # the role chunk comes before any token: wait for text the model wrote
        line = response.readline()
        assert line, "the stream ended before any content"
        if line.startswith(b"data: {"):
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content") or delta.get("reasoning_content"):
                break
    conn.close()
    generated = _freed_after_hang_up(served, before)
    assert 0 < generated < MAX_TOKENS // 10
    _ends_by_length_after(served, prompt, generated + 20)


def test_a_plain_request_whose_client_gives_up_frees_its_slot(served):
    prompt = "Count to a million, one number a line."
    before = served.generated()
    conn = _send(served, prompt, stream=False)
    started = time.monotonic()
    while served.generated() - before < 5:   # it is generating: the client gives up
        assert time.monotonic() - started < 120, "the request never started generating"
        time.sleep(0.02)
    conn.close()
    generated = _freed_after_hang_up(served, before)
    assert 5 <= generated < MAX_TOKENS // 10
    _ends_by_length_after(served, prompt, generated + 20)
