"""`gptoss eval`: its KL, p99, top-1 and perplexity equal an independent numpy computation on llama.cpp's raw
logits, with tokens from tiktoken's own o200k_harmony; table by default, one JSON document with --json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from oracles import kl_and_top1, llama_cpp_logits, o200k_harmony

from converters.convert import convert_checkpoint

CTX = 96
TEXT = ("The river runs past the old mill, and the miller counts sacks of grain while rain falls on the roof. "
        "Numbers like 12, 345 and 6789 appear in his ledger; so do names: Ada, Grace, Linus. ") * 4


@pytest.fixture(scope="module")
def f16_gguf(tiny_checkpoint, tmp_path_factory):
    return convert_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("f16") / "gpt-oss-tiny-f16.gguf",
                              recipe="f16").path


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.slow
def test_eval_matches_numpy_on_raw_logits(f16_gguf, tiny_gguf, cli, tmp_path):
    text = tmp_path / "sample.txt"
    text.write_text(TEXT)
    tokens = o200k_harmony().encode(TEXT, allowed_special=set())
    assert len(tokens) >= 2 * CTX
    r = cli("eval", str(f16_gguf), str(tiny_gguf), "--text", str(text), "-c", str(CTX), "--chunks", "2", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["chunks"] == 2 and report["scored_tokens"] == 2 * (CTX - 1 - CTX // 2)

    kls, ref_nll, test_nll, top1 = [], [], [], []
    for c in range(2):
        chunk = tokens[c * CTX:(c + 1) * CTX]
        ref = llama_cpp_logits(f16_gguf, chunk)[CTX // 2:CTX - 1]
        test = llama_cpp_logits(tiny_gguf, chunk)[CTX // 2:CTX - 1]
        targets = np.array(chunk[CTX // 2 + 1:])
        lp, lq = _log_softmax(ref), _log_softmax(test)
        kls.append((np.exp(lp) * (lp - lq)).sum(-1))
        ref_nll.append(-lp[np.arange(len(targets)), targets])
        test_nll.append(-lq[np.arange(len(targets)), targets])
        top1.append(ref.argmax(-1) == test.argmax(-1))
        mean_kl, agree = kl_and_top1(ref, test)        # the shared oracle agrees with the lines above
        assert mean_kl == pytest.approx(kls[-1].mean(), rel=1e-9)
    kl = np.concatenate(kls)
    ref_row, test_row = report["results"]
    assert ref_row["kl_mean"] is None and ref_row["ppl"] == pytest.approx(np.exp(np.concatenate(ref_nll).mean()),
                                                                          rel=1e-4)
    assert test_row["kl_mean"] == pytest.approx(kl.mean(), rel=2e-3, abs=1e-7)
    assert test_row["kl_p99"] == pytest.approx(np.percentile(kl, 99), rel=2e-3, abs=1e-7)
    assert test_row["top1"] == pytest.approx(np.concatenate(top1).mean(), abs=1 / len(kl) + 1e-9)
    assert test_row["ppl"] == pytest.approx(np.exp(np.concatenate(test_nll).mean()), rel=1e-4)
    assert 0 < test_row["kl_mean"] < 0.05, "mxfp4 differs from f16 only by Q8_0 rounding"


@pytest.mark.slow
def test_eval_table_on_stdout(f16_gguf, tiny_gguf, cli, tmp_path):
    text = tmp_path / "sample.txt"
    text.write_text(TEXT)
    r = cli("eval", str(f16_gguf), str(tiny_gguf), "--text", str(text), "-c", "64", "--chunks", "1")
    assert r.returncode == 0, r.stderr
    assert "KL mean" in r.stdout and tiny_gguf.name in r.stdout and "\x1b[" not in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--text", "/nonexistent/sample.txt"], "text file not found"),
    (["--text", "SHORT", "-c", "4096"], "fewer than one chunk"),
])
def test_eval_bad_input(f16_gguf, tiny_gguf, cli, tmp_path, args, needle):
    short = tmp_path / "short.txt"
    short.write_text("Just a few words.")
    args = [str(short) if a == "SHORT" else a for a in args]
    r = cli("eval", str(f16_gguf), str(tiny_gguf), *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr


def test_eval_missing_model(cli, tmp_path):
    r = cli("eval", str(tmp_path / "nope.gguf"), str(tmp_path / "other.gguf"), "--text", "x.txt")
    assert r.returncode == 2 and r.stderr.startswith("error: ")
