"""`gptoss serve`'s streams as OpenAI's own client reads them: the Responses event stream checked event by
event against the documented grammar (tests/responses_grammar.py) and through the `openai` package's
`responses.stream()` accumulator, `responses.parse()` / `chat.completions.parse()` with a Pydantic model, and
its chat `stream()` helper; for a text answer, a tool call, a length cut and a schema answer. (Errors mid-stream:
tests/test_serve_faults.py.) The random-weight fixture writes harmony only where it is forced: a thinking
budget, a forced tool choice, a JSON schema, a token limit."""

from __future__ import annotations

import json

import jsonschema
import pytest
from responses_grammar import ResponsesGrammar
from serveutil import start, stop

openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")

pytestmark = pytest.mark.slow


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=8)
    adult: bool


class Weather(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=12)
    unit: str = pydantic.Field(json_schema_extra={"enum": ["c", "f"]})


WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOL = {"type": "function", "name": "get_weather", "description": "Weather now.", "parameters": WEATHER}


@pytest.fixture(scope="module")
def served(tiny_gguf):
    s = start(tiny_gguf, "-c", "1024", "--parallel", "2")
    yield s
    assert stop(s) == 130


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url, api_key="none", max_retries=0, timeout=120)


def _stream(client, **kw):
    """Run responses.stream(): (every event, checked by the grammar, as the helper hands it out; the final
    response of the grammar; the helper's final response, or None without response.completed)."""
    grammar, events = ResponsesGrammar(), []
    with client.responses.stream(model="m", **kw) as stream:
        for event in stream:
            grammar.feed(_raw(event.to_dict(warnings=False)))
            events.append(event)
        final = stream.get_final_response() if grammar.terminal == "response.completed" else None
    return events, grammar.finish(), final


def _raw(value):
    """An event as the server sent it: without the `parsed*` fields the helper adds to what it hands out."""
    if isinstance(value, dict):
        return {k: _raw(v) for k, v in value.items() if not k.startswith("parsed")}
    return [_raw(v) for v in value] if isinstance(value, list) else value


def _kinds(response: dict) -> list[str]:
    return [item["type"] for item in response["output"]]


def test_text_answer_after_thinking(client):
    events, response, final = _stream(client, input="Hi there", max_output_tokens=40,
                                      extra_body={"thinking_budget": 3, "seed": 5})
    assert _kinds(response) in (["message"], ["reasoning", "message"])   # nothing forces the thinking here
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    message = response["output"][-1]
    if deltas:   # the helper's snapshot is the text so far
        assert deltas[-1].snapshot == message["content"][0]["text"]
    if final is not None:
        assert final.output_text == message["content"][0]["text"]
    else:
        assert response["status"] == "incomplete" and message["status"] == "incomplete"


def test_tool_call_arguments_stream_as_they_are_generated(client):
    events, response, final = _stream(client, input="Weather in Oslo?", tools=[TOOL], max_output_tokens=80,
                                      tool_choice={"type": "function", "name": "get_weather"},
                                      extra_body={"thinking_budget": 2})
    assert _kinds(response) == ["reasoning", "function_call"]
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 2   # the call grows on the client's screen, not in one piece at the end
    assert [e.snapshot for e in deltas][-1] == response["output"][1]["arguments"]
    call = final.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done[0].arguments == call.arguments


def test_length_cut_ends_incomplete_with_the_items_so_far(client):
    events, response, final = _stream(client, input="Who is Ann?", max_output_tokens=8,
                                      text={"format": {"type": "json_schema", "name": "person",
                                                       "schema": Person.model_json_schema()}},
                                      extra_body={"thinking_budget": 50})
    assert final is None and events[-1].type == "response.incomplete"
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"] and response["output"][-1]["status"] == "incomplete"
    assert response["usage"]["output_tokens"] == 8


def test_schema_answer_parsed_into_a_pydantic_model(client):
    events, response, final = _stream(client, input="Who is Ann?", text_format=Person, max_output_tokens=80,
                                      extra_body={"thinking_budget": 2})
    assert isinstance(final.output_parsed, Person)
    done = [e for e in events if e.type == "response.output_text.done"]
    assert isinstance(done[0].parsed, Person)
    parsed = client.responses.parse(model="m", input="Who is Bob?", text_format=Person, max_output_tokens=80,
                                    extra_body={"thinking_budget": 0})
    assert isinstance(parsed.output_parsed, Person) and parsed.status == "completed"
    chat = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "Who is Cy?"}],
                                         response_format=Person, max_tokens=80, extra_body={"thinking_budget": 0})
    assert isinstance(chat.choices[0].message.parsed, Person)


def test_chat_stream_helper_sees_the_call_grow(client):
    tool = openai.pydantic_function_tool(Weather, name="get_weather")
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "Weather?"}],
                                        tools=[tool], tool_choice={"type": "function",
                                                                   "function": {"name": "get_weather"}},
                                        max_tokens=80, extra_body={"thinking_budget": 2}) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    grows = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert len(grows) > 2 and len(done) == 1
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert isinstance(call.function.parsed_arguments, Weather)
    assert done[0].arguments == call.function.arguments


def test_chat_stream_helper_schema_answer(client):
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "Who?"}], max_tokens=80,
                                        response_format=Person, extra_body={"thinking_budget": 2}) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    text = "".join(e.delta for e in events if e.type == "content.delta")
    done = [e for e in events if e.type == "content.done"]
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content == text
    assert isinstance(done[0].parsed, Person) and final.choices[0].message.parsed == done[0].parsed
    thought = "".join((e.chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                      for e in events if e.type == "chunk" and e.chunk.choices)
    assert thought   # the thinking streams beside the answer, never inside it
