"""A real Ctrl-C (SIGINT) to a `gptoss quantize` process mid-write: exit 130 and nothing left behind.

The tiny model converts in well under a second, so the process holds after its first written piece
(GPTOSS_TEST_HOLD, gptoss_cli/quant/quantize.py) and says so with a marker file: the signal lands
while the .partial file is open, on every machine, however loaded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT


def _wait_for(path, proc, limit: float = 120) -> None:
    deadline = time.monotonic() + limit  # only turns a hang into a failure; the event is the file
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the quantizer never reached its first written piece"
        time.sleep(0.01)


@pytest.mark.parametrize("recipe, partial", [
    ("mxfp4", "model.gguf.partial"),                          # the converter writes the GGUF itself
    ("experts-q4", ".model.gguf.tmp/lossless-bf16.gguf.partial"),  # lossless copy first, then llama.cpp
])
def test_sigint_mid_write_exits_130_and_leaves_nothing(tiny_checkpoint, tmp_path, recipe, partial):
    out_dir, marker = tmp_path / "out", tmp_path / "held"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "gptoss_cli", "quantize", str(tiny_checkpoint), "--recipe", recipe,
                             "-o", str(out_dir / "model.gguf")], cwd=ROOT,
                            env={**os.environ, "GPTOSS_TEST_HOLD": str(marker)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, proc)
        held = out_dir / partial
        assert held.is_file() and held.stat().st_size > 0  # mid-write: the partial file is there
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and out == ""
    assert list(out_dir.iterdir()) == []  # no .partial, no temporary folder, no final file
