"""The numpy sampler draws from the distribution llama.cpp's own temp/top-p chain computes for the same
logits (the chain's probabilities are the oracle), and is greedy and seed-reproducible where it should be."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from gptoss_cli.engine.sampling import Sampler

lc = pytest.importorskip("llama_cpp")
LOGITS = np.array([2.0, 1.5, 1.4, 0.3, -1.0, -np.inf, 0.9, 2.2], dtype=np.float32)


def _llama_probs(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """Probabilities after llama.cpp's top_p -> temp -> dist chain (dist normalises what is left)."""
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if top_p < 1:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(1))
    data = (lc.llama_token_data * logits.size)(*[lc.llama_token_data(i, float(x), 0.0) for i, x in enumerate(logits)])
    arr = lc.llama_token_data_array(data, logits.size, -1, False)
    lc.llama_sampler_apply(chain, ctypes.byref(arr))
    probs = np.zeros(logits.size)
    for i in range(arr.size):
        probs[data[i].id] = data[i].p
    lc.llama_sampler_free(chain)
    return probs / probs.sum()


@pytest.mark.parametrize("exp", ["ggml", "numpy"])
@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.6, 1.0), (1.0, 0.7), (1.5, 0.9), (0.8, 0.3)])
def test_draws_follow_llama_cpp_chain_probabilities(temperature, top_p, exp):
    expected = _llama_probs(LOGITS, temperature, top_p)
    s = Sampler(LOGITS.size, temperature=temperature, top_p=top_p, seed=11)
    if exp == "numpy":
        s._softmax = None   # the path for a llama.cpp whose CPU backend does not export ggml's kernel
    elif s._softmax is None:
        pytest.skip("this llama.cpp build does not export ggml_vec_soft_max_f32")
    n = 40000
    counts = np.bincount([s.draw(LOGITS) for _ in range(n)], minlength=LOGITS.size) / n
    assert np.all(counts[expected == 0] == 0)   # -inf and what top-p cut are never drawn
    assert np.abs(counts - expected).max() < 0.01, (counts.round(3), expected.round(3))


def test_greedy_and_seeds():
    assert Sampler(LOGITS.size, temperature=0, top_p=1, seed=1).draw(LOGITS) == 7
    draws = [[Sampler(LOGITS.size, temperature=1, top_p=1, seed=5).draw(LOGITS) for _ in range(1)] for _ in range(3)]
    a = Sampler(LOGITS.size, temperature=1, top_p=0.9, seed=5)
    b = Sampler(LOGITS.size, temperature=1, top_p=0.9, seed=5)
    assert [a.draw(LOGITS) for _ in range(50)] == [b.draw(LOGITS) for _ in range(50)]
    assert draws[0] == draws[1] == draws[2]


def test_full_vocabulary_draws_match_the_softmax():
    """gpt-oss's vocabulary size (the block walk up to the padded last block): draw frequencies of the
    most likely tokens match exp(logit - max) / sum computed in float64."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, 201088).astype(np.float32)
    logits[[7, 100_000, 201087]] = [14.0, 13.5, 13.0]   # ~88% of the mass; 201087: the last token, in the last block
    p = np.exp(logits.astype(np.float64) - logits.max())
    p /= p.sum()
    s = Sampler(logits.size, temperature=1.0, top_p=1.0, seed=4)
    n = 6000
    counts = np.bincount([s.draw(logits) for _ in range(n)], minlength=logits.size) / n
    for i in (7, 100_000, 201087):
        assert abs(counts[i] - p[i]) < 4 * np.sqrt(p[i] * (1 - p[i]) / n) + 1e-3, (i, counts[i], p[i])
    rest = 1 - p[[7, 100_000, 201087]].sum()
    assert abs(counts.sum() - counts[[7, 100_000, 201087]].sum() - rest) < 4 * np.sqrt(rest / n) + 1e-3


def test_a_large_vocabulary_with_top_p_needing_many_tokens():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 0.01, 201088).astype(np.float32)   # nearly flat: top-p 0.5 keeps ~100k tokens
    s = Sampler(logits.size, temperature=1.0, top_p=0.5, seed=3)
    keep = s._nucleus(logits)
    assert 90_000 < keep.size < 110_000 and logits[keep].min() >= np.median(logits) - 0.001
