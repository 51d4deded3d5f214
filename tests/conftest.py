"""Shared fixtures: an isolated home, the tiny checkpoint, its GGUF, and a CLI runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
ROOT = TESTS.parent
# openai-harmony and tiktoken load o200k_base from here instead of the network.
os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(DATA)
# The test seams (converters/seams.py) act only in a test run: this process and every subprocess it starts.
os.environ["GPTOSS_TEST_RUN"] = "1"
SEAM_NOTE = "warning: test seams active"
# Tests press Ctrl-C in child processes. A shell starts background jobs (`make test &`, nohup) with SIGINT
# ignored, and children inherit that, so they would never see it; give them the default handler back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own GPTOSS_HOME, state folder and HF cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GPTOSS_HOME", str(home / "gptoss"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    # Colour is left to the CLI's own detection (none when piped, as every subprocess here is); tests that
    # want a terminal use a pty, and tests of NO_COLOR set it themselves.
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("GPTOSS_DEBUG", raising=False)
    from converters import seams

    for seam in seams.SEAMS:
        monkeypatch.delenv(seam, raising=False)  # a test sets the ones it uses
    return home


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight gpt-oss checkpoint (4 layers) in the official Hugging Face layout."""
    from converters.fixture import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "gpt-oss-tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint converted with the default recipe (mxfp4)."""
    from converters.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("gguf") / "gpt-oss-tiny-mxfp4.gguf"
    return convert_checkpoint(tiny_checkpoint, out, recipe="mxfp4").path


def run_cli(*args: str, env: dict | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `gptoss ARGS...` as a user would, in a subprocess; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "gptoss_cli", *args], cwd=ROOT, env=full_env,
                          input=input, capture_output=True, text=True, timeout=timeout)


def user_stderr(text: str) -> str:
    """stderr as a user sees it: without the line naming the test seams that act (printed only in tests)."""
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith(SEAM_NOTE))


@pytest.fixture
def cli():
    """The run_cli helper as a fixture."""
    return run_cli


@pytest.fixture(scope="session")
def enc():
    """openai-harmony's gpt-oss encoding (offline, from tests/data/o200k_base.tiktoken)."""
    import openai_harmony as oh

    return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="session")
def tok():
    """tiktoken's own o200k_harmony encoding, offline (see tests/oracles.py)."""
    from oracles import o200k_harmony

    return o200k_harmony()
