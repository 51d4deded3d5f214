"""Harmony rendering and stream parsing, checked against openai-harmony and the official chat template."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gptoss_cli.engine import harmony
from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_stream import StreamParser

DATA = Path(__file__).parent / "data"
os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", str(DATA))
oh = pytest.importorskip("openai_harmony")
tiktoken = pytest.importorskip("tiktoken")

DATE = "2026-11-25"




def _oh_conversation(messages, effort, instructions):
    effort_enum = {"low": oh.ReasoningEffort.LOW, "medium": oh.ReasoningEffort.MEDIUM,
                   "high": oh.ReasoningEffort.HIGH}[effort]
    system = oh.SystemContent.new().with_reasoning_effort(effort_enum).with_conversation_start_date(DATE)
    msgs = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system)]
    if instructions:
        msgs.append(oh.Message.from_role_and_content(
            oh.Role.DEVELOPER, oh.DeveloperContent.new().with_instructions(instructions)))
    for m in messages:
        msg = oh.Message.from_role_and_content(oh.Role(m.role), m.content)
        msgs.append(msg.with_channel(m.channel) if m.channel else msg)
    return oh.Conversation.from_messages(msgs)


U = lambda text: Message("user", text)  # noqa: E731
A = lambda text, ch="final": Message("assistant", text, ch)  # noqa: E731

CONVERSATIONS = {
    "single": [U("What is 2+2?")],
    "empty_user": [U("")],
    "unicode": [U("Grüße aus Köln — 日本語で答えて 🙂\n\tnew line")],
    "two_turns": [U("hi"), A("Hello! How can I help?"), U("Tell me a joke.")],
    "earlier_analysis": [U("hi"), A("The user greets.", "analysis"), A("Hello!"), U("and now?")],
    "markdown": [U("List:\n- a\n- b"), A("**bold** `code`\n\n```py\nprint(1)\n```"), U("ok")],
}


@pytest.mark.parametrize("effort", harmony.EFFORTS)
@pytest.mark.parametrize("instructions", ["", "Answer in French.", "Réponds en 日本語.\n\nTwo paragraphs."])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_render_matches_openai_harmony(enc, tok, name, effort, instructions):
    messages = CONVERSATIONS[name]
    expected = enc.render_conversation_for_completion(_oh_conversation(messages, effort, instructions),
                                                      oh.Role.ASSISTANT)
    text = harmony.render_prompt(messages, effort=effort, date=DATE, instructions=instructions)
    assert text == enc.decode(expected)
    assert tok.encode(text, allowed_special="all") == expected


def test_earlier_turns_keep_only_final_answers(enc, tok):
    """Three turns with thinking: every earlier analysis is dropped, as the official template does.

    (openai-harmony 0.0.8 only drops analysis before the *first* final answer, so it is compared on
    the conversation with the analysis already removed; the jinja template is checked too.)
    """
    jinja2 = pytest.importorskip("jinja2")
    turns = [("q1", "think 1", "a1"), ("q2", "think 2", "a2"), ("q3", "think 3", "a3")]
    with_thinking = [m for q, t, a in turns for m in (U(q), A(t, "analysis"), A(a))] + [U("q4")]
    text = harmony.render_prompt(with_thinking, effort="high", date=DATE)
    assert "think" not in text
    finals_only = [m for m in with_thinking if m.channel != "analysis"]
    expected = enc.render_conversation_for_completion(_oh_conversation(finals_only, "high", ""),
                                                      oh.Role.ASSISTANT)
    assert tok.encode(text, allowed_special="all") == expected

    env = jinja2.Environment()
    env.globals["strftime_now"] = lambda fmt: DATE
    env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(ValueError(msg))
    template = env.from_string((DATA / "gpt-oss.chat_template.jinja").read_text())
    chat = [{"role": "user", "content": q} if i % 2 == 0 else {"role": "assistant", "content": a, "thinking": t}
            for q, t, a in turns for i in range(2)] + [{"role": "user", "content": "q4"}]
    assert template.render(messages=chat, reasoning_effort="high", add_generation_prompt=True) == text


def test_bad_effort_is_rejected():
    with pytest.raises(ValueError):
        harmony.render_prompt([U("x")], effort="extreme")


# -- parser ----------------------------------------------------------------------------------------

CONTROL_TEXT = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>",
                "<|constrain|>", "<|endoftext|>", "<|reserved")

WELL_FORMED = {
    "analysis_then_final": "<|channel|>analysis<|message|>User says hi. Reply ünïcödé 日本.<|end|>"
                           "<|start|>assistant<|channel|>final<|message|>Hello **there** 🙂<|return|>",
    "final_only": "<|channel|>final<|message|>Just the answer.<|return|>",
    "commentary_preamble": "<|channel|>commentary<|message|>Checking the weather.<|end|>"
                           "<|start|>assistant<|channel|>final<|message|>Sunny.<|return|>",
    "tool_call": "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary"
                 " to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>",
    "recipient_first": " to=functions.lookup<|channel|>commentary json<|message|>{\"q\": 1}<|call|>",
}
STOPS = {"analysis_then_final": "return", "final_only": "return", "commentary_preamble": "return",
         "tool_call": "call", "recipient_first": "call"}


def _bytes_of(tok):
    return lambda t: tok.decode_single_token_bytes(t)


def _run(tok, tokens):
    parser = StreamParser(_bytes_of(tok))
    deltas = []
    for t in tokens:
        d = parser.feed(t)
        if d:
            deltas.append(d)
    d = parser.finish()
    if d:
        deltas.append(d)
    return parser, deltas


@pytest.mark.parametrize("name", sorted(WELL_FORMED))
def test_parser_matches_streamable_parser(enc, tok, name):
    tokens = tok.encode(WELL_FORMED[name], allowed_special="all")
    ref = oh.StreamableParser(enc, oh.Role.ASSISTANT)
    ref_deltas = []
    for t in tokens:
        ref.process(t)
        if ref.last_content_delta:
            ref_deltas.append((ref.current_channel, ref.last_content_delta))
    parser, deltas = _run(tok, tokens)
    ours = [(m.role, m.channel, m.recipient, m.content_type, m.content) for m in parser.messages]
    theirs = [(m.author.role.value, m.channel, m.recipient, m.content_type, m.content[0].text)
              for m in ref.messages]
    assert ours == theirs
    assert "".join(d[1] for d in deltas) == "".join(d[1] for d in ref_deltas)
    assert [c for c, _ in deltas] == [c for c, _ in ref_deltas]
    assert parser.done and parser.stop_reason == STOPS[name]


def test_parser_stops_after_final_end_and_ignores_the_rest(tok):
    tokens = tok.encode("<|channel|>final<|message|>Done.<|end|><|start|>user<|message|>more",
                        allowed_special="all")
    parser, deltas = _run(tok, tokens)
    assert parser.done and parser.stop_reason == "end"
    assert parser.text("final") == "Done." and "".join(d[1] for d in deltas) == "Done."


def test_parser_splits_multibyte_characters_across_tokens(tok):
    emoji = "🙂".encode()
    pieces = {1: emoji[:2], 2: emoji[2:]}
    head = tok.encode("<|channel|>final<|message|>", allowed_special="all")
    parser = StreamParser(lambda t: pieces.get(t) or tok.decode_single_token_bytes(t))
    out = [parser.feed(t) for t in head + [1, 2, harmony.RETURN]]
    assert [d for d in out if d] == [("final", "🙂")]


# name: (stream, the text a reader is shown: every delta joined, and every message's content joined)
MALFORMED = {
    "missing_header": ("Hello world, no header at all.", "Hello world, no header at all."),
    "missing_header_then_return": ("Plain answer<|return|>", "Plain answer"),
    "garbage_after_end": ("<|channel|>analysis<|message|>hmm<|end|>garbage text here", "hmmgarbage text here"),
    "garbage_specials": ("<|message|><|channel|><|constrain|><|end|><|start|><|message|>x<|reserved_200100|>y",
                         "xy"),
    "empty_final_then_answer": ("<|channel|>final<|message|><|end|><|start|>assistant<|channel|>final<|message|>"
                                "4<|return|>", "4"),
    "truncated_header": ("<|channel|>fin", "fin"),
    "truncated_content": ("<|channel|>analysis<|message|>thinking about it", "thinking about it"),
    "empty_channel": ("<|channel|><|message|>answer<|end|>", "answer"),
    "start_inside_content": ("<|channel|>final<|message|>a<|start|>b<|return|>", "ab"),
    "newline_in_header": ("<|channel|>final\nThe answer is 4.", "final\nThe answer is 4."),
    "unknown_channel": ("<|channel|>bogus<|message|>text<|return|>", "text"),
    "channel_skipped_start": ("<|channel|>analysis<|message|>x<|end|><|channel|>final<|message|>y<|return|>", "xy"),
    "only_controls": ("<|end|><|end|><|start|><|start|><|return|>", ""),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_parser_survives_malformed_streams(tok, name):
    """No control token text reaches the reader, and the text the model wrote does (a parser that dropped
    everything would pass the first check alone)."""
    stream, want = MALFORMED[name]
    parser, deltas = _run(tok, tok.encode(stream, allowed_special="all"))
    shown = "".join(d[1] for d in deltas)
    assert not any(c in shown + "".join(m.content for m in parser.messages) for c in CONTROL_TEXT)
    assert shown == want and "".join(m.content for m in parser.messages) == want
    for m in parser.messages:
        assert m.channel in harmony.CHANNELS


def _streamable_parser_text(enc, tokens):
    """The content openai-harmony's StreamableParser streams until the end or the token it rejects, with the
    control token text it passes through as content (`<|start|>` inside a message, for one) removed."""
    ref = oh.StreamableParser(enc, oh.Role.ASSISTANT)
    text = ""
    try:
        for t in tokens:
            ref.process(t)
            text += ref.last_content_delta or ""
        ref.process_eos()
    except oh.HarmonyError:
        pass
    return re.sub(r"<\|[a-z_0-9]+\|>", "", text)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_parser_shows_what_the_streamable_parser_shows_before_it_gives_up(enc, tok, name):
    """Being lenient adds text where openai-harmony raises; it never loses text openai-harmony shows."""
    tokens = tok.encode(MALFORMED[name][0], allowed_special="all")
    _, deltas = _run(tok, tokens)
    assert "".join(d[1] for d in deltas).startswith(_streamable_parser_text(enc, tokens))


def test_missing_header_falls_back_to_final(tok):
    parser, deltas = _run(tok, tok.encode("Hello world, no header at all.", allowed_special="all"))
    assert parser.text("final") == "Hello world, no header at all."
    assert {c for c, _ in deltas} == {"final"}


def test_newline_in_header_falls_back_to_final(tok):
    parser, _ = _run(tok, tok.encode("<|channel|>final\nThe answer is 4.<|return|>", allowed_special="all"))
    assert parser.text("final") == "final\nThe answer is 4." and parser.stop_reason == "return"


def test_truncated_analysis_is_kept_as_analysis(tok):
    parser, _ = _run(tok, tok.encode("<|channel|>analysis<|message|>thinking about it", allowed_special="all"))
    assert parser.text("analysis") == "thinking about it" and parser.text("final") == ""
    assert not parser.done
