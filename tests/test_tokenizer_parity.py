"""llama.cpp tokenizes our GGUF exactly like tiktoken's o200k_harmony.

Excluded on purpose: scripts with combining marks such as Devanagari, where llama.cpp's gpt-4o
pre-tokenizer splits differently from tiktoken's regex (a known llama.cpp limitation, not the GGUF's).
"""

from __future__ import annotations

import pytest
from oracles import o200k_harmony

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's 3:45pm; we'll see what's next...",
    "def f(x):\n    return x ** 2  # square\n\n\nprint(f(12345678))\n",
    "   leading spaces\tand\ttabs\n\n\n  trailing   ",
    "Numbers: 1 12 123 1234 12345 3.14159 -0.001 1e10 0xFF",
    "Accents: café naïve résumé Ångström Œuvre façade",
    "CJK: 日本語のテキストです。中文文本。한국어 텍스트",
    "Emoji: 🎉🚀👍🏽 👨‍👩‍👧‍👦 ❤️",
    "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>analysis<|message|>4<|end|>",
    "<|start|>assistant<|channel|>final<|message|>Done.<|return|><|call|><|constrain|>json",
    "MixedCASE camelCase snake_case SCREAMING_CASE kebab-case",
    "Quotes: “smart” ‘single’ «guillemets» — em dash – en dash",
    "URL https://example.com/a/b?c=d&e=f#frag and email a.b@c.de",
    "Русский текст и Ελληνικά γράμματα",
    "",
]


@pytest.fixture(scope="module")
def vocab_llm(tiny_gguf):
    from llama_cpp import Llama

    llm = Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.mark.parametrize("text", TEXTS)
def test_llama_cpp_tokens_equal_tiktoken(vocab_llm, text):
    want = o200k_harmony().encode(text, allowed_special="all")
    got = vocab_llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    assert got == want


def test_detokenize_round_trips(vocab_llm):
    for text in TEXTS:
        ids = o200k_harmony().encode(text, allowed_special="all")
        assert vocab_llm.detokenize(ids, special=True).decode("utf-8") == text
