"""End-to-end parity: transformers' GptOssForCausalLM on the checkpoint vs llama.cpp on our GGUF.

The sequence mixes harmony special tokens and text and is longer than the fixtures' sliding window, so
both attention kinds and the sinks are exercised. Thresholds are the issue's; llama.cpp's own converter
measured 0.7-1.9e-4 (F16), 0.7-1.1e-3 (Q8_0) and 0.2-3.7e-3 (BF16) on such fixtures.
"""

from __future__ import annotations

import pytest
from oracles import harmony_tokens, kl_and_top1, llama_cpp_logits, reference_logits

from converters.convert import convert_checkpoint
from converters.fixture import write_checkpoint

MAX_KL = {"f16": 3e-4, "mxfp4": 2e-3, "bf16": 5e-3}
MIN_TOP1 = 0.9


@pytest.fixture(scope="module")
def tokens() -> list[int]:
    toks = harmony_tokens(
        "What is the capital of France? Answer in one line, then explain how you know — ça va? 東京 🎉",
        "<|channel|>analysis<|message|>The user asks about Paris. 2+2=4.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Paris is the capital of France.")
    assert len(toks) > 64
    return toks


@pytest.fixture(scope="module", params=["tiny", "tiny6"])
def checkpoint(request, tmp_path_factory, tiny_checkpoint):
    if request.param == "tiny":
        return tiny_checkpoint
    return write_checkpoint(tmp_path_factory.mktemp("ckpt6") / "gpt-oss-tiny6", "tiny6", seed=0)


@pytest.fixture(scope="module")
def reference(checkpoint, tokens):
    return reference_logits(checkpoint, tokens)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["f16", "mxfp4", "bf16"])
def test_logits_match_transformers(checkpoint, reference, tokens, recipe, tmp_path):
    config_window = __import__("json").loads((checkpoint / "config.json").read_text())["sliding_window"]
    assert len(tokens) > config_window
    gguf = convert_checkpoint(checkpoint, tmp_path / f"{recipe}.gguf", recipe=recipe).path
    kl, top1 = kl_and_top1(reference, llama_cpp_logits(gguf, tokens))
    assert kl <= MAX_KL[recipe], f"{checkpoint.name} {recipe}: mean KL {kl:.2e} > {MAX_KL[recipe]:.0e}"
    assert top1 >= MIN_TOP1, f"{checkpoint.name} {recipe}: top-1 agreement {top1:.3f}"
