"""`gptoss chat --fit` with a GPU injected at the device seam (GPTOSS_TEST_GPUS): the --n-cpu-moe it reports,
checked against the expert tensors llama.cpp itself logs as overridden to a CPU buffer type while it loads
(GPTOSS_TEST_LLAMA_LOG).

llama.cpp's `--n-cpu-moe N` keeps the experts of layers 0..N-1 in system RAM. Each case's free GPU memory is
set from the fixture's real expert sizes (read with gguf-py) midway between what the plan needs with k and with
k-1 layers' experts in RAM, so the planner must choose exactly k. On a CPU-only llama.cpp the GPU does not
exist for the load, but the overrides it applies, and logs, are the same.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

CTX = "512"
EXPERT = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)_exps\.(weight|bias)$")
OVERRIDE = re.compile(r"^tensor (\S+) \(.*\) buffer type overridden to (\S+)$")   # llama-model.cpp, at debug level
CHOICE = re.compile(r"^--fit: --n-cpu-moe (\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def experts(tiny_gguf) -> dict[str, tuple[int, int]]:
    """Expert tensor name -> (layer, bytes), as gguf-py reads the fixture (once: its reader is slow)."""
    import gguf

    found = {}
    for t in gguf.GGUFReader(str(tiny_gguf)).tensors:
        m = EXPERT.match(t.name)
        if m:
            found[t.name] = (int(m.group(1)), int(t.n_bytes))
    return found


def planned(cli, gguf_path, free: int) -> dict:
    """`gptoss plan --json` for a GPU with `free` bytes injected at the device seam."""
    r = cli("plan", str(gguf_path), "--ctx-size", CTX, "--json", env={"GPTOSS_TEST_GPUS": f"Injected:{free}:{free}"})
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def layers(experts) -> list[int]:
    """Expert bytes per layer of the fixture."""
    sizes: dict[int, int] = {}
    for layer, nbytes in experts.values():
        sizes[layer] = sizes.get(layer, 0) + nbytes
    return [sizes[i] for i in range(len(sizes))]


@pytest.fixture(scope="module")
def extremes(tiny_gguf, layers) -> tuple[int, int]:
    """The GPU bytes the plan needs with every expert on the GPU, and with none."""
    everything = planned(run_cli, tiny_gguf, 80 << 30)
    nothing = planned(run_cli, tiny_gguf, 1)
    assert everything["fits"] and everything["n_cpu_moe"] == 0
    assert not nothing["fits"] and nothing["n_cpu_moe"] == len(layers)
    # Moving every expert to RAM frees at least their own bytes on the GPU.
    assert everything["gpu_needed"] - nothing["gpu_needed"] >= sum(layers)
    return everything["gpu_needed"], nothing["gpu_needed"]


def free_for(k: int, layers: list[int], extremes: tuple[int, int]) -> int:
    """GPU bytes between the plan's need with k and with k-1 layers' experts in RAM (all fit for k = 0)."""
    if k == 0:
        return 80 << 30
    need_all, need_none = extremes
    per_byte = (need_all - need_none) / sum(layers)      # GPU need per expert byte, margin included
    return int(need_all - per_byte * (sum(layers[:k]) - layers[k - 1] / 2))


def chat_fit(cli, gguf_path, free: int, log) -> tuple:
    """One-shot `chat --fit` with an injected GPU of `free` bytes free; (its result, llama.cpp's log of the load)."""
    env = {"GPTOSS_TEST_GPUS": f"Injected GPU:{2 * free}:{free}", "GPTOSS_TEST_LLAMA_LOG": str(log)}
    r = cli("chat", str(gguf_path), "--ctx-size", CTX, "--seed", "7", "--fit", "-p", "hi", "--max-tokens", "3",
            env=env)
    return r, (log.read_text().splitlines() if log.exists() else None)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4], ids=lambda k: f"n_cpu_moe={k}")
def test_fit_choice_is_the_expert_placement_llama_cpp_applies(cli, tiny_gguf, experts, layers, extremes, k,
                                                             tmp_path):
    assert len(layers) == 4   # the tiny fixture; k = 1..3 lie strictly between all and none in RAM
    r, log = chat_fit(cli, tiny_gguf, free_for(k, layers, extremes), tmp_path / "llama.log")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert [int(n) for n in CHOICE.findall(r.stderr)] == [k], r.stderr        # what gptoss says it chose
    assert f"context {CTX}: --n-cpu-moe {k}" in r.stderr                       # the plan table's title
    assert log is not None and any(ln.startswith("load_tensors:") for ln in log)
    overridden = {m.group(1): m.group(2) for m in map(OVERRIDE.match, log) if m and EXPERT.match(m.group(1))}
    # Exactly the expert tensors (weights and biases) of layers 0..k-1, each to a system-RAM buffer type.
    assert set(overridden) == {name for name, (layer, _) in experts.items() if layer < k}
    assert {EXPERT.match(name).group(1) for name in overridden} == {str(i) for i in range(k)}
    assert all(buft.startswith("CPU") for buft in overridden.values()), overridden


def test_fit_refuses_a_gpu_too_small_for_the_layers_without_experts(cli, tiny_gguf, extremes, tmp_path):
    r, log = chat_fit(cli, tiny_gguf, extremes[1] // 2, tmp_path / "llama.log")
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert "error: does not fit" in r.stderr and "even with every expert in RAM" in r.stderr
    assert log is None   # refused before loading anything
