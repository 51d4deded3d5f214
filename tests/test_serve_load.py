"""`gptoss serve` under load and on shutdown: 8 clients, 60 requests, some cancelled mid-stream; every request
answered or cleanly cancelled, no slot leaked, memory flat; Ctrl-C ends open streams with an error event."""

from __future__ import annotations

import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from serveutil import start, stop

openai = pytest.importorskip("openai")

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
USER = [{"role": "user", "content": "Ping?"}]


@pytest.fixture(scope="module")
def served(tiny_gguf):
    s = start(tiny_gguf, "-c", "512", "--parallel", "4", "--queue", "64")
    yield s
    assert stop(s, signal.SIGTERM) == 0   # SIGTERM: an ordinary stop


def _one(served, client, i: int) -> str:
    """Request i of the load: a mix of streamed/plain, chat/Responses, forced/free, and cancelled streams."""
    if i % 5 == 4:   # cancelled mid-stream: read the first chunk, then hang up
        conn = served.connect()
        conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"messages": USER, "stream": True, "max_tokens": 400}))
        r = conn.getresponse()
        assert r.status == 200 and r.readline().startswith(b"data: ")
        conn.close()
        return "cancelled"
    if i % 5 == 3:
        r = client.responses.create(model="m", input="Ping?", max_output_tokens=12)
        assert r.status in ("completed", "incomplete")
        return "responses"
    budget = {"thinking_budget": i % 3}
    if i % 2:
        chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True, max_tokens=24,
                                                     response_format={"type": "json_schema", "json_schema": {
                                                         "name": "ok", "schema": SCHEMA}}, extra_body=budget))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert json.loads(text)["ok"] in (True, False)
        return "stream"
    r = client.chat.completions.create(model="m", messages=USER, max_tokens=10, seed=i)
    assert r.choices[0].finish_reason in ("stop", "length")
    return "plain"


def test_eight_clients_sixty_requests_no_slot_leaked_memory_flat(served):
    client = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0, timeout=300)
    with ThreadPoolExecutor(8) as pool:   # warm-up round: every kind of request once per client
        list(pool.map(lambda i: _one(served, client, i), range(8)))
    assert served.wait_idle()["slots_busy"] == 0
    rss_warm = served.rss_kib()
    with ThreadPoolExecutor(8) as pool:
        kinds = list(pool.map(lambda i: _one(served, client, i), range(60)))
    assert kinds.count("cancelled") == 12 and len(kinds) == 60
    assert served.wait_idle(timeout=30) == {"status": "ok", "slots_busy": 0, "slots_free": 4, "queued": 0}
    grown = served.rss_kib() - rss_warm
    assert grown < 48 * 1024, f"RSS grew {grown} KiB over 60 requests"


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
