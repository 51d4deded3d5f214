"""Thinking through the real CLI: `chat -p` hides it, `--show-thinking` shows it, no final answer is an error.

The random-weight fixture never writes harmony channels by itself. Two ways to get real channels:
- forced structure on the fixture (`--schema` opens the analysis channel, `--thinking-budget` closes it and
  opens the answer): real llama.cpp sampling, gibberish text, real channels;
- a scripted token stream (GPTOSS_TEST_REPLY, gptoss_cli/chat/scripted.py): readable harmony text,
  tokenized by llama.cpp with the tiny GGUF's vocabulary, fed through the CLI's own session, parser, stop
  handling and output paths.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
from conftest import ROOT

pytest.importorskip("llama_cpp")

THINKING = "The user asks 2+2. Simple arithmetic: 4."
ANSWER = "2 + 2 = **4**."
REPLY = (f"<|channel|>analysis<|message|>{THINKING}<|end|>"
         f"<|start|>assistant<|channel|>final<|message|>{ANSWER}<|return|>")
ONLY_THINKING = f"<|channel|>analysis<|message|>{THINKING} Let me double-check that carefully.<|end|>"
CONTROL = re.compile(r"<\|(start|end|message|channel|return|call|constrain)\|>")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def script(tmp_path):
    """Write a scripted reply; returns the env that makes `gptoss chat` use it."""
    def write(text: str) -> dict:
        path = tmp_path / "reply.txt"
        path.write_text(text, encoding="utf-8")
        return {"GPTOSS_TEST_REPLY": str(path)}
    return write


def _chat(cli, gguf, *args, env):
    return cli("chat", str(gguf), "--ctx-size", "512", "-p", "What is 2+2?", *args, env=env)


def test_one_shot_prints_the_answer_and_hides_the_thinking(cli, tiny_gguf, script):
    r = _chat(cli, tiny_gguf, env=script(REPLY))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ANSWER + "\n"
    assert THINKING not in r.stdout + r.stderr and not CONTROL.search(r.stdout + r.stderr)


def test_show_thinking_puts_it_on_stderr_and_keeps_stdout_the_answer(cli, tiny_gguf, script):
    r = _chat(cli, tiny_gguf, "--show-thinking", env=script(REPLY))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ANSWER + "\n"
    assert THINKING in r.stderr and not CONTROL.search(r.stderr)


def test_json_carries_answer_and_thinking_apart(cli, tiny_gguf, script):
    r = _chat(cli, tiny_gguf, "--json", env=script(REPLY))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["final"] == ANSWER and doc["analysis"] == THINKING and doc["stop_reason"] == "return"
    assert 0 < doc["tokens"]["analysis"] < doc["tokens"]["generated"]


@pytest.mark.parametrize("args, why", [([], "eos"), (["--max-tokens", "8"], "length")])
def test_thinking_without_a_final_answer_is_an_error(cli, tiny_gguf, script, args, why):
    r = _chat(cli, tiny_gguf, *args, env=script(ONLY_THINKING))
    assert r.returncode == 1
    assert r.stdout == ""  # the thinking never reaches stdout, not even as a fallback answer
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no answer") and f"({why})" in lines[0], r.stderr
    assert "--max-tokens" in lines[0] and THINKING not in r.stderr


FORCED = ["--seed", "7", "--schema", '{"enum": ["four"]}', "--thinking-budget", "12"]


@pytest.mark.slow
def test_forced_channels_on_the_fixture_thinking_hidden_or_shown(cli, tiny_gguf):
    """Sampled thinking (12 tokens) then a grammar-forced answer; the same seed gives the same reply each run."""
    doc = json.loads(_chat(cli, tiny_gguf, *FORCED, "--json", env={}).stdout)
    assert doc["final"] == '"four"' and doc["stop_reason"] == "return"
    thinking = doc["analysis"].strip()
    assert thinking and doc["tokens"]["analysis"] >= 12
    plain = _chat(cli, tiny_gguf, *FORCED, env={})
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == '"four"\n' and thinking not in plain.stdout + plain.stderr
    shown = _chat(cli, tiny_gguf, *FORCED, "--show-thinking", env={})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == '"four"\n' and thinking in shown.stderr


def test_forced_thinking_cut_by_max_tokens_is_no_answer(cli, tiny_gguf):
    r = _chat(cli, tiny_gguf, *FORCED, "--max-tokens", "8", env={})
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("error: no answer") and "(length)" in r.stderr


def _spawn(gguf, env: dict, *args):
    pexpect = pytest.importorskip("pexpect")
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env = {**base, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30", **env}
    child = pexpect.spawn(sys.executable, ["-m", "gptoss_cli", "chat", str(gguf), "--ctx-size", "512", *args],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=120, dimensions=(30, 100))
    child.expect_exact(">>> ")
    return child


def _ask(child, text: str) -> str:
    child.sendline(text)
    child.expect_exact(">>> ")
    return child.before


def test_repl_in_a_terminal_dims_the_thinking_and_colours_the_answer(tiny_gguf, script):
    """NO_COLOR unset on a terminal: thinking is dimmed, the answer is styled Markdown; /think hides it."""
    child = _spawn(tiny_gguf, script(REPLY), "--show-thinking")
    screen = _ask(child, "What is 2+2?")
    dimmed = "".join(re.findall(r"\x1b\[2m([^\x1b]*)\x1b\[0m", screen))
    assert THINKING in dimmed, repr(screen)  # every piece of the thinking is dimmed
    assert re.search(r"\x1b\[1m4", screen), "the answer's **4** is not bold"
    child.sendline("/think")
    child.expect_exact(">>> ")
    hidden = _ask(child, "And again?")
    assert "The user asks" not in hidden and "thought for" in ANSI.sub("", hidden)
    _quit(child)


def test_repl_with_no_color_has_no_escape_styling(tiny_gguf, script):
    child = _spawn(tiny_gguf, {**script(REPLY), "NO_COLOR": "1"}, "--show-thinking")
    screen = _ask(child, "What is 2+2?")
    assert "The user asks 2+2" in screen and "4" in screen
    assert not re.search(r"\x1b\[[0-9;]*m", screen), repr(screen)  # no colour or bold/dim (SGR) codes
    _quit(child)


def _quit(child) -> None:
    import pexpect

    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
