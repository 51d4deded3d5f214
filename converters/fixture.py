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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from converters import hf_tokenizer
from converters.errors import BadInputError, GptossError, OutputError
from converters.fixture_weights import Tensor, plan_tensors

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
VOCAB_SIZE = hf_tokenizer.VOCAB_SIZE
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


def _split(tensors: list[Tensor], shards: int) -> list[list[Tensor]]:
    """Contiguous, non-empty groups of about total/shards bytes each."""
    target = sum(t.nbytes for t in tensors) / shards
    parts: list[list[Tensor]] = [[]]
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


def _write_safetensors(path: Path, tensors: list[Tensor], tick: Callable[[int], None]) -> None:
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


def _write_all(folder: Path, shape: FixtureShape, seed: int, tiktoken_path: Path, progress: Progress | None,
               dead_experts: dict[int, tuple[int, ...]] | None = None) -> None:
    _write_tokenizer(folder, tiktoken_path)
    _write_json(folder / "config.json", make_config(shape))
    _write_json(folder / "generation_config.json", GENERATION_CONFIG)
    tensors = plan_tensors(shape, seed, dead_experts)
    total = sum(t.nbytes for t in tensors)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    weight_map = {}
    for name, group in zip(_shard_names(shape.shards), _split(tensors, shape.shards), strict=True):
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
                     progress: Progress | None = None,
                     dead_experts: dict[int, tuple[int, ...]] | None = None) -> Path:
    """Write a random gpt-oss checkpoint in the official HF layout to out_dir (atomically) and return it;
    dead_experts {layer: expert ids}: experts the router never chooses (a very negative router bias)."""
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
        _write_all(partial, shape, seed, tiktoken_path, progress, dead_experts)
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
