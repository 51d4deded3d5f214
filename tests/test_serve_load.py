"""`gptoss serve` under load and on shutdown: 8 clients, 60 requests, some cancelled mid-stream; every request
answered or cleanly cancelled, no slot leaked, memory flat; Ctrl-C ends open streams with an error event."""

from __future__ import annotations

import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from serveutil import start, stop, without_count

openai = pytest.importorskip("openai")

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
USER = [{"role": "user", "content": "Ping?"}]
CANCELLED_MAX = 400


@pytest.fixture(scope="module")
def served(tiny_gguf):
    # Flash attention off: llama.cpp's CPU flash-attention kernel rounds differently with the number of tokens in
    # a step, which flips near-tie greedy picks of the random weights between a request decoded with others and
    # alone (tests/test_batch.py); without it both give bit-identical logits.
    s = start(tiny_gguf, "-c", "512", "--parallel", "4", "--queue", "64", "--flash-attn", "off")
    yield s
    assert stop(s, signal.SIGTERM) == 0   # SIGTERM: an ordinary stop


def _one(served, client, i: int) -> tuple[str, int]:
    """Request i of the load: a mix of streamed/plain, chat/Responses, forced/free, and cancelled streams.
    Returns its kind and the tokens it was answered with (0 for a cancelled one)."""
    if i % 5 == 4:   # cancelled mid-stream: read up to the first text the model wrote, then hang up
        conn = served.connect()
        conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"messages": USER, "stream": True, "max_tokens": CANCELLED_MAX}))
        r = conn.getresponse()
        assert r.status == 200
        while not _has_text(r.readline()):
            pass
        conn.close()
        return "cancelled", 0
    if i % 5 == 3:
        r = client.responses.create(model="m", input="Ping?", max_output_tokens=12)
        assert r.status in ("completed", "incomplete")
        return "responses", r.usage.output_tokens
    budget = {"thinking_budget": i % 3}
    if i % 2:
        chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True, max_tokens=24,
                                                     response_format={"type": "json_schema", "json_schema": {
                                                         "name": "ok", "schema": SCHEMA}}, extra_body=budget,
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert json.loads(text)["ok"] in (True, False)
        return "stream", chunks[-1].usage.completion_tokens
    r = client.chat.completions.create(model="m", messages=USER, max_tokens=10, seed=i)
    assert r.choices[0].finish_reason in ("stop", "length")
    return "plain", r.usage.completion_tokens


def _has_text(line: bytes) -> bool:
    """Whether an SSE line is a chunk carrying model text (the role chunk comes before any token)."""
    assert line, "the stream ended before any content"
    if not line.startswith(b"data: {"):
        return False
    delta = json.loads(line[6:])["choices"][0]["delta"]
    return bool(delta.get("content") or delta.get("reasoning_content"))


def test_eight_clients_sixty_requests_no_slot_leaked_memory_flat(served):
    client = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0, timeout=300)
    with ThreadPoolExecutor(8) as pool:   # warm-up round: every kind of request once per client
        list(pool.map(lambda i: _one(served, client, i), range(8)))
    assert served.wait_idle()["slots_busy"] == 0
    rss_warm, before = served.rss_kib(), served.generated()
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda i: _one(served, client, i), range(60)))
    idle = without_count(served.wait_idle(timeout=30))
    assert idle == {"status": "ok", "slots_busy": 0, "slots_free": 4, "queued": 0}
    # The 12 hung-up streams were allowed 12 * CANCELLED_MAX tokens; ended at the hang-up they used a few each.
    cancelled = served.generated() - before - sum(n for _, n in done)
    assert 12 <= cancelled < 12 * CANCELLED_MAX // 10, f"the hung-up streams generated {cancelled} tokens"
    grown = served.rss_kib() - rss_warm
    assert grown < 48 * 1024, f"RSS grew {grown} KiB over 60 requests"


def test_concurrent_greedy_requests_each_get_their_answer_alone(served):
    """Eight different prompts at once over 4 slots (4 wait), greedy: each answer equals the one the same
    request gets when sent alone."""
    client = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0, timeout=300)
    prompts = [f"Question {i}: " + "why " * (3 * i) + "is the sky blue?" for i in range(8)]

    def ask(prompt: str) -> tuple[str, str]:
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                           max_tokens=16, temperature=0)
        return r.choices[0].message.content, r.choices[0].finish_reason

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, prompts))
    alone = [ask(p) for p in prompts]
    assert together == alone
    assert len({answer for answer, _ in alone}) == len(prompts)   # different prompts, different answers


def test_ctrl_c_ends_open_streams_with_an_error_event_and_exits_130(tiny_gguf):
    s = start(tiny_gguf, "-c", "512", "--parallel", "1")
    try:
        conn = s.connect(timeout=60)
        conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"messages": USER, "stream": True, "max_tokens": 5000}))
        r = conn.getresponse()
        assert r.readline().startswith(b"data: ")
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(r.read()))
        reader.start()
        s.proc.send_signal(signal.SIGINT)
        reader.join(30)
        tail = got[0].decode()
        last = tail.strip().split("\n\n")[-1]   # OpenAI's error chunk ends the stream; no [DONE] follows
        assert last.startswith("data: ") and json.loads(last[6:])["error"]["code"] == "server_shutdown"
    finally:
        code = stop(s)
    assert code == 130
    assert "interrupted" in "".join(s.stderr)
