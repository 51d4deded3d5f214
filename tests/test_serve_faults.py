"""Faults as a client of `gptoss serve` sees them: a stop signal, or a worker lost over `--rpc`, while slots
are busy and requests wait. Every open stream ends with its API's error (`response.failed` for Responses, an
error chunk for chat), every waiting request gets an error in JSON, and the process exits as promised.

The streams are forced calls of a tool whose one string argument is longer than the context: they cannot
end by themselves before the fault."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import serveutil
from responses_grammar import ResponsesGrammar

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow
PATCH = {"type": "object", "properties": {"patch": {"type": "string", "minLength": 20000}}, "required": ["patch"]}
TOOL = {"type": "function", "name": "apply_patch", "description": "Apply a patch.", "parameters": PATCH}


class OpenStream(threading.Thread):
    """A streamed request read by the openai client in the background; `going` is set at its first delta."""

    def __init__(self, client, api: str) -> None:
        super().__init__(daemon=True)
        self.client, self.api = client, api
        self.going = threading.Event()
        self.events: list = []
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            if self.api == "responses":
                with self.client.responses.stream(model="m", input="Fix it.", tools=[TOOL], max_output_tokens=20000,
                                                  tool_choice={"type": "function", "name": "apply_patch"},
                                                  extra_body={"thinking_budget": 1}) as stream:
                    for event in stream:
                        self.events.append(event.to_dict(warnings=False))
                        if event.type == "response.function_call_arguments.delta":
                            self.going.set()
            else:
                tool = {"type": "function", "function": {"name": "apply_patch", "parameters": PATCH}}
                for chunk in self.client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "Fix it."}], tools=[tool], stream=True,
                        tool_choice={"type": "function", "function": {"name": "apply_patch"}},
                        extra_body={"thinking_budget": 1}):
                    self.events.append(chunk)
                    if chunk.choices and chunk.choices[0].delta.tool_calls:
                        self.going.set()
        except Exception as exc:  # noqa: BLE001 - what the client raised is what the test checks
            self.error = exc
        finally:
            self.going.set()


class Waiting(threading.Thread):
    """A request sent raw (streamed or not) that waits in the queue: its HTTP status and JSON body."""

    def __init__(self, served, path: str, body: dict) -> None:
        super().__init__(daemon=True)
        self.served, self.path, self.body = served, path, body
        self.status, self.answer = 0, {}
        self.start()

    def run(self) -> None:
        status, raw = self.served.request("POST", self.path, json.dumps(self.body).encode(),
                                          {"Content-Type": "application/json"}, timeout=120)
        self.status, self.answer = status, json.loads(raw)


def _wait_queued(served, n: int) -> None:
    while served.health()["queued"] < n:
        time.sleep(0.02)


def _failed_response(stream: OpenStream) -> dict:
    """The Responses stream checked against the grammar; its response.failed response."""
    assert stream.error is None, stream.error
    grammar = ResponsesGrammar()
    for event in stream.events:
        grammar.feed(event)
    assert grammar.terminal == "response.failed", [e["type"] for e in stream.events[-3:]]
    return grammar.finish()


def test_sigterm_fails_the_stream_and_answers_every_waiting_request_503(tiny_gguf):
    s = serveutil.start(tiny_gguf, "-c", "16384", "--parallel", "1", "--queue", "4")
    try:
        client = openai.OpenAI(base_url=s.url, api_key="none", max_retries=0, timeout=120)
        busy = OpenStream(client, "responses")
        assert busy.going.wait(120)
        waiting = [Waiting(s, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                   Waiting(s, "/v1/responses", {"input": "hi", "stream": True})]
        _wait_queued(s, 2)
        s.proc.send_signal(signal.SIGTERM)
        busy.join(60)
        for w in waiting:
            w.join(60)
    finally:
        code = serveutil.stop(s)
    assert code == 0   # SIGTERM: an ordinary stop
    response = _failed_response(busy)
    assert response["error"] == {"code": "server_error", "message": "the server is shutting down"}
    assert response["output"][-1]["type"] == "function_call" and response["output"][-1]["status"] == "incomplete"
    for w in waiting:
        assert w.status == 503 and w.answer["error"]["code"] == "server_shutdown", (w.status, w.answer)


def test_ctrl_c_ends_a_chat_stream_with_openais_error_chunk(tiny_gguf):
    s = serveutil.start(tiny_gguf, "-c", "16384", "--parallel", "1")
    try:
        client = openai.OpenAI(base_url=s.url, api_key="none", max_retries=0, timeout=120)
        busy = OpenStream(client, "chat")
        assert busy.going.wait(120)
        s.proc.send_signal(signal.SIGINT)
        busy.join(60)
    finally:
        code = serveutil.stop(s)
    assert code == 130
    assert isinstance(busy.error, openai.APIError) and "shutting down" in busy.error.message
    assert busy.error.body["code"] == "server_shutdown"


def test_lost_worker_ends_every_request_with_its_name_then_exits_1(tiny_gguf, tmp_path):
    from test_rpc import WorkerProc, needs_rpc

    if needs_rpc.args[0]:
        pytest.skip(needs_rpc.kwargs["reason"])
    pair = [WorkerProc(tmp_path, cache=False), WorkerProc(tmp_path, cache=False)]
    s = None
    try:
        s = serveutil.start(tiny_gguf, "-c", "16384", "--parallel", "2", "--queue", "2", "--gpu-layers", "-1",
                            "--rpc", ",".join(w.endpoint for w in pair))
        client = openai.OpenAI(base_url=s.url, api_key="none", max_retries=0, timeout=120)
        streams = [OpenStream(client, "responses"), OpenStream(client, "chat")]
        assert all(st.going.wait(120) for st in streams)
        waiting = Waiting(s, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
        _wait_queued(s, 1)
        pair[1].proc.kill()
        code = s.proc.wait(60)
        for t in [*streams, waiting]:
            t.join(30)
    finally:
        for w in pair:
            w.stop()
        if s is not None:
            serveutil.stop(s)
    assert code == 1
    named = f"worker lost ({pair[1].endpoint})"
    errors = [line for line in "".join(s.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {named}: it stopped answering"), s.stderr
    response = _failed_response(streams[0])
    assert response["error"]["code"] == "server_error" and named in response["error"]["message"]
    chat = streams[1].error
    assert isinstance(chat, openai.APIError) and named in chat.message, chat
    assert waiting.status == 500 and named in waiting.answer["error"]["message"], waiting.answer
