"""Chat session: turns, context trimming, Ctrl-C, stats, transcripts — on scripted token streams."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from converters.errors import BadInputError
from gptoss_cli.engine.session import Sampling, Session, stats_rows
from gptoss_cli.engine.turn import run_turn

DATA = Path(__file__).parent / "data"
tiktoken = pytest.importorskip("tiktoken")
oh = pytest.importorskip("openai_harmony")



class ScriptedModel:
    """The model seam: real tokenizer, scripted replies (one harmony string per call)."""

    def __init__(self, tok, replies, n_ctx=4096, interrupt_after=None):
        self.tok, self.replies, self.n_ctx = tok, list(replies), n_ctx
        self.interrupt_after = interrupt_after
        self.prompts, self.max_tokens, self.closed = [], [], 0

    def tokenize(self, text):
        return self.tok.encode(text, allowed_special="all")

    def tokenize_plain(self, text):
        return self.tok.encode(text, disallowed_special=())

    def token_bytes(self, token):
        return self.tok.decode_single_token_bytes(token)

    def generate(self, prompt, *, temperature, top_p, max_tokens, stop):
        self.prompts.append(list(prompt))
        self.max_tokens.append(max_tokens)
        tokens = self.tokenize(self.replies.pop(0))
        try:
            for i, t in enumerate(tokens[:max_tokens]):
                if self.interrupt_after is not None and i == self.interrupt_after:
                    raise KeyboardInterrupt
                yield t
                if t in stop:
                    return
        finally:
            self.closed += 1


def _oh_tokens(enc_messages, effort="medium", instructions="", date="2026-01-01"):
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(DATA)
    enc = oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    system = oh.SystemContent.new().with_reasoning_effort(oh.ReasoningEffort(effort.capitalize())) \
        .with_conversation_start_date(date)
    msgs = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system)]
    if instructions:
        msgs.append(oh.Message.from_role_and_content(
            oh.Role.DEVELOPER, oh.DeveloperContent.new().with_instructions(instructions)))
    for role, text, channel in enc_messages:
        m = oh.Message.from_role_and_content(oh.Role(role), text)
        msgs.append(m.with_channel(channel) if channel else m)
    return enc.render_conversation_for_completion(oh.Conversation.from_messages(msgs), oh.Role.ASSISTANT)


REPLY = "<|channel|>analysis<|message|>The user asks. Think.<|end|><|start|>assistant<|channel|>final" \
        "<|message|>**Four.**<|return|>"


def test_turn_splits_channels_and_next_prompt_keeps_only_the_answer(tok):
    model = ScriptedModel(tok, [REPLY, "<|channel|>final<|message|>Bye.<|return|>"])
    s = Session(n_ctx=4096, effort="high", instructions="Be brief.", date="2026-01-01")
    seen = []
    result = run_turn(s, model, "2+2?", Sampling(), on_delta=lambda ch, text: seen.append((ch, text)))
    assert result.turn.final == "**Four.**" and result.turn.analysis == "The user asks. Think."
    assert result.stats.stop_reason == "return" and model.closed == 1
    assert {ch for ch, _ in seen} == {"analysis", "final"}
    assert model.prompts[0] == _oh_tokens([("user", "2+2?", None)], "high", "Be brief.")

    run_turn(s, model, "thanks", Sampling())
    expected = _oh_tokens([("user", "2+2?", None), ("assistant", "The user asks. Think.", "analysis"),
                           ("assistant", "**Four.**", "final"), ("user", "thanks", None)], "high", "Be brief.")
    assert model.prompts[1] == expected
    assert "Think" not in tok.decode(model.prompts[1])


def test_stats_count_tokens_and_context(tok):
    model = ScriptedModel(tok, [REPLY])
    s = Session(n_ctx=4096, date="2026-01-01")
    stats = run_turn(s, model, "hello", Sampling()).stats
    n_reply = len(tok.encode(REPLY, allowed_special="all"))
    assert stats.prompt_tokens == len(model.prompts[0]) and stats.gen_tokens == n_reply
    assert 0 < stats.analysis_tokens < n_reply
    assert stats.context_used == stats.prompt_tokens + n_reply and stats.n_ctx == 4096
    assert stats.ttft_s >= 0 and stats.decode_tps > 0
    rows = dict(stats_rows(s))
    assert rows["prompt tokens"] == str(stats.prompt_tokens)
    assert rows["context used"].startswith(f"{stats.context_used} / 4096")


def test_max_tokens_caps_generation_and_reports_length(tok):
    model = ScriptedModel(tok, [REPLY])
    s = Session(n_ctx=4096)
    result = run_turn(s, model, "hi", Sampling(max_tokens=5))
    assert model.max_tokens == [5] and result.stats.gen_tokens == 5
    assert result.turn.stop_reason == "length"


def test_generation_never_asks_past_the_context(tok):
    model = ScriptedModel(tok, [REPLY], n_ctx=200)
    s = Session(n_ctx=200)
    run_turn(s, model, "hi", Sampling())
    assert len(model.prompts[0]) + model.max_tokens[0] == 200


def test_ctrl_c_stops_generation_and_keeps_the_partial_turn(tok):
    text = "<|channel|>final<|message|>one two three four five six seven<|return|>"
    model = ScriptedModel(tok, [text, "<|channel|>final<|message|>ok<|return|>"], interrupt_after=6)
    s = Session(n_ctx=4096)
    result = run_turn(s, model, "count", Sampling())
    assert result.turn.stop_reason == "interrupted" and model.closed == 1
    assert result.turn.final and "seven" not in result.turn.final
    model.interrupt_after = None
    run_turn(s, model, "again", Sampling())
    assert len(s.turns) == 2 and f"{result.turn.final}<|end|>" in tok.decode(model.prompts[1])


def test_context_trimming_drops_oldest_turns_never_system_or_developer(tok):
    replies = [f"<|channel|>final<|message|>{'answer ' * 80}{i}<|return|>" for i in range(8)]
    model = ScriptedModel(tok, replies, n_ctx=700)
    s = Session(n_ctx=700, instructions="Stay on topic.")
    dropped = 0
    for i in range(8):
        dropped += run_turn(s, model, f"question {i}", Sampling(max_tokens=100)).stats.dropped_turns
    last = tok.decode(model.prompts[-1])
    assert dropped > 0 and s.start == dropped and len(s.turns) == 8
    assert last.startswith("<|start|>system<|message|>You are ChatGPT")
    assert "# Instructions\n\nStay on topic." in last
    assert "question 0" not in last and "question 7" in last
    assert all(len(p) + 100 <= 700 for p in model.prompts)


def test_prompt_longer_than_context_is_a_clear_error(tok):
    s = Session(n_ctx=200)
    run_turn(s, ScriptedModel(tok, [REPLY], n_ctx=200), "hi", Sampling(max_tokens=20))
    with pytest.raises(BadInputError, match="context holds 200"):
        run_turn(s, ScriptedModel(tok, [REPLY], n_ctx=200), "word " * 400, Sampling())
    assert s.start == 0 and len(s.turns) == 1  # the refused message changed nothing


def test_effort_change_reaches_the_system_message(tok):
    s = Session(n_ctx=4096, effort="low")
    assert "Reasoning: low" in s.render("x")
    s.effort = "high"
    assert "Reasoning: high" in s.render("x")


def test_save_load_round_trip(tok, tmp_path):
    model = ScriptedModel(tok, [REPLY])
    s = Session(n_ctx=4096, effort="high", instructions="Réponds en français.")
    run_turn(s, model, "deux plus deux ?", Sampling())
    path = s.save(tmp_path / "chat.json", model="tiny.gguf")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["turns"][0]["final"] == "**Four.**" and data["system"] == "Réponds en français."
    assert not list(tmp_path.glob("*.partial"))
    other = Session(n_ctx=4096)
    other.load(path)
    assert other.effort == "high" and other.instructions == s.instructions
    assert other.render("next") == s.render("next")


@pytest.mark.parametrize("content", ["not json", json.dumps({"format": "other"}),
                                     json.dumps({"format": "gptoss-chat/1", "turns": [{"nope": 1}]})])
def test_load_rejects_bad_transcripts(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    s = Session(n_ctx=4096)
    with pytest.raises(BadInputError):
        s.load(path)
    with pytest.raises(BadInputError, match="no such file"):
        s.load(tmp_path / "missing.json")


def test_reset_keeps_settings(tok):
    s = Session(n_ctx=4096, effort="low", instructions="x")
    run_turn(s, ScriptedModel(tok, [REPLY]), "hi", Sampling())
    s.reset()
    assert s.turns == [] and s.effort == "low" and s.instructions == "x"
