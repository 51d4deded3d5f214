"""Test seams (converters/seams.py) act only in a test run (GPTOSS_TEST_RUN=1), and say so on stderr.

A stray GPTOSS_TEST_HOLD or GPTOSS_FAKE_FREE_BYTES left in a user's environment must neither hang
`gptoss quantize` nor disable its disk check; a stray GPTOSS_TEST_GPUS must not replace the GPUs the planner
sees, nor GPTOSS_TEST_LLAMA_LOG write llama.cpp's log anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, SEAM_NOTE


def _gptoss(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """`gptoss ARGS` with env added to this environment less GPTOSS_TEST_RUN."""
    base = {k: v for k, v in os.environ.items() if k != "GPTOSS_TEST_RUN"}
    return subprocess.run([sys.executable, "-m", "gptoss_cli", *args],
                          cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=600)


def _quantize(checkpoint, out, env: dict) -> subprocess.CompletedProcess:
    return _gptoss(["quantize", str(checkpoint), "-o", str(out)], env)


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


def _device_names(plan: subprocess.CompletedProcess) -> list[str]:
    assert plan.returncode in (0, 1), plan.stderr   # 1: the tiny model does not fit this machine
    return [d["name"] for d in json.loads(plan.stdout)["devices"]]


def test_stray_gpu_and_llama_log_seams_outside_a_test_run_do_nothing(tiny_gguf, tmp_path):
    log = tmp_path / "llama.log"
    stray = {"GPTOSS_TEST_GPUS": "Injected GPU:80GiB:80GiB", "GPTOSS_TEST_LLAMA_LOG": str(log)}
    plan = _gptoss(["plan", str(tiny_gguf), "--json"], stray)
    assert "Injected GPU" not in _device_names(plan) and "GPTOSS_" not in plan.stderr
    chat = _gptoss(["chat", str(tiny_gguf), "-p", "hi", "--max-tokens", "2", "--ctx-size", "512"], stray)
    assert chat.returncode == 0, chat.stderr
    assert not log.exists() and SEAM_NOTE not in chat.stderr and "GPTOSS_" not in chat.stderr


def test_in_a_test_run_the_planner_sees_the_injected_gpus(tiny_gguf):
    seam = {"GPTOSS_TEST_RUN": "1", "GPTOSS_TEST_GPUS": "Injected GPU:80GiB:80GiB,Second:1GiB:512MiB"}
    plan = _gptoss(["plan", str(tiny_gguf), "--json"], seam)
    assert _device_names(plan)[:2] == ["Injected GPU", "Second"]
    assert json.loads(plan.stdout)["gpu_free"] == (80 << 30) + (512 << 20)
    assert plan.stderr.splitlines()[0].startswith(SEAM_NOTE) and "GPTOSS_TEST_GPUS" in plan.stderr
    bad = _gptoss(["plan", str(tiny_gguf)], {**seam, "GPTOSS_TEST_GPUS": "Injected GPU:80GiB"})
    assert bad.returncode == 2 and "error: bad input (GPTOSS_TEST_GPUS): 'Injected GPU:80GiB' is not" in bad.stderr
