"""`gptoss chat` end to end on real llama.cpp with the tiny random-weight GGUF.

The tiny model's text is gibberish by design: these tests check the mechanics a user relies on (what
lands on stdout, exit codes, the REPL's commands, Ctrl-C, transcripts), not the content.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parent.parent
CONTROL = re.compile(r"<\|(start|end|message|channel|return|call|constrain|endoftext|reserved_\d+)\|>")
ANSI = "\x1b["
ANSI_SEQ = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
pytestmark = pytest.mark.slow


def _chat(cli, gguf, *args, input=None):
    return cli("chat", str(gguf), "--ctx-size", "512", "--seed", "7", *args, input=input)


def test_one_shot_prints_only_the_final_answer(cli, tiny_gguf):
    plain = _chat(cli, tiny_gguf, "-p", "What is 2+2?", "--max-tokens", "12")
    as_json = _chat(cli, tiny_gguf, "-p", "What is 2+2?", "--max-tokens", "12", "--json")
    assert plain.returncode == 0 and as_json.returncode == 0, plain.stderr + as_json.stderr
    final = json.loads(as_json.stdout)["final"]
    assert final.strip()
    # Same seed, same prompt: stdout is exactly the answer of the JSON document, plus a newline.
    assert plain.stdout == final + ("" if final.endswith("\n") else "\n")
    assert not CONTROL.search(plain.stdout) and ANSI not in plain.stdout + plain.stderr
    assert "Traceback" not in plain.stderr


def test_piped_stdin_is_one_shot(cli, tiny_gguf):
    r = _chat(cli, tiny_gguf, "--max-tokens", "6", input="2+2?\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and not CONTROL.search(r.stdout)


def test_json_is_one_valid_document(cli, tiny_gguf):
    r = _chat(cli, tiny_gguf, "-p", "hi", "--max-tokens", "9", "--json", "--effort", "high")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"final", "analysis", "stop_reason", "tokens", "timings"}
    assert doc["stop_reason"] == "length" and doc["effort"] == "high"
    assert doc["tokens"]["generated"] == 9 and doc["tokens"]["prompt"] > 50
    assert doc["timings"]["ttft_s"] > 0 and doc["timings"]["decode_tokens_per_s"] > 0
    assert not CONTROL.search(doc["final"] + doc["analysis"])


@pytest.mark.parametrize("args, needle", [
    (["/nonexistent/model.gguf"], "no such file"),
    (["not-a-model"], "model not found"),
])
def test_bad_model_is_a_one_line_error_and_exit_2(cli, args, needle):
    r = cli("chat", *args, "-p", "hi")
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_file_that_is_not_a_gguf_is_rejected(cli, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello")
    r = cli("chat", str(fake), "-p", "hi")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_no_model_argument_uses_the_last_gguf_written(cli, tiny_gguf):
    from gptoss_cli import paths

    paths.remember("gguf", tiny_gguf)  # what `gptoss quantize` records
    r = cli("chat", "-p", "hi", "--max-tokens", "3", "--ctx-size", "512")
    assert r.returncode == 0, r.stderr
    assert f"using {tiny_gguf}" in r.stderr and r.stdout.strip()


def test_fit_prints_the_plan_and_conflicts_with_manual_placement(cli, tiny_gguf):
    r = _chat(cli, tiny_gguf, "-p", "hi", "--max-tokens", "3", "--fit")
    assert r.returncode == 0, r.stderr
    assert "--fit:" in r.stderr and r.stdout.strip()
    r = _chat(cli, tiny_gguf, "-p", "hi", "--fit", "--n-cpu-moe", "2")
    assert r.returncode == 2 and "either --fit" in r.stderr


def test_bad_effort_and_empty_prompt_exit_2(cli, tiny_gguf):
    assert _chat(cli, tiny_gguf, "-p", "hi", "--effort", "extreme").returncode == 2
    r = _chat(cli, tiny_gguf, input="\n")
    assert r.returncode == 2 and "prompt is empty" in r.stderr


def _plain(screen: str) -> str:
    """Terminal output as a user reads it: escape sequences removed, line wraps joined."""
    return re.sub(r"\s+", " ", ANSI_SEQ.sub("", screen))


def _spawn(gguf, *args):
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100", "LINES": "30"}
    child = pexpect.spawn(sys.executable, ["-m", "gptoss_cli", "chat", str(gguf), "--ctx-size", "1024",
                                           "--seed", "3", *args],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=120, dimensions=(30, 100))
    child.expect_exact(">>> ")
    return child


def test_repl_session(tiny_gguf, tmp_path):
    child = _spawn(tiny_gguf, "--max-tokens", "300")

    def until_prompt():
        child.expect_exact(">>> ")
        return _plain(child.before)

    # A multi-line message, answered to the end (the token limit).
    child.sendline('"""')
    child.sendline("first line")
    child.sendline('second line"""')
    answer = until_prompt()
    assert "[stopped at the token limit" in answer and not CONTROL.search(answer)

    child.sendline("/effort high")
    assert "effort: high" in until_prompt()
    child.sendline("/bogus")
    assert "unknown command /bogus" in until_prompt()

    child.sendline("/stats")
    stats = until_prompt()
    for row in ("prompt tokens", "generated tokens", "time to first token", "decode speed", "context used"):
        assert row in stats
    assert re.search(r"generated tokens\s*│?\s*300 ", stats)

    transcript = tmp_path / "chat.json"
    child.sendline(f"/save {transcript}")
    assert "saved 1 turn(s)" in until_prompt()
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    doc = json.loads(transcript.read_text())
    assert [t["user"] for t in doc["turns"]] == ["first line\nsecond line"]
    assert [t["stop_reason"] for t in doc["turns"]] == ["length"]
    assert doc["effort"] == "high"
    history = Path(os.environ["XDG_STATE_HOME"]) / "gptoss" / "chat_history"
    assert "/effort high" in history.read_text()


def test_repl_ctrl_c_stops_a_streaming_reply_and_the_session_goes_on(tiny_gguf, tmp_path):
    # No --max-tokens and a 16k context: the reply may run to ~16,000 tokens (many seconds on the tiny model),
    # so it cannot end before the Ctrl-C that is sent as soon as its first text has streamed.
    child = _spawn(tiny_gguf, "--ctx-size", "16384")
    child.sendline("tell me a long story")
    child.expect_exact("tell me a long story")
    child.expect(r"\S", timeout=60)  # the first streamed text (the live view starts with the first token)
    child.sendintr()
    child.expect_exact(">>> ")
    assert "[interrupted]" in _plain(child.before)
    child.sendline("/stats")
    child.expect_exact(">>> ")
    stats = _plain(child.before)
    assert "interrupted" in stats
    gen = int(re.search(r"generated tokens\s*│?\s*(\d+)", stats).group(1))
    used, room = map(int, re.search(r"context used\s*│?\s*(\d+) / (\d+)", stats).groups())
    assert 0 < gen and used < room  # stopped mid-reply, with room left

    transcript = tmp_path / "chat.json"
    child.sendline(f"/save {transcript}")
    child.expect_exact(">>> ")
    assert "saved 1 turn(s)" in _plain(child.before)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    turn = json.loads(transcript.read_text())["turns"][0]
    assert turn["user"] == "tell me a long story" and turn["stop_reason"] == "interrupted"
    assert turn["gen_tokens"] == gen


def test_repl_ctrl_d_quits_and_load_restores(tiny_gguf, tmp_path):
    saved = tmp_path / "in.json"
    saved.write_text(json.dumps({"format": "gptoss-chat/1", "effort": "low", "system": "Be terse.",
                                 "turns": [{"user": "hi", "final": "Hello!", "stop_reason": "return"}]}))
    child = _spawn(tiny_gguf, "--max-tokens", "4")
    child.sendline(f"/load {saved}")
    child.expect_exact(">>> ")
    assert "loaded 1 turn(s)" in _plain(child.before) and "effort low" in _plain(child.before)
    child.sendline("/system")
    child.expect_exact(">>> ")
    assert "Be terse." in _plain(child.before)
    for command, shown in [("/think", "thinking: shown"), ("/help", "/effort low|medium|high"),
                           ("/reset", "new conversation"), ("/effort extreme", "unknown effort")]:
        child.sendline(command)
        child.expect_exact(">>> ")
        assert shown in _plain(child.before)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_llama_cpp_tokenizes_our_prompt_as_openai_harmony_does(tiny_gguf):
    """The text prompt, tokenized by llama.cpp with the GGUF's vocabulary, equals harmony's tokens."""
    oh = pytest.importorskip("openai_harmony")
    from gptoss_cli.engine import harmony
    from gptoss_cli.engine.backend import Backend, BackendOptions

    messages = [harmony.Message("user", "Grüße — 日本語 🙂 2+2?"), harmony.Message("assistant", "4", "final"),
                harmony.Message("user", "and 3+3?")]
    text = harmony.render_prompt(messages, effort="high", date="2026-01-01", instructions="Be brief.")
    enc = oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    system = oh.SystemContent.new().with_reasoning_effort(oh.ReasoningEffort.HIGH) \
        .with_conversation_start_date("2026-01-01")
    convo = oh.Conversation.from_messages(
        [oh.Message.from_role_and_content(oh.Role.SYSTEM, system),
         oh.Message.from_role_and_content(oh.Role.DEVELOPER, oh.DeveloperContent.new().with_instructions("Be brief."))]
        + [oh.Message.from_role_and_content(oh.Role(m.role), m.content).with_channel(m.channel) if m.channel
           else oh.Message.from_role_and_content(oh.Role(m.role), m.content) for m in messages])
    with Backend(tiny_gguf, BackendOptions(ctx_size=256)) as backend:
        assert backend.tokenize(text) == enc.render_conversation_for_completion(convo, oh.Role.ASSISTANT)
        for name, token in harmony.SPECIAL_IDS.items():
            assert backend.tokenize(name) == [token] and backend.token_bytes(token) == name.encode()


def test_repl_view_thinking_shown_dimmed_or_summarised(tiny_gguf):
    """llama.cpp's tokenizer, a scripted reply: thinking is shown or becomes a note; the answer is Markdown."""
    import io

    from rich.console import Console

    from gptoss_cli.chat.repl import Repl
    from gptoss_cli.engine.backend import Backend, BackendOptions
    from gptoss_cli.engine.session import Sampling, Session

    reply = ("<|channel|>analysis<|message|>Let me think about lists.<|end|><|start|>assistant<|channel|>final"
             "<|message|># Groceries\n\n- **milk**\n- eggs<|return|>")

    with Backend(tiny_gguf, BackendOptions(ctx_size=512)) as real:
        class Scripted:
            n_ctx, tokenize, token_bytes = real.n_ctx, real.tokenize, real.token_bytes

            def generate(self, prompt, **_):
                yield from real.tokenize(reply)

        n_thinking = len(real.tokenize("Let me think about lists.<|end|>"))
        for show in (False, True):
            buf = io.StringIO()
            repl = Repl(Session(n_ctx=512), Scripted(), Sampling(), show_thinking=show,
                        console=Console(file=buf, width=80, force_terminal=False))
            result = repl.ask("shopping list?")
            screen = buf.getvalue()
            assert result.stats.stop_reason == "return"
            assert ("Let me think about lists." in screen) is show
            assert (f"thought for {n_thinking} tokens" in screen) is not show
            assert "Groceries" in screen and "milk" in screen
            assert "**" not in screen and "# " not in screen  # rendered as Markdown, not raw
            assert not CONTROL.search(screen)
