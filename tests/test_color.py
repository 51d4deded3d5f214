"""Colour follows the terminal: styled on a TTY, plain when piped or with NO_COLOR set (shared CONVENTIONS).

conftest leaves NO_COLOR unset, so these exercise the CLI's own detection; a pty stands in for a terminal.
"""

from __future__ import annotations

import os
import re
import sys

import pytest
from conftest import ROOT, run_cli

pexpect = pytest.importorskip("pexpect")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colour, bold, dim
ESC = "\x1b["


def _in_terminal(*args: str, no_color: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env |= {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", **({"NO_COLOR": "1"} if no_color else {})}
    child = pexpect.spawn(sys.executable, ["-m", "gptoss_cli", *args], cwd=str(ROOT), env=env,
                          encoding="utf-8", timeout=120, dimensions=(40, 120))
    child.expect(pexpect.EOF)
    child.close()
    return child.before


def test_tables_are_styled_in_a_terminal_only():
    assert SGR.search(_in_terminal("recipes", no_color=False))  # bold headers, coloured borders
    plain = _in_terminal("recipes", no_color=True)
    assert "experts-q3" in plain and ESC not in plain
    piped = run_cli("recipes")
    assert piped.returncode == 0 and "experts-q3" in piped.stdout and ESC not in piped.stdout + piped.stderr


def test_error_line_is_red_in_a_terminal_only():
    missing = "/nonexistent/model.gguf"
    shown = _in_terminal("info", missing, no_color=False)
    assert re.search(r"\x1b\[[0-9;]*31[;m]", shown) and "error:" in shown  # red (SGR 31)
    plain = _in_terminal("info", missing, no_color=True)
    assert plain.lstrip().startswith("error:") and ESC not in plain
    piped = run_cli("info", missing)
    assert piped.returncode == 2 and piped.stderr.startswith("error:") and ESC not in piped.stderr
