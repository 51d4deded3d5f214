"""Bad input: one-line error naming the file and the problem, exit code 2, and no output file left behind."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from converters.convert import convert_checkpoint

SHARD = "model-00002-of-00002.safetensors"          # holds lm_head
LAYER_SHARD = "model-00001-of-00002.safetensors"    # holds the layers


def _clone(src: Path, dst: Path, real: tuple[str, ...] = ()) -> Path:
    """Symlink every file of src into dst, except `real` ones, which are copied so they can be broken."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name in real:
            shutil.copyfile(f, dst / f.name)
        else:
            (dst / f.name).symlink_to(f)
    return dst


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_header(path: Path, header: dict, data: bytes) -> None:
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def _edit_header(path: Path, edit) -> None:
    header, data = _header(path)
    edit(header)
    _write_header(path, header, data)


def _two_same_size(header: dict) -> tuple[str, str]:
    seen: dict[int, str] = {}
    for name, rec in header.items():
        if name == "__metadata__":
            continue
        size = rec["data_offsets"][1] - rec["data_offsets"][0]
        if size in seen:
            return seen[size], name
        seen[size] = name
    raise AssertionError("no two tensors of equal size")


def _not_gpt_oss(d: Path):
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))


def _truncate(d: Path):
    p = d / SHARD
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _header_past_end(d: Path):
    p = d / SHARD
    p.write_bytes(struct.pack("<Q", 10**12) + p.read_bytes()[8:])


def _offsets_out_of_range(d: Path):
    def edit(h):
        name = next(k for k in h if k != "__metadata__")
        h[name]["data_offsets"][1] += 10**9
    _edit_header(d / SHARD, edit)


def _overlapping(d: Path):
    def edit(h):
        a, b = _two_same_size(h)
        h[b]["data_offsets"] = list(h[a]["data_offsets"])
    _edit_header(d / LAYER_SHARD, edit)


def _dtype_size_mismatch(d: Path):
    _edit_header(d / SHARD, lambda h: h["lm_head.weight"].update(dtype="F32"))


def _dtype_wrong_for_config(d: Path):
    _edit_header(d / SHARD, lambda h: h["lm_head.weight"].update(dtype="F16"))


CASES = {
    "config not gpt_oss": (("config.json",), _not_gpt_oss, "config.json", "not 'gpt_oss'"),
    "missing shard": ((), lambda d: (d / SHARD).unlink(), SHARD, "missing"),
    "truncated shard": ((SHARD,), _truncate, SHARD, "truncated"),
    "header length past end": ((SHARD,), _header_past_end, SHARD, "header length"),
    "offsets out of range": ((SHARD,), _offsets_out_of_range, SHARD, "out of range"),
    "overlapping offsets": ((LAYER_SHARD,), _overlapping, LAYER_SHARD, "overlap"),
    "dtype/shape byte mismatch": ((SHARD,), _dtype_size_mismatch, SHARD, "needs"),
    "dtype wrong for config": ((SHARD,), _dtype_wrong_for_config, SHARD, "expected BF16"),
    "missing tokenizer": ((), lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json", "missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint_is_refused_cleanly(case, tiny_checkpoint, tmp_path, cli):
    real, breaker, names, why = CASES[case]
    broken = _clone(tiny_checkpoint, tmp_path / "ckpt", real)
    breaker(broken)
    out = tmp_path / "out" / "model.gguf"
    result = cli("quantize", str(broken), "-o", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert names in lines[0] and why in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob("out/*"))


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_output_folder(where, tiny_checkpoint, tmp_path, cli):
    if where == "under-a-file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "model.gguf"
    else:
        out = Path("/proc/gptoss-not-writable/model.gguf")
    result = cli("quantize", str(tiny_checkpoint), "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot write output") and str(out.parent) in result.stderr
    assert not out.exists()


def test_interrupt_leaves_nothing_under_final_name(tiny_checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    calls = []

    def progress(n, total, name):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(tiny_checkpoint, out, progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tiny_checkpoint, tmp_path, cli):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"precious")
    refused = cli("quantize", str(tiny_checkpoint), "-o", str(out))
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert out.read_bytes() == b"precious"
    forced = cli("quantize", str(tiny_checkpoint), "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes()[:4] == b"GGUF"


def test_unknown_model_name_says_pull_first(cli):
    result = cli("quantize", "20b")
    assert result.returncode == 2
    assert "not downloaded yet" in result.stderr and "gptoss pull 20b" in result.stderr


def test_not_enough_disk_is_refused_before_writing(tiny_checkpoint, tmp_path, cli):
    out = tmp_path / "model.gguf"
    result = cli("quantize", str(tiny_checkpoint), "-o", str(out), env={"GPTOSS_FAKE_FREE_BYTES": "1000000"})
    assert result.returncode == 2
    assert "not enough disk space" in result.stderr and str(tmp_path) in result.stderr
    assert list(tmp_path.iterdir()) == []
