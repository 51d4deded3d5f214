"""Constrained generation: JSON-schema answers, forced tool calls and the thinking budget.

The controller is checked on scripted token streams (tokens from tiktoken's o200k_harmony, the model's
own tokenizer), then end to end on the random-weight fixture, where only forced structure gives a shape.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from converters.errors import BadInputError
from gptoss_cli.engine import harmony, harmony_stream
from gptoss_cli.engine.constrain import Constraint, Controller, grammar_for
from tests.oracles import o200k_harmony

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                           "adult": {"type": "boolean"},
                                           "city": {"enum": ["Oslo", "Paris"]}},
          "required": ["name", "adult", "city"]}
WEATHER = {"type": "object", "properties": {"unit": {"enum": ["c", "f"]},
                                            "days": {"type": "array", "items": {"type": "boolean"},
                                                     "maxItems": 2}},
           "required": ["unit", "days"]}


def _enc():
    return o200k_harmony()


def _tok(text: str) -> list[int]:
    return _enc().encode(text, allowed_special="all")


def _bytes(token: int) -> bytes:
    return _enc().decode_single_token_bytes(token)


def _drive(ctl: Controller, sampled: list[int], limit: int = 200) -> list[int]:
    """Run the decode-loop protocol with a scripted sampler; returns every committed token."""
    out, queue, script = [], ctl.begin(), list(sampled)
    while len(out) < limit:
        if queue:
            token = queue.pop(0)
        elif script:
            token = ctl.choose(script.pop(0))
        else:
            break
        queue += ctl.commit(token)
        out.append(token)
        if token in harmony.STOP_IDS:
            break
    return out


def test_budget_ends_the_analysis_and_opens_the_final_answer():
    ctl = Controller(Constraint(thinking_budget=3), _tok, _bytes)
    words = _tok("<|channel|>analysis<|message|>") + _tok(" one two three four five six")
    out = _drive(ctl, words + _tok(" answer<|return|>"))
    text = _enc().decode(out)
    assert text.startswith("<|channel|>analysis<|message|> one two three<|end|>"
                           "<|start|>assistant<|channel|>final<|message|>")
    assert ctl.analysis_tokens == 3


def test_budget_zero_skips_the_analysis():
    ctl = Controller(Constraint(thinking_budget=0), _tok, _bytes)
    out = _drive(ctl, _tok("hi<|return|>"))
    assert _enc().decode(out) == "<|channel|>final<|message|>hi<|return|>"


def test_no_constraint_changes_nothing():
    stream = _tok("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>x<|return|>")
    assert _drive(Controller(Constraint(), _tok, _bytes), stream) == stream


def test_forced_tool_replaces_stray_control_tokens_and_closes_with_call():
    ctl = Controller(Constraint(tool="get_weather", tool_schema=WEATHER, thinking_budget=50), _tok, _bytes)
    # the "model" ends its thinking with <|return|> (not allowed there) and the arguments with <|endoftext|>
    out = _drive(ctl, _tok(" hmm<|return|>") + _tok('{"unit":"c","days":[]}') + [harmony.ENDOFTEXT])
    assert _enc().decode(out) == ("<|channel|>analysis<|message|> hmm<|end|><|start|>assistant"
                                  "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                                  '{"unit":"c","days":[]}<|call|>')
    msg = ctl.parser.messages[-1]
    assert (msg.channel, msg.recipient, msg.content_type) == ("commentary", "functions.get_weather",
                                                              "<|constrain|>json")
    assert ctl.finished


def test_required_call_among_several_tools_samples_the_name_then_its_arguments():
    ctl = Controller(Constraint(tools={"get_weather": WEATHER, "lookup": PERSON}, thinking_budget=0), _tok, _bytes)
    # name under the names grammar, then an end token, then the arguments
    out = _drive(ctl, _tok("get_weather") + [harmony.RETURN] + _tok('{"unit":"f","days":[true]}') + [harmony.RETURN])
    assert _enc().decode(out) == ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
                                  '{"unit":"f","days":[true]}<|call|>')
    assert ctl.tool == "get_weather" and ctl.finished


def test_grammar_from_schema_and_bad_schema():
    assert "root ::=" in grammar_for(PERSON)
    assert "root ::=" in grammar_for(None)      # json_object: any object
    with pytest.raises(BadInputError):
        grammar_for({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}})


# --- end to end on the fixture ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend(tiny_gguf):
    from gptoss_cli.engine.backend import Backend, BackendOptions

    b = Backend(tiny_gguf, BackendOptions(ctx_size=2048, seed=3, gpu_layers=0, threads=1))
    yield b
    b.close()


def _run(backend, constraint: Constraint, max_tokens: int = 120,
         temperature: float = 1.0) -> harmony_stream.StreamParser:
    prompt = backend.tokenize(harmony.render_prompt([harmony.Message("user", "Tell me about Ann.")]))
    ctl = Controller(constraint, backend.tokenize, backend.token_bytes)
    parser = harmony_stream.StreamParser(backend.token_bytes)
    for token in backend.generate(prompt, temperature=temperature, top_p=1.0, max_tokens=max_tokens,
                                  stop=set(harmony.STOP_IDS), control=ctl):
        parser.feed(token)
    parser.finish()
    return parser


@pytest.mark.parametrize("temperature", [0.0, 1.0])   # greedy and sampled draws both go through the grammar check
def test_schema_answer_on_random_weights_is_valid_json(backend, temperature):
    parser = _run(backend, Constraint(schema=PERSON, thinking_budget=8), temperature=temperature)
    analysis = [m for m in parser.messages if m.channel == "analysis"]
    assert len(analysis) == 1 and analysis[0].content
    assert parser.stop_reason == "return"
    jsonschema.validate(json.loads(parser.text("final")), PERSON)


def test_forced_call_on_random_weights_has_valid_arguments(backend):
    parser = _run(backend, Constraint(tool="get_weather", tool_schema=WEATHER, thinking_budget=4))
    call = parser.messages[-1]
    assert parser.stop_reason == "call"
    assert call.recipient == "functions.get_weather"
    jsonschema.validate(json.loads(call.content), WEATHER)


def test_required_call_on_random_weights_names_one_of_the_tools(backend):
    parser = _run(backend, Constraint(tools={"get_weather": WEATHER, "lookup_person": PERSON}, thinking_budget=2))
    call = parser.messages[-1]
    assert parser.stop_reason == "call"
    name = call.recipient.removeprefix("functions.")
    jsonschema.validate(json.loads(call.content), {"get_weather": WEATHER, "lookup_person": PERSON}[name])


def test_grammar_strings_refuse_raw_control_characters(backend):
    """JSON forbids a raw newline or tab inside a string; llama-cpp-python's converter allowed them (6 in 60
    sampled answers on the fixture were invalid JSON before the fix)."""
    from gptoss_cli.engine.constrain import GrammarSampler, sampler_chain

    vocab = backend._vocab
    g = GrammarSampler(vocab, grammar_for(PERSON), sampler_chain(vocab, temperature=0, top_p=1, seed=0))
    try:
        for token in backend.tokenize('{"adult":true,"city":"Oslo","name":"'):   # keys in sorted order
            assert g.allows(token)
            g.advance(token)
        assert g.allows(backend.tokenize("a")[0]) and g.allows(backend.tokenize("\\n")[0])
        for raw in ("\n", "\t", "\x01"):
            assert not g.allows(backend.tokenize(raw)[0]), repr(raw)
    finally:
        g.close()
