"""Recipes end to end: bad input is refused before any work; every shipped recipe writes a file llama.cpp loads,
with the tensor types of the recipe table, exactly the size --dry-run announced; --target-size fits.

The fixture is 256 wide (hidden and intermediate), so K-quants apply without llama.cpp's fallbacks; the
tiny 96-wide fixture checks that the fallbacks are predicted too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from converters.fixture import FixtureShape, write_checkpoint
from converters.recipes import RECIPES
from converters.sizing import fallback

WIDE = FixtureShape(hidden=256, layers=4, experts=4, experts_per_tok=2, intermediate=256, heads=4, kv_heads=2,
                    head_dim=64, sliding_window=8, shards=1)
# The README's recipe table, written out (not read from converters.recipes): types of expert gate/up, expert
# down, the same two in the first and last layer (the "edge" rule), attention, token embeddings, output.
# Router, norms, sinks and biases are F32 in every recipe. WIDE's 256-wide rows take K-quants unchanged.
README_TABLE = {
    "mxfp4":      ("MXFP4", "MXFP4", "MXFP4", "MXFP4", "Q8_0", "Q8_0", "Q8_0"),
    "f16":        ("MXFP4", "MXFP4", "MXFP4", "MXFP4", "F16", "F16", "F16"),
    "bf16":       ("MXFP4", "MXFP4", "MXFP4", "MXFP4", "BF16", "BF16", "BF16"),
    "q8":         ("MXFP4", "MXFP4", "MXFP4", "MXFP4", "Q8_0", "Q8_0", "Q8_0"),
    "experts-q4": ("Q4_K", "Q4_K", "Q4_K", "Q4_K", "Q8_0", "Q8_0", "Q8_0"),
    "experts-q3": ("Q3_K", "Q3_K", "Q4_K", "Q4_K", "Q8_0", "Q8_0", "Q8_0"),
    "experts-q2": ("Q2_K", "Q3_K", "Q3_K", "Q4_K", "Q8_0", "Q8_0", "Q8_0"),
}
EDGE_LAYERS = {0, WIDE.layers - 1}  # "first/last layers" of the 4-layer fixture


def readme_type(recipe: str, name: str) -> str:
    """The type the README's table gives the GGUF tensor `name` under `recipe`."""
    gate_up, down, edge_gate_up, edge_down, attn, embed, output = README_TABLE[recipe]
    layer = int(name.split(".")[1]) if name.startswith("blk.") else None
    edge = layer in EDGE_LAYERS
    if re.fullmatch(r"blk\.\d+\.ffn_(gate|up)_exps\.weight", name):
        return edge_gate_up if edge else gate_up
    if re.fullmatch(r"blk\.\d+\.ffn_down_exps\.weight", name):
        return edge_down if edge else down
    if re.fullmatch(r"blk\.\d+\.attn_(q|k|v|output)\.weight", name):
        return attn
    return {"token_embd.weight": embed, "output.weight": output}.get(name, "F32")


WORDS = ("the model reads a long text about rivers mountains cities music numbers and the weather in spring "
         "while the engineer writes code tests and notes on quantization of experts layers and tokens").split()


def calibration_text(n_words: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("wide") / "gpt-oss-wide", WIDE, seed=1)


@pytest.fixture(scope="module")
def wide_files(wide_checkpoint, tmp_path_factory) -> dict:
    """The f16 reference, an imatrix from it, and every shipped recipe written through the CLI."""
    from conftest import run_cli

    out = tmp_path_factory.mktemp("wide-gguf")
    text = out / "calib.txt"
    text.write_text(calibration_text(900, seed=2))
    files = {}
    home = {"GPTOSS_HOME": str(out / "home"), "XDG_STATE_HOME": str(out / "state")}
    for name in ("f16",):
        files[name] = _quantize(run_cli, wide_checkpoint, out, name, [], home)
    r = run_cli("imatrix", str(files["f16"][0]), "--text", str(text), "-c", "128", "-o", str(out / "im.gguf"),
                "--json", env=home)
    assert r.returncode == 0, r.stderr
    files["imatrix"] = out / "im.gguf"
    for name in RECIPES:
        if name != "f16":
            files[name] = _quantize(run_cli, wide_checkpoint, out, name, ["--imatrix", str(out / "im.gguf")], home)
    return files


def _quantize(run_cli, ckpt, out, recipe, extra, env):
    dry = run_cli("quantize", str(ckpt), "--recipe", recipe, *extra, "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    path = out / f"{recipe}.gguf"
    r = run_cli("quantize", str(ckpt), "--recipe", recipe, *extra, "-o", str(path), "--json", env=env)
    assert r.returncode == 0, r.stderr
    return path, planned


def test_shipped_recipes_are_the_readme_table():
    assert list(RECIPES) == list(README_TABLE)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(README_TABLE))
def test_recipe_file_matches_table_and_dry_run(wide_files, recipe):
    path, planned = wide_files[recipe]
    assert path.stat().st_size == planned["bytes"], "--dry-run must announce the written size to the byte"
    reader = GGUFReader(path)
    got = {t.name: t.tensor_type.name for t in reader.tensors}
    assert got == {name: readme_type(recipe, name) for name in got}
    assert reader.get_field("gptoss.recipe").contents() == recipe
    from gptoss_cli.engine.scorer import Scorer

    with Scorer(path, 64, gpu_layers=0) as llm:    # llama.cpp loads and runs it
        assert np.isfinite(llm.run(llm.tokenize("hello world"))).all()


@pytest.mark.slow
def test_q8_gives_identical_tensors_to_mxfp4(wide_files):
    """README: "`q8` ... identical tensors to `mxfp4`": same names, types, shapes and bytes."""
    q8, mx = GGUFReader(wide_files["q8"][0]), GGUFReader(wide_files["mxfp4"][0])
    assert [t.name for t in q8.tensors] == [t.name for t in mx.tensors]
    for a, b in zip(q8.tensors, mx.tensors, strict=True):
        assert (a.tensor_type, list(a.shape)) == (b.tensor_type, list(b.shape)), a.name
        assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes(), a.name


@pytest.mark.slow
def test_kl_orders_recipes_by_precision(wide_files, cli, tmp_path):
    text = tmp_path / "eval.txt"
    text.write_text(calibration_text(700, seed=3))
    order = ["mxfp4", "experts-q4", "experts-q3", "experts-q2"]
    r = cli("eval", str(wide_files["f16"][0]), str(wide_files["f16"][0]), *[str(wide_files[n][0]) for n in order],
            "--text", str(text), "-c", "128", "--chunks", "2", "--json")
    assert r.returncode == 0, r.stderr
    kls = [row["kl_mean"] for row in json.loads(r.stdout)["results"][1:]]
    assert kls[0] == pytest.approx(0, abs=1e-9), "f16 against itself"
    assert kls == sorted(kls) and len(set(kls)) == len(kls), dict(zip(["f16"] + order, kls, strict=False))


def test_tiny_fallbacks_predicted_and_custom_rules(tiny_checkpoint, cli, tmp_path):
    """96-wide rows fit no 256-block type: the plan says what llama.cpp writes; flags and rules compose."""
    out = tmp_path / "custom.gguf"
    args = ["quantize", str(tiny_checkpoint), "--experts", "q4_k", "--attn", "q5_0", "--embed", "q6_k",
            "--output", "q4_0", "--tensor-type", r"blk\.(0|3)\.ffn_.*_exps=mxfp4"]
    dry = cli(*args, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = {t["name"]: t for t in json.loads(dry.stdout)["tensors"]}
    r = cli(*args, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == json.loads(dry.stdout)["bytes"]
    got = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    assert got == {n: t["type"] for n, t in planned.items()}
    assert got["blk.0.ffn_down_exps.weight"] == "MXFP4" and got["blk.3.ffn_up_exps.weight"] == "MXFP4"
    assert got["blk.1.ffn_down_exps.weight"] == fallback(T.Q4_K, 96)[0].name == "Q5_0"
    assert got["blk.1.attn_q.weight"] == "Q5_0" and got["token_embd.weight"] == "Q8_0"   # Q6_K -> Q8_0 on 96
    assert got["output.weight"] == "Q4_0" and got["blk.1.ffn_gate_inp.weight"] == "F32"


def test_target_size_fits_and_prints_layers(wide_checkpoint, cli, tmp_path):
    """Between all-Q3_K and all-MXFP4 experts, the edge layers (more sensitive by position) get MXFP4 first."""
    def size(*args):
        r = cli("quantize", str(wide_checkpoint), *args, "--dry-run", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["bytes"]

    q3, mx = size("--experts", "q3_k"), size("--experts", "mxfp4")
    target = q3 + (mx - q3) // 2 + 4096
    out = tmp_path / "fit.gguf"
    r = cli("quantize", str(wide_checkpoint), "--target-size", f"{target}B", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert 0.98 * target <= out.stat().st_size <= target
    layers = {row["layer"]: row["type"] for row in json.loads(r.stdout)["layers"]}
    assert layers == {0: "MXFP4", 1: "Q3_K", 2: "Q3_K", 3: "MXFP4"}
    types = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    assert types["blk.0.ffn_down_exps.weight"] == "MXFP4" and types["blk.1.ffn_gate_exps.weight"] == "Q3_K"


@pytest.mark.parametrize("args, needle", [
    (["--recipe", "q5"], "unknown recipe"),
    (["--experts", "q9_k"], "unknown tensor type for --experts"),
    (["--tensor-type", "blk\\.(0=q8_0"], "bad regular expression"),
    (["--tensor-type", "blk.0.attn_q.weight"], "REGEX=TYPE"),
    (["--tensor-type", "nothing_like_this=q8_0"], "matches no tensor"),
    (["--target-size", "1MB"], "too small"),
    (["--recipe", "experts-q3"], "importance matrix is needed"),
    (["--imatrix", "/nonexistent/im.gguf"], "imatrix file not found"),
])
def test_bad_input_is_refused_before_any_work(tiny_checkpoint, cli, tmp_path, args, needle):
    out = tmp_path / "never.gguf"
    r = cli("quantize", str(tiny_checkpoint), *args, "-o", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written"


@pytest.mark.slow
def test_imatrix_counts_tokens_per_expert(wide_files):
    """Dense entries count every token; expert entries count the tokens routed to each expert (top-k each)."""
    reader = GGUFReader(wide_files["imatrix"])
    assert reader.get_field("general.type").contents() == "imatrix"
    chunks = reader.get_field("imatrix.chunk_count").contents()
    size = reader.get_field("imatrix.chunk_size").contents()
    tensors = {t.name: t.data for t in reader.tensors}
    assert chunks >= 2 and size == 128
    for n in range(WIDE.layers):
        dense = tensors[f"blk.{n}.attn_q.weight.counts"].reshape(-1)
        assert list(dense) == [chunks * size]
        experts = tensors[f"blk.{n}.ffn_down_exps.weight.counts"].reshape(-1)
        assert len(experts) == WIDE.experts and experts.sum() == chunks * size * WIDE.experts_per_tok
        sums = tensors[f"blk.{n}.ffn_gate_exps.weight.in_sum2"]
        assert sums.shape == (WIDE.experts, WIDE.hidden) and (sums >= 0).all() and sums.max() > 0


def test_imatrix_imports_llama_imatrix_legacy_dat(cli, tmp_path):
    """llama-imatrix's legacy .dat (sums already averaged, times ncall) converts to the GGUF format."""
    import struct

    import numpy as np

    values = np.arange(1, 2 * 64 + 1, dtype=np.float32)           # 2 experts x 64 columns
    name = b"blk.0.ffn_down_exps.weight"
    dat = tmp_path / "imatrix.dat"
    dat.write_bytes(struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 10, values.size)
                    + values.tobytes() + struct.pack("<i", 10) + struct.pack("<i", 5) + b"wiki!")
    out = tmp_path / "im.gguf"
    r = cli("imatrix", "--from", str(dat), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tensors"] == 1
    t = {t.name: t.data for t in GGUFReader(out).tensors}
    sums, counts = t[name.decode() + ".in_sum2"].reshape(-1), t[name.decode() + ".counts"].reshape(-1)
    np.testing.assert_allclose(sums / counts[0], values / 10, rtol=1e-6)   # what llama-quantize would use


@pytest.mark.slow
def test_imatrix_of_another_model_is_refused_before_work(wide_files, tiny_checkpoint, cli, tmp_path):
    out = tmp_path / "never.gguf"
    r = cli("quantize", str(tiny_checkpoint), "-r", "experts-q3", "--imatrix", str(wide_files["imatrix"]),
            "-o", str(out))
    assert r.returncode == 2 and "importance matrix is for another model" in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def test_target_size_follows_imatrix_sensitivity(wide_checkpoint):
    """With an imatrix, the layer whose expert inputs carry the most energy is upgraded first."""
    import dataclasses

    import numpy as np

    from converters.allocate import allocate
    from converters.recipes import build_spec
    from converters.sizing import plan_sizes
    from converters.snapshot import Snapshot

    spec = dataclasses.replace(build_spec("mxfp4"), target=True)
    snap = Snapshot(wide_checkpoint)
    try:
        plan = plan_sizes(snap, spec)
    finally:
        snap.close()
    per_layer = {n: [t for t in plan.tensors if t.layer == n and t.cls.startswith("expert")] for n in range(4)}
    imatrix = {t.name: np.full(t.shape[-1] * t.shape[0], 10.0 if n == 2 else 1.0, np.float32)
               for n, ts in per_layer.items() for t in ts}
    top = allocate(plan, 10**12, imatrix)     # everything fits: every layer at the top
    assert {row["type"] for row in top.layers} == {"MXFP4"} and top.shortfall
    from converters.convert import tensor_nbytes
    from converters.sizing import pad

    step = sum(pad(tensor_nbytes(T.MXFP4, t.shape)) - pad(tensor_nbytes(T.Q3_K, t.shape)) for t in per_layer[0])
    one_up = allocate(plan, top.total - 3 * step, imatrix)       # room for exactly one layer at MXFP4
    assert [row["type"] for row in one_up.layers] == ["Q3_K", "Q3_K", "MXFP4", "Q3_K"]
    assert one_up.total <= top.total - 3 * step
