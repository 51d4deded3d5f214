"""`gptoss serve` on the random-weight fixture, driven by the official openai client and raw HTTP.

Random weights babble; shapes are deterministic only where structure is forced (thinking budget,
response_format, tool_choice), and that is what these tests check end to end through real llama.cpp.
"""

from __future__ import annotations

import json
import time

import jsonschema
import pytest
from serveutil import start, stop, without_count

openai = pytest.importorskip("openai")

KEY = "sk-gptoss-test-0123456789"
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "adult": {"type": "boolean"}}, "required": ["name", "adult"]}
WEATHER = {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "days": {"enum": [1, 2, 3]}},
           "required": ["unit"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now.",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "lookup_person", "parameters": PERSON}}]
USER = [{"role": "user", "content": "Weather in Oslo?"}]
SPECIAL = "<|"


@pytest.fixture(scope="module")
def served(tiny_gguf, tmp_path_factory):
    s = start(tiny_gguf, "-c", "1024", "--parallel", "2", "--queue", "2", "--max-tokens", "64",
              key=KEY, key_dir=tmp_path_factory.mktemp("key"))
    yield s
    assert stop(s) == 130
    assert KEY not in "".join(s.stderr)


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0, timeout=120)


def test_health_models_and_the_api_key(served, client):
    health = served.health()
    assert without_count(health) == {"status": "ok", "slots_busy": 0, "slots_free": 2, "queued": 0}
    assert isinstance(health["tokens_generated"], int) and health["tokens_generated"] >= 0
    assert [m.id for m in client.models.list().data] == ["gpt-oss-tiny-mxfp4"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        status, body = served.request("GET", "/v1/models", headers=headers)
        assert status == 401
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
        assert KEY.encode() not in body
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url, api_key="sk-wrong", max_retries=0).models.list()


def test_json_schema_answer_after_a_budgeted_thought(client):
    r = client.chat.completions.create(
        model="gpt-oss-tiny", messages=USER, max_tokens=60, temperature=0.7,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        extra_body={"thinking_budget": 4})
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), PERSON)
    reasoning = choice.message.model_extra["reasoning_content"]
    assert reasoning and SPECIAL not in reasoning and SPECIAL not in choice.message.content
    assert r.usage.completion_tokens_details.reasoning_tokens >= 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_a_stop_string_inside_a_schema_answer_does_not_cut_it(client):
    """Every PERSON answer begins with `{` and holds `"`: the answer still ends where the grammar ends it."""
    stops, fmt = ['"', "{"], {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    r = client.chat.completions.create(model="gpt-oss-tiny", messages=USER, max_tokens=60, stop=stops,
                                       response_format=fmt, extra_body={"thinking_budget": 2})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
    chunks = list(client.chat.completions.create(model="gpt-oss-tiny", messages=USER, max_tokens=60, stop=stops,
                                                 response_format=fmt, stream=True, seed=5,
                                                 extra_body={"thinking_budget": 2}))
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)), PERSON)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    answer = client.responses.create(model="gpt-oss-tiny", input="Who is Ann?", max_output_tokens=60,
                                     text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}},
                                     extra_body={"thinking_budget": 2, "stop": stops})
    assert answer.status == "completed"
    jsonschema.validate(json.loads(answer.output_text), PERSON)


def test_streamed_forced_call_with_usage(client):
    stream = client.chat.completions.create(
        model="gpt-oss-tiny", messages=USER, tools=TOOLS, stream=True, max_tokens=60,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream_options={"include_usage": True}, extra_body={"thinking_budget": 3})
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert reasoning and SPECIAL not in reasoning
    assert not "".join(d.content or "" for d in deltas)
    assert [c.function.name for c in calls if c.function.name] == ["get_weather"]   # named once, first
    assert calls[0].id and {c.index for c in calls} == {0}
    assert len(calls) > 2   # the arguments stream as they are generated
    jsonschema.validate(json.loads("".join(c.function.arguments for c in calls)), WEATHER)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices


def test_required_call_then_reasoning_sent_back_with_the_result(client):
    first = client.chat.completions.create(model="gpt-oss-tiny", messages=USER, tools=TOOLS, tool_choice="required",
                                           max_tokens=60, extra_body={"thinking_budget": 2})
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    call = msg.tool_calls[0]
    schema = {"get_weather": WEATHER, "lookup_person": PERSON}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), schema)
    history = USER + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()],
                       "reasoning_content": msg.model_extra["reasoning_content"]},
                      {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    second = client.chat.completions.create(model="gpt-oss-tiny", messages=history, tools=TOOLS, max_tokens=40,
                                            response_format={"type": "json_schema", "json_schema": {
                                                "name": "person", "schema": PERSON}},
                                            extra_body={"thinking_budget": 0})
    assert second.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(second.choices[0].message.content), PERSON)
    assert not second.choices[0].message.model_extra["reasoning_content"]   # budget 0: no thinking
    assert second.usage.prompt_tokens_details.cached_tokens > 0   # the slot's prefix cache was reused


def test_responses_api_plain_and_streamed(client):
    r = client.responses.create(model="gpt-oss-tiny", input="Who is Ann?", max_output_tokens=60,
                                text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}},
                                extra_body={"thinking_budget": 3})
    assert [item.type for item in r.output] == ["reasoning", "message"]
    jsonschema.validate(json.loads(r.output_text), PERSON)
    assert r.status == "completed" and r.usage.output_tokens > 0
    tools = [{"type": "function", **t["function"]} for t in TOOLS]
    events = list(client.responses.create(model="gpt-oss-tiny", input="Weather?", tools=tools, stream=True,
                                          tool_choice="required", max_output_tokens=60,
                                          extra_body={"thinking_budget": 2}))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    call = events[-1].response.output[-1]
    assert call.type == "function_call"
    jsonschema.validate(json.loads(call.arguments), {"get_weather": WEATHER, "lookup_person": PERSON}[call.name])
    assert "response.reasoning_text.delta" in kinds and "response.function_call_arguments.done" in kinds


def _post(served, path: str, content: bytes) -> tuple[int, dict]:
    status, body = served.request("POST", "/v1" + path, content,
                                  {**served.headers(), "Content-Type": "application/json"})
    return status, json.loads(body)


def test_bad_requests_get_openai_shaped_errors(served):
    status, body = _post(served, "/chat/completions", b'{"messages": [')
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = _post(served, "/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}],
                                                                  "top_p": "all"}).encode())
    assert status == 400 and body["error"]["param"] == "top_p"
    long = {"messages": [{"role": "user", "content": "word " * 3000}]}
    status, body = _post(served, "/chat/completions", json.dumps(long).encode())
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, body = _post(served, "/responses", b'{"input": "' + b"x" * (9 * 2**20) + b'"}')
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert served.wait_idle()["slots_busy"] == 0


def send_stream(served, max_tokens: int = 500):
    """A streamed chat request sent and left open: its connection (the response comes once it has a slot)."""
    conn = served.connect()
    body = json.dumps({"messages": USER, "stream": True, "max_tokens": max_tokens})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={**served.headers(), "Content-Type": "application/json"})
    return conn


def test_a_full_server_says_429(served):
    """Both slots and both queue places taken: the next request is refused (hang-ups: test_serve_disconnect.py)."""
    conns = [send_stream(served) for _ in range(2)]   # the 2 slots
    try:
        answers = [conn.getresponse() for conn in conns]
        assert all(r.status == 200 for r in answers)
        assert answers[0].readline().startswith(b"data: ")
        conns += [send_stream(served) for _ in range(2)]   # the 2 places in the queue
        while served.health()["queued"] < 2:
            time.sleep(0.02)
        status, body = _post(served, "/chat/completions", json.dumps({"messages": USER}).encode())
        assert status == 429 and body["error"]["type"] == "rate_limit_error"
    finally:
        for conn in conns:
            conn.close()
    assert without_count(served.wait_idle()) == {"status": "ok", "slots_busy": 0, "slots_free": 2, "queued": 0}


def test_non_loopback_host_needs_a_key_or_no_auth(tiny_gguf, cli, tmp_path):
    r = cli("serve", str(tiny_gguf), "--host", "0.0.0.0", "--port", "0", env={"GPTOSS_API_KEY": ""})
    assert r.returncode == 2
    assert "--api-key-file" in r.stderr and "--no-auth" in r.stderr and r.stdout == ""
    empty = tmp_path / "key"
    empty.write_text("\n")
    r = cli("serve", str(tiny_gguf), "--api-key-file", str(empty))
    assert r.returncode == 2 and "key file is empty" in r.stderr


def test_fit_plans_the_cache_of_every_slot_then_serves(tiny_gguf, cli):
    """`serve --fit` plans --ctx-size tokens in each of the --parallel slots, for GPUs injected at the device seam
    (GPTOSS_TEST_GPUS): a GPU with room for one slot's cache but not three is refused for three slots; on one with
    exactly what `gptoss plan --parallel 3` says three need, it places the model as that plan does and serves. A
    manual placement next to it is refused."""
    def gpu(free: int) -> dict:
        return {"GPTOSS_TEST_GPUS": f"Injected GPU:{free}:{free}"}

    def planned(free: int, parallel: int) -> dict:
        r = cli("plan", str(tiny_gguf), "--ctx", "512", "--parallel", str(parallel), "--json", env=gpu(free))
        return json.loads(r.stdout)

    big = 80 << 30
    one, three = planned(big, 1), planned(big, 3)
    assert three["fits"] and three["n_cpu_moe"] == 0 and three["gpu_needed"] > one["gpu_needed"]
    between = (one["gpu_needed"] + three["gpu_needed"]) // 2
    assert planned(between, 1)["fits"] and not planned(between, 3)["fits"]
    r = cli("serve", str(tiny_gguf), "--port", "0", "--fit", "--parallel", "3", "--ctx-size", "512", env=gpu(between))
    assert r.returncode == 1 and "error: does not fit" in r.stderr and r.stdout == "", r.stderr
    assert "context 512 x 3 sequences: does not fit" in r.stderr
    served = start(tiny_gguf, "--fit", "--parallel", "3", "--ctx-size", "512", env=gpu(three["gpu_needed"]))
    try:
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
        status, raw = served.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    finally:
        assert stop(served) == 130
    assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] >= 1
    err = "".join(served.stderr)
    assert "context 512 x 3 sequences: --n-cpu-moe 0" in err and "--fit: --n-cpu-moe 0" in err
    r = cli("serve", str(tiny_gguf), "--port", "0", "--fit", "--cpu-moe")
    assert r.returncode == 2 and "either --fit or --cpu-moe" in r.stderr and r.stdout == ""
