"""Random-weight gpt-oss checkpoints in exactly the layout of the Hugging Face release, for tests, demo, bench.

    python -m converters.fixture OUT_DIR --preset tiny|tiny6|slice [--seed N] [--force]

The folder holds what `openai/gpt-oss-20b` holds for a converter: config.json (mxfp4 quantization_config),
generation_config.json, shards `model-0000N-of-0000M.safetensors` numbered from 00000 like the release, their
index, and the o200k_harmony tokenizer files. Experts are MXFP4 (blocks/scales uint8) from a real
quantizer, everything else bf16. Tensors are generated and written one bounded chunk at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters import hf_tokenizer
from converters.errors import BadInputError, GptossError, OutputError
from converters.mxfp4_ref import float32_to_bf16_bits, quantize_mxfp4

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
VOCAB_SIZE = hf_tokenizer.VOCAB_SIZE
# Standard deviation of the output logits (next-token entropy about 10 nats, top-1 still well defined).
# With larger logits, or expert outputs as large as the residual stream, llama.cpp's own arithmetic noise
# (it quantizes activations to Q8_0 in MXFP4 and Q8_0 matmuls) alone exceeds the parity thresholds.
LOGIT_STD = 2.0
EXPERT_OUT_SCALE = 0.25  # expert down-projection output relative to a unit-variance init
CHUNK_VALUES = 4 << 20  # float32 values generated at once (16 MB)
NEED_DATA = "Run from a gptoss checkout (it has tests/data)"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FixtureShape:
    """Sizes of a fixture checkpoint; everything else is the real gpt-oss-20b config."""

    hidden: int
    layers: int
    experts: int
    experts_per_tok: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    sliding_window: int
    shards: int


PRESETS: dict[str, FixtureShape] = {
    # hidden is a multiple of 32 but not a power of two; window shorter than a test prompt.
    "tiny": FixtureShape(hidden=96, layers=4, experts=4, experts_per_tok=2, intermediate=96, heads=4,
                         kv_heads=2, head_dim=64, sliding_window=8, shards=3),
    "tiny6": FixtureShape(hidden=160, layers=6, experts=8, experts_per_tok=4, intermediate=128, heads=8,
                          kv_heads=2, head_dim=64, sliding_window=8, shards=3),
    # Real widths of gpt-oss-20b, two layers: what the benchmark times per layer.
    "slice": FixtureShape(hidden=2880, layers=2, experts=32, experts_per_tok=4, intermediate=2880, heads=64,
                          kv_heads=8, head_dim=64, sliding_window=128, shards=3),
}

GENERATION_CONFIG = {"bos_token_id": 199998, "do_sample": True, "eos_token_id": [200002, 199999, 200012],
                     "pad_token_id": 199999, "transformers_version": "4.55.0.dev0"}


def make_config(shape: FixtureShape) -> dict:
    """config.json of the release (gpt-oss-20b's, from tests/data) with the shape's sizes substituted."""
    path = DATA_DIR / "gpt-oss-20b.config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"cannot read the reference config ({exc})", NEED_DATA) from exc
    config.update(
        experts_per_token=shape.experts_per_tok, num_experts_per_tok=shape.experts_per_tok,
        head_dim=shape.head_dim, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_attention_heads=shape.heads, num_hidden_layers=shape.layers, num_key_value_heads=shape.kv_heads,
        num_local_experts=shape.experts, sliding_window=shape.sliding_window,
        layer_types=[("sliding_attention", "full_attention")[i % 2] for i in range(shape.layers)],
    )
    return config


def _check_shape(shape: FixtureShape) -> None:
    problems = [
        f"{field} {getattr(shape, field)} is not a multiple of 32"
        for field in ("hidden", "intermediate") if getattr(shape, field) % 32
    ]
    if min(shape.layers, shape.experts, shape.heads, shape.kv_heads, shape.head_dim, shape.shards) < 1:
        problems.append("every size must be at least 1")
    elif shape.heads % shape.kv_heads:
        problems.append(f"heads {shape.heads} is not a multiple of kv_heads {shape.kv_heads}")
    elif shape.shards > 3 + 19 * shape.layers:
        problems.append(f"{shape.shards} shards for {3 + 19 * shape.layers} tensors")
    if not 1 <= shape.experts_per_tok <= shape.experts:
        problems.append(f"experts_per_tok {shape.experts_per_tok} is not within 1..{shape.experts}")
    if problems:
        raise BadInputError(str(shape), "; ".join(problems), "Fix the fixture shape")


@dataclass
class _Tensor:
    name: str
    dtype: str  # safetensors dtype: "BF16" or "U8"
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[bytes]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * (2 if self.dtype == "BF16" else 1)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _normal_bf16(seed: int, name: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> _Tensor:
    """A bf16 tensor of N(mean, std^2) values, generated a bounded number of rows at a time."""

    def chunks() -> Iterator[bytes]:
        rng = _rng(seed, name)
        row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        rows, step = shape[0], max(1, CHUNK_VALUES // row)
        for start in range(0, rows, step):
            count = min(step, rows - start) * row
            values = rng.standard_normal(count, dtype=np.float32) * np.float32(std) + np.float32(mean)
            yield float32_to_bf16_bits(values).tobytes()

    return _Tensor(name, "BF16", shape, chunks)


class _Experts:
    """One MXFP4 expert projection [E, rows, cols]: blocks stream per expert, scales are kept for later."""

    def __init__(self, seed: int, name: str, experts: int, rows: int, cols: int, std: float) -> None:
        self.seed, self.name, self.std = seed, name, std
        self.experts, self.rows, self.cols = experts, rows, cols
        self._scales: list[bytes] | None = None

    def tensors(self) -> list[_Tensor]:
        groups = self.cols // 32
        return [
            _Tensor(f"{self.name}_blocks", "U8", (self.experts, self.rows, groups, 16), self._blocks),
            _Tensor(f"{self.name}_scales", "U8", (self.experts, self.rows, groups), self._scales_chunks),
        ]

    def _blocks(self) -> Iterator[bytes]:
        rng, scales = _rng(self.seed, self.name), []
        for _ in range(self.experts):
            weight = rng.standard_normal((self.rows, self.cols), dtype=np.float32) * np.float32(self.std)
            blocks, expert_scales = quantize_mxfp4(weight)
            scales.append(expert_scales.tobytes())
            yield blocks.tobytes()
        self._scales = scales

    def _scales_chunks(self) -> Iterator[bytes]:
        if self._scales is None:
            for _ in self._blocks():
                pass
        yield from self._scales or []
        self._scales = None


def _plan(shape: FixtureShape, seed: int) -> list[_Tensor]:
    """Every tensor of the checkpoint, in file order, with the init that keeps the model non-degenerate."""
    h, q_dim, kv_dim = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    out = [_normal_bf16(seed, "model.embed_tokens.weight", (VOCAB_SIZE, h), 1.0)]
    for n in range(shape.layers):
        p = f"model.layers.{n}."
        out += [
            _normal_bf16(seed, p + "input_layernorm.weight", (h,), 0.1, mean=1.0),
            _normal_bf16(seed, p + "self_attn.q_proj.weight", (q_dim, h), h**-0.5),
            _normal_bf16(seed, p + "self_attn.q_proj.bias", (q_dim,), 0.1),
            _normal_bf16(seed, p + "self_attn.k_proj.weight", (kv_dim, h), h**-0.5),
            _normal_bf16(seed, p + "self_attn.k_proj.bias", (kv_dim,), 0.1),
            _normal_bf16(seed, p + "self_attn.v_proj.weight", (kv_dim, h), h**-0.5),
            _normal_bf16(seed, p + "self_attn.v_proj.bias", (kv_dim,), 0.1),
            _normal_bf16(seed, p + "self_attn.o_proj.weight", (h, q_dim), q_dim**-0.5),
            _normal_bf16(seed, p + "self_attn.o_proj.bias", (h,), 0.1),
            _normal_bf16(seed, p + "self_attn.sinks", (shape.heads,), 1.0),
            _normal_bf16(seed, p + "post_attention_layernorm.weight", (h,), 0.1, mean=1.0),
            _normal_bf16(seed, p + "mlp.router.weight", (shape.experts, h), h**-0.5),
            _normal_bf16(seed, p + "mlp.router.bias", (shape.experts,), 0.5),
        ]
        e, i = shape.experts, shape.intermediate
        out += _Experts(seed, p + "mlp.experts.gate_up_proj", e, 2 * i, h, h**-0.5).tensors()
        out.append(_normal_bf16(seed, p + "mlp.experts.gate_up_proj_bias", (e, 2 * i), 0.1))
        out += _Experts(seed, p + "mlp.experts.down_proj", e, h, i, EXPERT_OUT_SCALE * i**-0.5).tensors()
        out.append(_normal_bf16(seed, p + "mlp.experts.down_proj_bias", (e, h), 0.1 * EXPERT_OUT_SCALE))
    out.append(_normal_bf16(seed, "model.norm.weight", (h,), 0.1, mean=1.0))
    out.append(_normal_bf16(seed, "lm_head.weight", (VOCAB_SIZE, h), LOGIT_STD * h**-0.5))
    return out


def _split(tensors: list[_Tensor], shards: int) -> list[list[_Tensor]]:
    """Contiguous, non-empty groups of about total/shards bytes each."""
    target = sum(t.nbytes for t in tensors) / shards
    parts: list[list[_Tensor]] = [[]]
    size = 0
    for j, tensor in enumerate(tensors):
        to_open = shards - len(parts)
        if parts[-1] and to_open > 0 and (size + tensor.nbytes > target or len(tensors) - j <= to_open):
            parts.append([])
            size = 0
        parts[-1].append(tensor)
        size += tensor.nbytes
    return parts


def _shard_names(shards: int) -> list[str]:
    # The release numbers shards from 00000 and names the count minus one: 20b has 00000..00002 "of-00002".
    if shards == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{shards - 1:05d}.safetensors" for i in range(shards)]


def _write_safetensors(path: Path, tensors: list[_Tensor], tick: Callable[[int], None]) -> None:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for t in tensors:
            written = 0
            for chunk in t.chunks():
                f.write(chunk)
                written += len(chunk)
                tick(len(chunk))
            if written != t.nbytes:
                raise RuntimeError(f"{t.name}: wrote {written} bytes, expected {t.nbytes}")
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _write_tokenizer(folder: Path, tiktoken_path: Path) -> None:
    template = DATA_DIR / "gpt-oss.chat_template.jinja"
    if not template.is_file():
        raise BadInputError(template, "chat template not found", NEED_DATA)
    (folder / "tokenizer.json").write_bytes(hf_tokenizer.tokenizer_json_bytes(Path(tiktoken_path).resolve()))
    _write_json(folder / "tokenizer_config.json", hf_tokenizer.tokenizer_config(int(1e30)))
    _write_json(folder / "special_tokens_map.json", hf_tokenizer.special_tokens_map())
    shutil.copyfile(template, folder / "chat_template.jinja")


def _write_all(folder: Path, shape: FixtureShape, seed: int, tiktoken_path: Path, progress: Progress | None) -> None:
    _write_tokenizer(folder, tiktoken_path)
    _write_json(folder / "config.json", make_config(shape))
    _write_json(folder / "generation_config.json", GENERATION_CONFIG)
    tensors = _plan(shape, seed)
    total = sum(t.nbytes for t in tensors)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    weight_map = {}
    for name, group in zip(_shard_names(shape.shards), _split(tensors, shape.shards)):
        _write_safetensors(folder / name, group, tick)
        weight_map.update({t.name: name for t in group})
    if shape.shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(folder / "model.safetensors.index.json", index)
    (folder / "README.md").write_text(
        f"Random-weight gpt-oss fixture written by gptoss (seed {seed}, {shape}). Not a real model.\n",
        encoding="utf-8",
    )


def write_checkpoint(out_dir: Path, shape: FixtureShape | str = "tiny", seed: int = 0,
                     tiktoken_path: Path | None = None, force: bool = False,
                     progress: Progress | None = None) -> Path:
    """Write a random gpt-oss checkpoint in the official HF layout to out_dir (atomically) and return it."""
    if isinstance(shape, str):
        if shape not in PRESETS:
            raise BadInputError(shape, "unknown fixture preset", f"Use one of {', '.join(PRESETS)}")
        shape = PRESETS[shape]
    _check_shape(shape)
    out_dir = Path(out_dir)
    tiktoken_path = Path(tiktoken_path) if tiktoken_path else DATA_DIR / "o200k_base.tiktoken"
    if not tiktoken_path.is_file():
        raise BadInputError(tiktoken_path, "o200k_base.tiktoken not found", "Pass --tiktoken PATH")
    if out_dir.exists() and not force:
        raise OutputError(out_dir, "already exists", "Pass --force to replace it")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        _write_all(partial, shape, seed, tiktoken_path, progress)
        if out_dir.is_dir() and not out_dir.is_symlink():
            shutil.rmtree(out_dir)
        elif out_dir.exists() or out_dir.is_symlink():
            out_dir.unlink()
        partial.rename(out_dir)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise OutputError(out_dir, exc.strerror or str(exc), "Check the folder and free disk space") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m converters.fixture`; prints the folder on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m converters.fixture",
        description="Write a random-weight gpt-oss checkpoint in the official Hugging Face layout.",
        epilog="examples:\n  python -m converters.fixture .work/tiny --preset tiny\n"
               "  python -m converters.fixture /tmp/slice --preset slice --seed 1 --force",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path, help="folder to create (written as OUT_DIR.partial, then renamed)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    parser.add_argument("--tiktoken", type=Path, default=None, help="o200k_base.tiktoken (default: tests/data)")
    args = parser.parse_args(argv)
    show = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show:
            print(f"\rwriting {args.preset} fixture: {done / 2**20:,.0f}/{total / 2**20:,.0f} MiB",
                  end="", file=sys.stderr, flush=True)

    try:
        path = write_checkpoint(args.out_dir, args.preset, args.seed, args.tiktoken, args.force, progress)
    except GptossError as exc:
        print(f"{chr(10) if show else ''}error: {exc.message()}", file=sys.stderr)
        return 2 if isinstance(exc, BadInputError) else 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if show:
        print(file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
