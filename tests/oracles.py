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
    """Logits [len(tokens), vocab] of llama.cpp on a GGUF, on the CPU: llama-cpp-python's C API in a plain
    loop (default model and context parameters, one batch with logits at every position), none of gptoss's
    loader. Extra CPU buffer types are off: llama.cpp's AMX path crashes on these GGUFs (llama.cpp#20824), and
    llama-cpp-python's Llama class cannot turn them off."""
    import ctypes

    import llama_cpp as lc

    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers, mparams.use_extra_bufts = 0, False
    model = lc.llama_model_load_from_file(str(gguf).encode(), mparams)
    assert model, f"llama.cpp could not load {gguf}"
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = max(256, len(tokens))
    ctx = lc.llama_init_from_model(model, cparams)
    batch = lc.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(tokens)
        assert lc.llama_decode(ctx, batch) == 0
        n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
        logits = ctypes.cast(lc.llama_get_logits(ctx), ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(logits, shape=(len(tokens), n_vocab)).astype(np.float64)
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)


def kl_and_top1(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Mean KL(ref || test) over positions (nats) and the fraction of positions with the same argmax."""
    def log_softmax(x):
        x = np.asarray(x, dtype=np.float64)
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(test)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return float(kl.mean()), float((ref.argmax(-1) == test.argmax(-1)).mean())
