"""Text from a model, a tool, a file name or the hub cannot drive the user's terminal (issue 17, part 4).

A scripted reply (GPTOSS_TEST_REPLY), a tool result (tests/mcp_servers/demo_server.py `hostile`) and file
names carry OSC 0/8/52, CSI erase/colour/cursor moves, CR, BS, BEL and a C1 CSI. Through a pty, every escape
sequence on the screen must be one the program itself writes (colours, its live view's cursor-up and erase,
private modes), and the payload must show as visible symbols. Piped one-shot output stays byte-exact, and
`--json` escapes it. In tmux (a real terminal): the window title, colours and clipboard stay untouched, and a
long streamed reply from the random model (mixed scripts, broken UTF-8) leaves each line once in the
scrollback.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

pytest.importorskip("llama_cpp")
pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "tests" / "mcp_servers"))
from demo_server import HOSTILE  # noqa: E402

DEMO = f"{sys.executable} {ROOT / 'tests' / 'mcp_servers' / 'demo_server.py'}"
ANSWER = f"Sure, [click here](http://evil.example/x).\n\n{HOSTILE}\n\nsecond line"
THINKING = f"thinking {HOSTILE} done"
REPLY = (f"<|channel|>analysis<|message|>{THINKING}<|end|>"
         f"<|start|>assistant<|channel|>final<|message|>{ANSWER}<|return|>")
# How the payload must look on a terminal: every control character a visible symbol.
SHOWN = ["A␛]0;PWNED-TITLE␇B", "␛]8;;http://evil.example/␛\\link", "␛]52;c;cHduZWQ=␇", "D␛[2K␛[31mRED␛[0m",
         "␛[3A␛[10;10HE␍F␈G␇H\\x9b31mI"]
# What the program itself writes: SGR colours, cursor up, erase, and private modes (autowrap, cursor, paste).
OWN_SEQUENCE = re.compile(r"\x1b\[(?:[0-9;]*[mAJK]|\?[0-9]+[hl])")
ANY_SEQUENCE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|.)", re.S)
PROMPT = r"(?m)^>>>"  # the REPL's prompt in a tmux capture (trailing spaces are not kept)
ANSI_SEQ = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _foreign(raw: str) -> list[str]:
    """The escape sequences and raw control characters on the screen that the program does not write itself."""
    bad = [m.group() for m in ANY_SEQUENCE.finditer(raw) if not OWN_SEQUENCE.fullmatch(m.group())]
    bad += [c for c in raw if c in "\x07\x08\x7f" or "\x80" <= c <= "\x9f"]
    bad += [piece for piece in ("E\rF", "H\rF") if piece in raw]  # the payload's CR (the program writes its own)
    return bad


def _plain(raw: str) -> str:
    return ANSI_SEQ.sub("", raw).replace("\r", "")


@pytest.fixture
def reply(tmp_path) -> dict:
    path = tmp_path / "reply.txt"
    path.write_bytes(REPLY.encode("utf-8"))
    return {"GPTOSS_TEST_REPLY": str(path)}


def _spawn(args: list[str], env: dict | None = None, width: int = 220) -> tuple:
    log = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-m", "gptoss_cli", *args], cwd=str(ROOT), encoding="utf-8",
                          env={**os.environ, "TERM": "xterm", "COLUMNS": str(width), "LINES": "40", **(env or {})},
                          timeout=180, dimensions=(40, width))
    child.logfile_read = log
    return child, log


def _check_screen(raw: str, shown: list[str]) -> None:
    assert not _foreign(raw), _foreign(raw)
    plain = _plain(raw)
    unwrapped = re.sub(r"\s*\n\s*", "", plain)   # a long path in a table title wraps at the screen's width
    for text in shown:
        assert text in plain or text in unwrapped, (text, plain[-3000:])


def test_repl_shows_a_hostile_reply_and_thinking_as_visible_text(tiny_gguf, reply, tmp_path):
    transcript = tmp_path / "saved.json"
    transcript.write_text(json.dumps({"format": "gptoss-chat/1", "effort": "low", "system": f"be {HOSTILE}",
                                      "turns": [{"user": "hi", "final": HOSTILE, "stop_reason": "return"}]}))
    child, log = _spawn(["chat", str(tiny_gguf), "--ctx-size", "1024"], reply)
    child.expect_exact(">>> ")
    child.sendline("/think")
    child.expect_exact(">>> ")
    child.sendline("hello")
    child.expect_exact("second line")
    child.expect_exact(">>> ")
    child.sendline(f"/load {transcript}")
    child.expect_exact(">>> ")
    child.sendline("/system")
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    raw = log.getvalue()
    _check_screen(raw, SHOWN)
    plain = _plain(raw)
    assert "thinking A␛]0;PWNED-TITLE␇B" in plain  # the thinking, shown with /think
    assert "instructions: be A␛]0;PWNED-TITLE␇B" in plain  # a loaded transcript's instructions
    assert "http://evil.example/x" in plain  # a Markdown link shows where it goes


def test_a_hostile_tool_result_is_shown_as_visible_text(tiny_gguf):
    child, log = _spawn(["chat", str(tiny_gguf), "--ctx-size", "1024", "--seed", "3", "--mcp", DEMO,
                         "--tool-choice", "hostile", "--thinking-budget", "0", "--max-tokens", "40"])
    child.expect_exact(">>> ")
    child.sendline("fetch the page")
    child.expect_exact("run it? [y]es / [n]o / [a]lways this tool: ")
    child.sendline("y")
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    raw = log.getvalue()
    _check_screen(raw, [f"tool hostile (demo_server) {{}} -> {s}" if i == 0 else s for i, s in enumerate(SHOWN)])


def test_one_shot_on_a_terminal_shows_visible_text(tiny_gguf, reply):
    child, log = _spawn(["chat", str(tiny_gguf), "--ctx-size", "1024", "-p", "hi", "--show-thinking"], reply)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    _check_screen(log.getvalue(), SHOWN + ["thinking A␛]0;PWNED-TITLE␇B"])


def test_one_shot_piped_is_byte_exact_and_json_escapes(tiny_gguf, reply):
    base = [sys.executable, "-m", "gptoss_cli", "chat", str(tiny_gguf), "--ctx-size", "1024", "-p", "hi"]
    env = {**os.environ, **reply}
    piped = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (ANSWER + "\n").encode("utf-8")  # the model's bytes, as they are
    as_json = subprocess.run([*base, "--json"], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["final"] == ANSWER
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]", as_json.stdout)


# Trojan Source (CVE-2021-42574): an override and isolates make a terminal show this line reordered.
BIDI = 'access = "user\u202e \u2066// admin check\u2069 \u2066" LRE\u202aPDF\u202c RLI\u2067FSI\u2068 RLM\u200f'
BIDI_SHOWN = ('access = "user\\u202e \\u2066// admin check\\u2069 \\u2066" LRE\\u202aPDF\\u202c '
              'RLI\\u2067FSI\\u2068 RLM\u200f')


def test_bidi_controls_show_as_escapes_on_a_terminal_and_stay_piped(tiny_gguf, tmp_path):
    path = tmp_path / "reply.txt"
    path.write_text(f"<|channel|>final<|message|>{BIDI}<|return|>", encoding="utf-8")
    env = {"GPTOSS_TEST_REPLY": str(path)}
    for args in (["-p", "hi"], []):         # one-shot, then the REPL's Markdown view
        child, log = _spawn(["chat", str(tiny_gguf), "--ctx-size", "1024", *args], env)
        if not args:
            child.expect_exact(">>> ")
            child.sendline("hello")
            child.expect_exact(">>> ")
            child.sendline("/exit")
        child.expect(pexpect.EOF)
        raw = log.getvalue()
        assert not re.search("[\u202a-\u202e\u2066-\u2069]", raw), args
        assert BIDI_SHOWN in _plain(raw), (args, _plain(raw)[-2000:])
    base = [sys.executable, "-m", "gptoss_cli", "chat", str(tiny_gguf), "--ctx-size", "1024", "-p", "hi"]
    piped = subprocess.run(base, cwd=ROOT, env={**os.environ, **env}, capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (BIDI + "\n").encode("utf-8")


def test_file_names_are_shown_as_visible_text_and_piped_results_stay_exact(tiny_gguf, isolated_home):
    models = isolated_home / "gptoss" / "models"
    models.mkdir(parents=True)
    name = "gpt-oss-\x1b]0;PWNED-TITLE\x07\x1b[31m-mxfp4.gguf"
    gguf = models / name
    shutil.copy(tiny_gguf, gguf)
    child, log = _spawn(["list"])
    child.expect(pexpect.EOF)
    _check_screen(log.getvalue(), ["gpt-oss-␛]0;PWNED-TITLE␇␛[31m-mxfp4"])
    child, log = _spawn(["info", str(gguf)])
    child.expect(pexpect.EOF)
    _check_screen(log.getvalue(), ["gpt-oss-␛]0;PWNED-TITLE␇␛[31m-mxfp4.gguf"])
    piped = subprocess.run([sys.executable, "-m", "gptoss_cli", "rm", str(gguf), "--yes"], cwd=ROOT,
                           capture_output=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == f"{gguf}\n".encode()  # the path a script gets is the real one
    assert b"\x1b" not in piped.stderr and "␛]0;PWNED-TITLE␇".encode() in piped.stderr


def test_a_hub_file_name_in_an_error_is_visible_text(monkeypatch, tmp_path):
    from hubserver import HubServer
    from test_pull import repo_files

    files = repo_files()
    files["../\x1b]0;PWNED-TITLE\x07\x1b[2K.safetensors"] = b"x" * 10
    with HubServer() as server:
        server.add_repo("evil/gpt-oss", files)
        env = {**os.environ, "HF_ENDPOINT": server.url, "GPTOSS_PULL_RETRY_WAIT": "0"}
        env.pop("HF_TOKEN", None)
        r = subprocess.run([sys.executable, "-m", "gptoss_cli", "pull", "evil/gpt-oss", "--dir",
                            str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "unsafe file name" in err and "\x1b" not in err and "␛]0;PWNED-TITLE␇␛[2K" in err


# -- a real terminal: tmux ---------------------------------------------------------------------------------

class Tmux:
    """One tmux server on a private socket with one window of the given size."""

    def __init__(self, tmp: Path, command: str, width: int = 110, height: int = 40) -> None:
        self.base = ["tmux", "-S", str(tmp / "tmux.sock"), "-f", "/dev/null"]
        self.run("new-session", "-d", "-x", str(width), "-y", str(height), "sh")
        self.run("set-option", "-g", "history-limit", "100000")
        self.run("set-option", "-g", "set-clipboard", "on")
        self.run("set-option", "-g", "allow-rename", "on")
        self.run("respawn-pane", "-k", command)

    def run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def screen(self, *flags: str) -> str:
        """The pane's whole history and screen, as text."""
        return self.run("capture-pane", "-p", "-S", "-", *flags)

    def wait_for(self, count: int, needle: str, limit: float) -> str:
        """Wait until the regex needle matches `count` times; returns the history."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            text = self.screen()
            if len(re.findall(needle, text)) >= count:
                return text
            time.sleep(0.5)
        raise AssertionError(f"{needle!r} did not show {count} times in {limit} s:\n{self.screen()[-3000:]}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): the real-terminal checks need it")
    made: list[Tmux] = []

    def start(args: list[str], env: dict | None = None, width: int = 110, height: int = 40) -> Tmux:
        env = {"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"], "GPTOSS_HOME": os.environ["GPTOSS_HOME"],
               "HF_HOME": os.environ["HF_HOME"], "TIKTOKEN_ENCODINGS_BASE": os.environ["TIKTOKEN_ENCODINGS_BASE"],
               "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **(env or {})}
        assigns = [shlex.quote(f"{k}={v}") for k, v in env.items()]
        command = " ".join(["cd", shlex.quote(str(ROOT)), "&&", "env", "-u", "COLUMNS", "-u", "LINES", *assigns,
                            shlex.quote(sys.executable), "-m", "gptoss_cli", *map(shlex.quote, args), ";", "sleep 600"])
        made.append(Tmux(tmp_path, command, width, height))
        return made[-1]

    yield start
    for t in made:
        t.close()


def test_in_tmux_a_hostile_reply_changes_no_title_colour_or_clipboard(tmux, tiny_gguf, reply):
    term = tmux(["chat", str(tiny_gguf), "--ctx-size", "1024"], reply, width=200)
    term.wait_for(1, PROMPT, 120)
    title = term.run("display-message", "-p", "#{pane_title}")
    term.run("send-keys", "-l", "hello")
    term.run("send-keys", "Enter")
    text = term.wait_for(2, PROMPT, 120)
    assert "A␛]0;PWNED-TITLE␇B" in text and "D␛[2K␛[31mRED␛[0m" in text  # nothing before ESC[2K was erased
    assert term.run("display-message", "-p", "#{pane_title}") == title and "PWNED" not in title
    assert "\x1b[31m" not in term.screen("-e")  # nothing on the screen turned red
    assert term.run("list-buffers") == ""  # OSC 52 set no clipboard


def test_in_tmux_a_long_mixed_script_reply_leaves_each_line_once(tmux, tiny_gguf):
    """The random model streams gibberish in many scripts with broken UTF-8 (U+FFFD): the live view must
    redraw in place, so the scrollback holds the finished answer once and nothing of the frames."""
    term = tmux(["chat", str(tiny_gguf), "--ctx-size", "4096", "--seed", "1", "--max-tokens", "600"])
    term.wait_for(1, PROMPT, 120)
    for n in (2, 3):  # fill the screen: the reply starts at its bottom, where a miscounted row scrolls
        term.run("send-keys", "/help", "Enter")
        term.wait_for(n, PROMPT, 60)
    term.run("send-keys", "-l", "Hello there, who are you?")
    term.run("send-keys", "Enter")
    text = term.wait_for(1, r"\[stopped at the token limit", 600)
    lines = [line.rstrip() for line in text.splitlines()]
    asked = [i for i, ln in enumerate(lines) if "Hello there" in ln]  # gone if copies overflowed the history
    reply = lines[asked[0] + 1 if asked else 0:]
    assert len([ln for ln in reply if ln.strip()]) > 20  # a long reply
    counted: dict[str, int] = {}
    for line in reply:
        if len(line.strip()) >= 12 and len(set(line.strip())) > 2:  # not a rule or border
            counted[line] = counted.get(line, 0) + 1
    repeated = {line: n for line, n in counted.items() if n > 1}
    assert not repeated, repeated
