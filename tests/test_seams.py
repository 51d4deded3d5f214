"""Test seams (converters/seams.py) act only in a test run (GPTOSS_TEST_RUN=1), and say so on stderr.

A stray GPTOSS_TEST_HOLD or GPTOSS_FAKE_FREE_BYTES left in a user's environment must neither hang
`gptoss quantize` nor disable its disk check.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT, SEAM_NOTE


def _quantize(checkpoint, out, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "GPTOSS_TEST_RUN"}
    return subprocess.run([sys.executable, "-m", "gptoss_cli", "quantize", str(checkpoint), "-o", str(out)],
                          cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=600)


def test_stray_seams_outside_a_test_run_do_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    stray = {"GPTOSS_TEST_HOLD": str(tmp_path / "held"), "GPTOSS_FAKE_FREE_BYTES": "1000"}
    r = _quantize(tiny_checkpoint, out, stray)
    assert r.returncode == 0, r.stderr          # no hold, and the disk check saw the real free space
    assert out.read_bytes()[:4] == b"GGUF" and not (tmp_path / "held").exists()
    assert SEAM_NOTE not in r.stderr and "GPTOSS_" not in r.stderr


def test_in_a_test_run_a_seam_acts_and_is_named_on_stderr(tiny_checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    r = _quantize(tiny_checkpoint, out, {"GPTOSS_TEST_RUN": "1", "GPTOSS_FAKE_FREE_BYTES": "1000"})
    assert r.returncode == 2 and "not enough disk space" in r.stderr and not out.exists()
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith(SEAM_NOTE)]
    assert len(notes) == 1 and "GPTOSS_FAKE_FREE_BYTES" in notes[0] and "GPTOSS_TEST_HOLD" not in notes[0]
    assert r.stderr.splitlines()[0].startswith(SEAM_NOTE)  # before anything else the command prints
