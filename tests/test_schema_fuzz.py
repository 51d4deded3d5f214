"""Every answer valid for its schema (issue 17 section 1), and no schema that can kill `serve` (issue 20
section 1).

The random-weight fixture is the fuzzer: it writes what a trained model never would, so only what the
engine enforces keeps its answers valid. Each schema of tests/schema_suite.py, with several seeds, goes
through `gptoss chat --schema` and through the API (chat completions' response_format, the Responses API's
text.format, a forced tool call). `jsonschema` with format checking is the oracle: every complete answer
must parse and validate; an answer cut by the token limit must say so (finish_reason "length", status
"incomplete", a failed `chat`), never pass as complete.
"""

from __future__ import annotations

import json
import threading
import time

import jsonschema
import pytest
from schema_suite import HUGE_BOUNDS, LONG, SCHEMAS, UNENFORCEABLE
from serveutil import start, stop

openai = pytest.importorskip("openai")
pytest.importorskip("rfc3339_validator")   # jsonschema checks date-time and time only with it

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
SEEDS = (1, 2, 3)
USER = [{"role": "user", "content": "Answer in JSON."}]
JSON = {"Content-Type": "application/json"}
MAX_TOKENS = 160


def check(answer: str, schema: dict) -> None:
    """The oracle: the answer parses as JSON and is valid for the schema, formats included."""
    jsonschema.validate(json.loads(answer), schema, format_checker=FORMATS)


@pytest.fixture(scope="module")
def served(tiny_gguf):
    s = start(tiny_gguf, "-c", "1024", "--parallel", "2", "--queue", "8", "--thinking-budget", "2")
    yield s
    assert stop(s) == 130
    assert "Traceback" not in "".join(s.stderr)


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url, api_key="none", max_retries=0, timeout=120)


class Tally:
    """Complete and cut answers per route; the test fails if too few finish to have tested anything."""

    def __init__(self) -> None:
        self.complete = self.cut = 0

    def add(self, complete: bool) -> None:
        self.complete += complete
        self.cut += not complete


# --- issue 20 section 1: schemas that crashed or stalled the server --------------------------------------

def _post(served, path: str, body: dict) -> tuple[int, dict]:
    status, raw = served.request("POST", path, json.dumps(body).encode(), JSON, timeout=120)
    return status, json.loads(raw)


def _health_while(served, work) -> tuple[float, object]:
    """Run work while polling /health; the slowest /health answer and work's result."""
    slowest, done = 0.0, threading.Event()

    def poll() -> None:
        nonlocal slowest
        while not done.is_set():
            t0 = time.perf_counter()
            assert served.health()["status"] == "ok"
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        result = work()
    finally:
        done.set()
        poller.join(30)
    return slowest, result


@pytest.mark.parametrize("keyword", list(HUGE_BOUNDS))
def test_huge_bounds_neither_crash_nor_stall_the_server(served, keyword):
    schema = HUGE_BOUNDS[keyword]
    chat = {"model": "m", "messages": USER, "max_tokens": 24,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    tool_schema = schema if schema.get("type") == "object" else {"type": "object", "properties": {"v": schema},
                                                                 "required": ["v"]}
    forced = {"model": "m", "input": "hi", "max_output_tokens": 24, "tool_choice": {"type": "function", "name": "f"},
              "tools": [{"type": "function", "name": "f", "parameters": tool_schema}]}
    for path, body in (("/v1/chat/completions", chat), ("/v1/responses", forced)):
        slowest, (status, answer) = _health_while(served, lambda p=path, b=body: _post(served, p, b))
        assert status == 200 or (status == 400 and keyword in answer["error"]["message"]), answer
        assert served.proc.poll() is None, "".join(served.stderr)[-2000:]
        assert slowest < 2.0
    assert served.health()["status"] == "ok"


@pytest.mark.parametrize("keyword", list(UNENFORCEABLE))
def test_what_cannot_be_enforced_is_a_400_naming_the_keyword(served, keyword):
    schema = UNENFORCEABLE[keyword]
    status, answer = _post(served, "/v1/chat/completions", {
        "model": "m", "messages": USER, "max_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert status == 400 and keyword in answer["error"]["message"]
    assert answer["error"]["param"] == "response_format"
    status, answer = _post(served, "/v1/responses", {
        "model": "m", "input": "hi", "max_output_tokens": 8, "tool_choice": "required",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"a": schema}}}]})
    assert status == 400 and keyword in answer["error"]["message"]
    assert answer["error"]["param"].startswith("tools")
    assert served.health()["slots_busy"] == 0


# --- issue 17 section 1: the fuzz ---------------------------------------------------------------------------

def _object(schema: dict) -> dict:
    """A tool's parameters must be an object: other schemas go under one property."""
    if schema.get("type") == "object":
        return schema
    defs = {k: schema[k] for k in ("$defs",) if k in schema}
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    return {**defs, "type": "object", "properties": {"value": inner}, "required": ["value"],
            "additionalProperties": False}


def _chat(client, name: str, schema: dict, seed: int, tally: Tally) -> None:
    r = client.chat.completions.create(
        model="m", messages=USER, max_tokens=MAX_TOKENS, seed=seed, temperature=1.0,
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length"), (name, seed, choice)
    if choice.finish_reason == "stop":
        check(choice.message.content, schema)
    tally.add(choice.finish_reason == "stop")


def _responses(client, name: str, schema: dict, seed: int, tally: Tally) -> None:
    r = client.responses.create(model="m", input="Answer in JSON.", max_output_tokens=MAX_TOKENS, temperature=1.0,
                                text={"format": {"type": "json_schema", "name": name, "schema": schema,
                                                 "strict": True}}, extra_body={"seed": seed})
    assert r.status in ("completed", "incomplete"), (name, seed, r.status)
    if r.status == "completed":
        check(r.output_text, schema)
    else:
        assert r.incomplete_details.reason == "max_output_tokens"
    tally.add(r.status == "completed")


def _tool(client, name: str, schema: dict, seed: int, tally: Tally) -> None:
    params = _object(schema)
    r = client.chat.completions.create(
        model="m", messages=USER, max_tokens=MAX_TOKENS, seed=seed, temperature=1.0,
        tools=[{"type": "function", "function": {"name": "answer", "parameters": params}}],
        tool_choice={"type": "function", "function": {"name": "answer"}})
    choice = r.choices[0]
    assert choice.finish_reason in ("tool_calls", "length"), (name, seed, choice)
    if choice.finish_reason == "tool_calls":
        (call,) = choice.message.tool_calls
        assert call.function.name == "answer"
        check(call.function.arguments, params)
    tally.add(choice.finish_reason == "tool_calls")


@pytest.mark.slow
@pytest.mark.parametrize("route", [_chat, _responses, _tool], ids=["chat", "responses", "tool"])
def test_every_api_answer_is_valid_for_its_schema(client, route):
    tally = Tally()
    jobs = [(name, schema, seed) for name, schema in SCHEMAS.items() for seed in SEEDS]
    errors: list[BaseException] = []

    def worker(part) -> None:   # two at a time: the server has two slots
        for name, schema, seed in part:
            try:
                route(client, name, schema, seed, tally)
            except BaseException as exc:  # noqa: BLE001 - reported below with the schema's name
                errors.append(AssertionError(f"{name} seed {seed}: {exc}"))

    threads = [threading.Thread(target=worker, args=(jobs[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(map(str, errors[:5]))
    assert tally.complete >= len(jobs) // 2, (tally.complete, tally.cut)


def _combined() -> dict:
    """The suite's schemas but LONG as properties of one object (their $defs hoisted), for one CLI run."""
    defs: dict = {}
    props: dict = {}
    for name, schema in SCHEMAS.items():
        if name not in LONG:
            defs.update(schema.get("$defs", {}))
            props[name] = {k: v for k, v in schema.items() if k != "$defs"}
    return {"$defs": defs, "type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def _cli_answer(cli, gguf, tmp_path, schema: dict, seed: int, max_tokens: int) -> bool:
    """One `gptoss chat --schema` run checked by the oracle; whether its answer was complete."""
    path = tmp_path / f"schema-{seed}.json"
    path.write_text(json.dumps(schema))
    r = cli("chat", str(gguf), "-p", "Answer in JSON.", "--schema", str(path), "--thinking-budget", "2",
            "--max-tokens", str(max_tokens), "--seed", str(seed), "--threads", "1", "--json", "-c", "2048")
    doc = json.loads(r.stdout)
    if doc["stop_reason"] == "length":   # cut: it says so and fails
        assert r.returncode == 1 and "cut at the token limit" in r.stderr
        return False
    assert r.returncode == 0, r.stderr
    check(doc["final"], schema)
    return True


@pytest.mark.slow
def test_every_cli_answer_is_valid_for_its_schema(cli, tiny_gguf, tmp_path):
    complete = [_cli_answer(cli, tiny_gguf, tmp_path, _combined(), seed, 800) for seed in SEEDS]
    assert any(complete)
    for seed, name in enumerate(LONG, start=SEEDS[-1] + 1):
        _cli_answer(cli, tiny_gguf, tmp_path, SCHEMAS[name], seed, 300)


def test_cli_refuses_what_it_cannot_enforce(cli, tiny_gguf):
    r = cli("chat", str(tiny_gguf), "-p", "hi", "--schema", json.dumps(UNENFORCEABLE["uniqueItems"]))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "uniqueItems cannot be enforced" in r.stderr
    assert r.stdout == ""
