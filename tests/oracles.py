"""Reference implementations we did not write: transformers for logits, tiktoken/openai-harmony for tokens."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
SPECIAL_NAMED = {"<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
                 "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
                 "<|message|>": 200008, "<|call|>": 200012}


@lru_cache(maxsize=1)
def o200k_harmony():
    """tiktoken's own o200k_harmony encoding, offline: its download cache is seeded with our verified copy."""
    import hashlib
    import shutil
    import tempfile

    import tiktoken

    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    cache = Path(tempfile.mkdtemp(prefix="tiktoken-cache-"))
    shutil.copy(DATA / "o200k_base.tiktoken", cache / hashlib.sha1(url.encode()).hexdigest())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return tiktoken.get_encoding("o200k_harmony")


def harmony_tokens(text_user: str, reply: str) -> list[int]:
    """A harmony conversation rendered by openai-harmony, plus an assistant reply in two channels."""
    from openai_harmony import Conversation, HarmonyEncodingName, Message, Role, SystemContent, load_harmony_encoding

    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    convo = Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, SystemContent.new()),
        Message.from_role_and_content(Role.USER, text_user),
    ])
    tokens = list(enc.render_conversation_for_completion(convo, Role.ASSISTANT))
    tokens += o200k_harmony().encode(reply, allowed_special="all")
    return tokens


def reference_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    """Logits [len(tokens), vocab] of transformers' GptOssForCausalLM (float32, CPU) on the checkpoint."""
    import torch
    from transformers import GptOssForCausalLM, Mxfp4Config

    model = GptOssForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                              quantization_config=Mxfp4Config(dequantize=True))
    model = model.float().eval()
    with torch.no_grad():
        out = model(torch.tensor([tokens]))
    return out.logits[0].float().numpy()


def llama_cpp_logits(gguf: Path, tokens: list[int]) -> np.ndarray:
    """Logits [len(tokens), vocab] of llama.cpp on a GGUF, on the CPU, loaded as gptoss loads every model."""
    from gptoss_cli.engine.scorer import Scorer

    with Scorer(gguf, max(256, len(tokens) + 8), gpu_layers=0) as llm:
        return llm.run(tokens).astype(np.float64)


def kl_and_top1(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Mean KL(ref || test) over positions (nats) and the fraction of positions with the same argmax."""
    def log_softmax(x):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(test)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return float(kl.mean()), float((ref.argmax(-1) == test.argmax(-1)).mean())
