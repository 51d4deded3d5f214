"""Test seams: environment variables through which the test suite reaches states a user never should.

Each seam acts only while GPTOSS_TEST_RUN=1 (tests/conftest.py sets it for the test process and every
subprocess it starts); elsewhere a stray variable does nothing. `gptoss` names the active ones on stderr.

- GPTOSS_TEST_REPLY=FILE: `gptoss chat` answers every prompt with FILE's harmony text (gptoss_cli/chat/scripted.py).
- GPTOSS_TEST_HOLD=FILE: `gptoss quantize` creates FILE after its first written piece and waits for a signal;
  GPTOSS_TEST_HOLD=quantizer:FILE does so inside llama.cpp's quantizer instead (gptoss_cli/quant/quantize.py).
- GPTOSS_FAKE_FREE_BYTES=N: the disk-space check sees N free bytes (converters/disk.py).
- GPTOSS_TEST_GPUS=NAME:TOTAL:FREE[,...]: the memory planner (`gptoss plan`, `--fit`) sees these GPUs instead of
  the machine's, sizes in bytes or like 24GiB (gptoss_cli/memory/devices.py); llama.cpp still loads on the
  devices it has.
- GPTOSS_TEST_LLAMA_LOG=FILE: every model load appends llama.cpp's log of it to FILE, tensor buffer-type
  overrides included (gptoss_cli/engine/loader.py).
"""

from __future__ import annotations

import os

RUN = "GPTOSS_TEST_RUN"
REPLY = "GPTOSS_TEST_REPLY"
HOLD = "GPTOSS_TEST_HOLD"
FAKE_FREE_BYTES = "GPTOSS_FAKE_FREE_BYTES"
GPUS = "GPTOSS_TEST_GPUS"
LLAMA_LOG = "GPTOSS_TEST_LLAMA_LOG"
SEAMS = (REPLY, HOLD, FAKE_FREE_BYTES, GPUS, LLAMA_LOG)


def value(name: str) -> str | None:
    """The seam's value while the test suite runs us (GPTOSS_TEST_RUN=1), else None."""
    if os.environ.get(RUN) != "1":
        return None
    return os.environ.get(name) or None


def active() -> list[str]:
    """The seams that act in this process, in SEAMS order."""
    return [name for name in SEAMS if value(name) is not None]
