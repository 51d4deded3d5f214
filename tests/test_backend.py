"""The llama.cpp backend on the tiny GGUF: expert placement overrides, tokens, and the decode loop."""

from __future__ import annotations

import re

import gguf
import pytest

from converters.errors import BadInputError
from gptoss_cli.engine.backend import Backend, BackendOptions, ContextFull
from gptoss_cli.engine.ggml import cpu_extra_buffer_types
from gptoss_cli.engine.loader import FFN_EXPS_REGEX, expert_override_patterns

pytest.importorskip("llama_cpp")

OVERRIDE_LINE = re.compile(r"^tensor (\S+) \(.*\) buffer type overridden to (\S+)")
GREEDY = dict(temperature=0.0, top_p=1.0, stop=set())
RETURN, CALL, END = 200002, 200012, 200007


@pytest.fixture(scope="module")
def model(tiny_gguf):
    """One loaded tiny model shared by the decode-loop tests."""
    b = Backend(tiny_gguf, BackendOptions(ctx_size=4096, seed=7))
    yield b
    b.close()


def _fresh(tiny_gguf, **kw) -> Backend:
    return Backend(tiny_gguf, BackendOptions(ctx_size=4096, **kw))


@pytest.fixture(scope="module")
def tensor_names(tiny_gguf) -> set[str]:
    """Every tensor name in the tiny GGUF, read with gguf-py (slow: parses the whole vocabulary; once)."""
    return {t.name for t in gguf.GGUFReader(tiny_gguf).tensors}


def _experts(names: set[str], layers) -> set[str]:
    """Expert tensors (weights and biases, as --cpu-moe moves them) of the given layers."""
    return {n for n in names if re.match(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.", n)
            and int(n.split(".")[1]) in layers}


EXPERT = re.compile(r"blk\.\d+\.ffn_(gate|up|down)_exps\.")
# On a CPU with AMX the loader also overrides the non-expert weights the AMX buffer would take (llama.cpp#20824);
# those overrides are tested in test_loader.py, these tests look at the experts.
AMX_CPU = "AMX" in cpu_extra_buffer_types()


def _overridden(b: Backend) -> dict[str, str]:
    """Expert tensors the load log says were overridden, with their buffer types."""
    lines = {m.group(1): m.group(2) for m in map(OVERRIDE_LINE.match, b.load_log) if m}
    others = {n for n in lines if not EXPERT.match(n)}
    assert not others or AMX_CPU, f"non-expert tensors overridden on a CPU without AMX: {sorted(others)}"
    return {n: t for n, t in lines.items() if EXPERT.match(n)}


# --- expert placement -------------------------------------------------------------------------------

def test_n_cpu_moe_overrides_exactly_the_experts_of_the_first_layers(tiny_gguf, tensor_names):
    with Backend(tiny_gguf, BackendOptions(ctx_size=256, n_cpu_moe=2)) as b:
        moved = _overridden(b)
    expected = _experts(tensor_names, {0, 1})
    assert len(expected) == 12  # gate, up, down weights and biases for 2 layers
    assert set(moved) == expected
    # An override to the CPU buffer type is re-resolved by llama.cpp over the CPU's buffer list, as
    # `-ot X=CPU` is: extra types first (CPU_REPACK takes MXFP4 experts on AVX2), then plain CPU.
    assert set(moved.values()) <= {"CPU", "CPU_REPACK"}


def test_cpu_moe_overrides_every_expert_tensor(tiny_gguf, tensor_names):
    with Backend(tiny_gguf, BackendOptions(ctx_size=256, cpu_moe=True)) as b:
        moved = _overridden(b)
    assert set(moved) == _experts(tensor_names, {0, 1, 2, 3})
    assert len(moved) == 24


def test_no_override_by_default(tiny_gguf):
    with Backend(tiny_gguf, BackendOptions(ctx_size=256)) as b:
        assert _overridden(b) == {}
        assert any("llama_model_loader" in line for line in b.load_log)  # the log was captured at all


def test_override_patterns_follow_llama_cpp():
    # common/arg.cpp: --n-cpu-moe N adds "blk\.<i>" + LLM_FFN_EXPS_REGEX for i < N; --cpu-moe the bare regex.
    pats = expert_override_patterns(36, cpu_moe=False, n_cpu_moe=2)
    assert pats == [r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps", r"blk\.1\.ffn_(up|down|gate|gate_up)_(ch|)exps"]
    assert not re.search(pats[1], "blk.11.ffn_up_exps.weight")
    assert expert_override_patterns(36, cpu_moe=True, n_cpu_moe=0) == [FFN_EXPS_REGEX]
    assert expert_override_patterns(4, cpu_moe=False, n_cpu_moe=9) == [FFN_EXPS_REGEX]
    assert expert_override_patterns(4, cpu_moe=False, n_cpu_moe=0) == []
    with pytest.raises(BadInputError):
        expert_override_patterns(4, cpu_moe=False, n_cpu_moe=-1)


# --- bad model files --------------------------------------------------------------------------------

def test_not_a_gguf_is_bad_input_naming_the_file(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello, not a model")
    with pytest.raises(BadInputError) as info:
        Backend(bad, BackendOptions())
    assert str(bad) in info.value.message() and "not a GGUF" in info.value.message()


def test_other_architecture_is_bad_input(tmp_path):
    path = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(BadInputError, match="'llama', not gpt-oss"):
        Backend(path, BackendOptions())


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        Backend(tmp_path / "absent.gguf", BackendOptions())


# --- tokens -----------------------------------------------------------------------------------------

def test_tokenize_matches_tiktoken_o200k_harmony(model):
    from oracles import o200k_harmony

    text = ("<|start|>user<|message|>Grüße, 世界! What's 2+2? ```py\nprint(1)\n```<|end|>"
            "<|start|>assistant<|channel|>final<|message|>")
    ids = model.tokenize(text)
    assert ids == o200k_harmony().encode(text, allowed_special="all")
    assert ids[0] == 200006 and ids[-1] == 200008
    assert b"".join(model.token_bytes(i) for i in ids) == text.encode()


def test_token_bytes_of_a_split_character_are_raw_bytes(model):
    from oracles import o200k_harmony

    enc = o200k_harmony()
    for token in enc.encode("🦙 llama"):
        assert model.token_bytes(token) == enc.decode_single_token_bytes(token)
    assert model.token_bytes(RETURN) == b"<|return|>"


# --- generation -------------------------------------------------------------------------------------

PROMPT = list(range(1000, 1040))


def test_greedy_is_reproducible_and_reuses_the_cache(tiny_gguf):
    # On the CPU: llama.cpp's CUDA kernels round differently for different batch sizes (seen on an H100:
    # a fresh prompt and a cached prefix then diverged after a few near-tie random-weight tokens).
    with _fresh(tiny_gguf, gpu_layers=0, seed=7) as model:
        first = list(model.generate(PROMPT, max_tokens=16, **GREEDY))
        assert len(first) == 16
        list(model.generate(list(range(3000, 3050)), max_tokens=8, **GREEDY))  # something else in between
        again = list(model.generate(PROMPT, max_tokens=16, **GREEDY))
        assert again == first
        # Continue the conversation: the cached prefix is kept, and the answer equals a fresh model's.
        longer = PROMPT + first + [200007, 200006]
        reused = list(model.generate(longer, max_tokens=16, **GREEDY))
        assert model.reused_tokens > 0
    with _fresh(tiny_gguf, gpu_layers=0) as other:
        assert reused == list(other.generate(longer, max_tokens=16, **GREEDY))


def test_stop_token_is_yielded_then_generation_ends(model):
    first = list(model.generate(PROMPT, max_tokens=8, **GREEDY))
    stopped = list(model.generate(PROMPT, max_tokens=8, temperature=0.0, top_p=1.0, stop={first[2]}))
    assert stopped == first[:3]


def test_closing_the_generator_keeps_the_backend_usable(model):
    expected = list(model.generate(PROMPT, max_tokens=10, **GREEDY))
    gen = model.generate(PROMPT + [5], max_tokens=100, **GREEDY)
    for _ in range(4):
        next(gen)
    gen.close()
    assert list(model.generate(PROMPT, max_tokens=10, **GREEDY)) == expected


def test_same_seed_samples_the_same_tokens(tiny_gguf):
    runs = []
    for _ in range(2):
        with _fresh(tiny_gguf, seed=1234) as b:
            runs.append(list(b.generate(PROMPT, temperature=1.0, top_p=0.9, max_tokens=24, stop=set())))
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1


def test_prompt_longer_than_the_context_is_refused(tiny_gguf):
    with Backend(tiny_gguf, BackendOptions(ctx_size=256)) as b:
        with pytest.raises(ContextFull):
            list(b.generate(list(range(1000, 1300)), max_tokens=4, **GREEDY))
        # generation stops when the context is full, without an error
        out = list(b.generate(list(range(1000, 1250)), max_tokens=50, **GREEDY))
        assert 0 < len(out) <= 256 - 250 + 1


def test_next_turn_reuses_the_prompt_after_a_reply_longer_than_the_window(tiny_gguf):
    # The sliding-window cache holds window + ubatch cells (8 + 512 -> 768 on the tiny model), so an
    # 800-token reply evicts the window behind the prompt. Harmony's next turn shares exactly that prompt
    # (the reply is re-rendered as final-only), so the backend restores the window it saved at the end of
    # the prompt; the answer must equal a fresh model's on the same tokens. Exact equality across different
    # batch splits needs the non-flash attention kernel: llama.cpp's CPU flash-attention kernel is not
    # bit-identical between a batch of query rows and fewer rows (with it, greedy tokens diverged here).
    turn1 = list(range(1000, 1300))
    exact = BackendOptions(ctx_size=2048, flash_attn="off")
    with Backend(tiny_gguf, exact) as b, Backend(tiny_gguf, exact) as ref:
        reply = list(b.generate(turn1, max_tokens=800, **GREEDY))
        assert b._lc.llama_memory_seq_pos_min(b._mem, 0) > len(turn1)  # the window behind turn1 is gone
        turn2 = turn1 + [200005, 17196, 200008] + reply[:20] + [END, 200006, 1428]
        answer = list(b.generate(turn2, max_tokens=10, **GREEDY))
        assert b.reused_tokens == len(turn1)
        assert answer == list(ref.generate(turn2, max_tokens=10, **GREEDY))
        # a prompt diverging before the saved window's end is read again from the start, still correctly
        other = turn1[:100] + [5, 6, 7]
        list(b.generate(turn1 + reply[:800], max_tokens=1, **GREEDY))
        assert list(b.generate(other, max_tokens=10, **GREEDY)) == list(ref.generate(other, max_tokens=10, **GREEDY))
        assert b.reused_tokens == 0


def test_truncated_gguf_names_llama_cpp_reason(tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:30_000_000])
    with pytest.raises(BadInputError) as info:
        Backend(cut, BackendOptions(ctx_size=256))
    msg = info.value.message()
    assert str(cut) in msg and "corrupted or incomplete" in msg


def test_llama_cpp_is_quiet_unless_verbose(tiny_gguf, capfd):
    with Backend(tiny_gguf, BackendOptions(ctx_size=256)) as b:
        list(b.generate(PROMPT, max_tokens=2, **GREEDY))
    assert capfd.readouterr().err == ""
    with Backend(tiny_gguf, BackendOptions(ctx_size=256, verbose=True)):
        pass
    assert "llama_model_loader" in capfd.readouterr().err


def test_planner_kv_cells_match_what_llama_cpp_allocates(tiny_gguf):
    from gptoss_cli.memory.placement import swa_cells
    from gptoss_cli.memory.shapes import shape_from_gguf

    with Backend(tiny_gguf, BackendOptions(ctx_size=1000)) as b:
        log = "\n".join(b.load_log)
    full = int(re.search(r"creating non-SWA KV cache, size = (\d+) cells", log).group(1))
    swa = int(re.search(r"creating +SWA KV cache, size = (\d+) cells", log).group(1))
    assert full == 1024  # 1000 padded to 256
    assert swa == swa_cells(shape_from_gguf(tiny_gguf), 1000) == 768
