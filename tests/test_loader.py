"""The one model loader: which tensors are kept from llama.cpp's AMX buffer, expert placement, thread counts."""

from __future__ import annotations

import re

import gguf

from gptoss_cli.engine import ggml
from gptoss_cli.engine.backend import Backend, BackendOptions
from gptoss_cli.engine.gguf_header import TensorInfo, read_header
from gptoss_cli.engine.loader import CPU, FFN_EXPS_REGEX, PLAIN, REPACK, LoadOptions, avoid_amx, on_cpu, plan_overrides
from gptoss_cli.engine.threads import linux_math_cores, parse_cpu_list

Q = gguf.GGMLQuantizationType
OVERRIDE_LINE = re.compile(r"^tensor (\S+) \(.*\) buffer type overridden to (\S+)")
GREEDY = dict(temperature=0.0, top_p=1.0, stop=set())


def gpt_oss_20b(attn: Q = Q.Q8_0) -> list[TensorInfo]:
    """gpt-oss-20b's tensors as `gptoss quantize` writes them (ne0 first), attention in the given type."""
    out = [TensorInfo("token_embd.weight", (2880, 201088), Q.Q8_0, 0),
           TensorInfo("output.weight", (2880, 201088), Q.Q8_0, 0),
           TensorInfo("output_norm.weight", (2880,), Q.F32, 0)]
    for i in range(24):
        out += [TensorInfo(f"blk.{i}.attn_q.weight", (2880, 4096), attn, 0),
                TensorInfo(f"blk.{i}.attn_k.weight", (2880, 512), attn, 0),
                TensorInfo(f"blk.{i}.attn_v.weight", (2880, 512), attn, 0),
                TensorInfo(f"blk.{i}.attn_output.weight", (4096, 2880), attn, 0),
                TensorInfo(f"blk.{i}.attn_q.bias", (4096,), Q.F32, 0),
                TensorInfo(f"blk.{i}.ffn_gate_inp.weight", (2880, 32), Q.F32, 0),
                TensorInfo(f"blk.{i}.ffn_gate_exps.weight", (2880, 2880, 32), Q.MXFP4, 0),
                TensorInfo(f"blk.{i}.ffn_down_exps.weight", (2880, 2880, 32), Q.MXFP4, 0),
                TensorInfo(f"blk.{i}.ffn_down_exps.bias", (2880, 32), Q.F32, 0)]
    return out


def routed(rules, names) -> dict[str, str]:
    """Where each name goes: the target of the first rule whose regex matches it, as llama.cpp applies them."""
    out = {}
    for name in names:
        for pattern, target in rules:
            if re.search(pattern, name):
                out[name] = target
                break
    return out


# --- the rule, over device and buffer lists ---------------------------------------------------------

def test_without_amx_nothing_is_moved():
    assert avoid_amx(gpt_oss_20b(), 24, 0, ["CPU_REPACK"]).rules == []
    assert avoid_amx(gpt_oss_20b(), 24, 0, []).rules == []


def test_with_amx_every_matrix_it_would_take_goes_to_the_plain_cpu_buffer():
    tensors = gpt_oss_20b()
    moved = routed(avoid_amx(tensors, 24, 0, ["AMX", "CPU_REPACK"]).rules, [t.name for t in tensors])
    expected = {"output.weight"} | {f"blk.{i}.attn_{p}.weight" for i in range(24) for p in ("q", "k", "v", "output")}
    assert moved == {name: PLAIN for name in expected}
    # read with GET_ROWS (no extra buffer takes it), F32, 3-D experts: llama.cpp's own choice stays
    assert "token_embd.weight" not in moved and "blk.3.ffn_gate_exps.weight" not in moved


def test_types_cpu_repack_serves_go_there_and_shapes_amx_refuses_stay():
    tensors = gpt_oss_20b(attn=Q.Q4_K)
    moved = routed(avoid_amx(tensors, 24, 0, ["AMX", "CPU_REPACK"]).rules, [t.name for t in tensors])
    # Q4_K needs rows of a multiple of 256 for AMX: 4096-wide attn_output qualifies, 2880-wide q/k/v do not
    assert moved["blk.0.attn_output.weight"] == REPACK
    assert "blk.0.attn_q.weight" not in moved and moved["output.weight"] == PLAIN
    # without CPU_REPACK in the build, the plain buffer
    plain = routed(avoid_amx(tensors, 24, 0, ["AMX"]).rules, ["blk.0.attn_output.weight"])
    assert plain == {"blk.0.attn_output.weight": PLAIN}
    # Q6_K has no x86 repack kernel
    q6 = gpt_oss_20b(attn=Q.Q6_K)
    assert routed(avoid_amx(q6, 24, 0, ["AMX", "CPU_REPACK"]).rules, ["blk.5.attn_output.weight"]) == \
        {"blk.5.attn_output.weight": PLAIN}


def test_with_a_gpu_only_the_layers_left_on_the_cpu_are_moved():
    assert [on_cpu(f"blk.{i}.attn_q.weight", 24, 10) for i in (0, 14, 15, 23)] == [True, True, False, False]
    assert not on_cpu("output.weight", 24, 10) and on_cpu("output.weight", 24, 0)
    tensors = gpt_oss_20b()
    moved = routed(avoid_amx(tensors, 24, 10, ["AMX", "CPU_REPACK"]).rules, [t.name for t in tensors])
    assert {int(n.split(".")[1]) for n in moved} == set(range(15))
    assert avoid_amx(tensors, 24, 0x7FFFFFFF, ["AMX", "CPU_REPACK"]).rules == []


def test_cpu_moe_keeps_its_experts_rule_and_gptoss_amx_opts_back_in(monkeypatch):
    tensors, names = gpt_oss_20b(), [t.name for t in gpt_oss_20b()]
    rules = plan_overrides(tensors, 24, 0x7FFFFFFF, LoadOptions(cpu_moe=True), ["AMX", "CPU_REPACK"]).rules
    assert rules == [(FFN_EXPS_REGEX, CPU)]   # everything on the GPU: nothing of AMX's to avoid
    rules = plan_overrides(tensors, 24, 0, LoadOptions(n_cpu_moe=2), ["AMX"]).rules
    where = routed(rules, names)
    assert where["blk.1.ffn_gate_exps.weight"] == CPU and "blk.2.ffn_gate_exps.weight" not in where
    assert where["blk.1.attn_q.weight"] == PLAIN
    monkeypatch.setenv("GPTOSS_AMX", "1")
    assert plan_overrides(tensors, 24, 0, LoadOptions(n_cpu_moe=2), ["AMX"]).rules == \
        [(rf"blk\.{i}{FFN_EXPS_REGEX}", CPU) for i in range(2)]


# --- with llama.cpp ---------------------------------------------------------------------------------

def _placed(b: Backend) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in map(OVERRIDE_LINE.match, b.load_log) if m}


def test_no_tensor_lands_in_the_amx_buffer(tiny_gguf):
    # On a CPU with AMX this is the crash of ggml-org/llama.cpp#20824 averted; elsewhere llama.cpp has no AMX.
    with Backend(tiny_gguf, BackendOptions(ctx_size=256)) as b:
        out = list(b.generate(b.tokenize("<|start|>user<|message|>hi<|end|>"), max_tokens=4, **GREEDY))
        log = b.load_log
    assert len(out) == 4
    # llama.cpp logs "AMX model buffer size" when any tensor is in the AMX buffer, and "cannot be used with
    # preferred buffer type AMX, using CPU instead" when tensors it would have put there went elsewhere.
    assert not [line for line in log if re.search(r"AMX model buffer|amx repack", line)]
    if "AMX" in ggml.cpu_extra_buffer_types():
        assert any(re.search(r"preferred buffer type AMX, using CPU", line) for line in log)


def test_tensors_kept_from_amx_load_and_decode_as_llama_cpp_would_without_it(tiny_gguf, monkeypatch):
    # This machine may lack AMX: report it present (the CPU-feature seam) and check that the overrides reach
    # llama.cpp, name exactly the tensors AMX would take, and give the same tokens as llama.cpp's own placement.
    names = {t.name for t in read_header(tiny_gguf).tensors}
    real = ggml.cpu_extra_buffer_types()
    with Backend(tiny_gguf, BackendOptions(ctx_size=256)) as ref:
        prompt = ref.tokenize("<|start|>user<|message|>Tell me a story.<|end|><|start|>assistant")
        expected = list(ref.generate(prompt, max_tokens=16, **GREEDY))
    monkeypatch.setattr(ggml, "cpu_extra_buffer_types", lambda: {"AMX": 0, **real})
    with Backend(tiny_gguf, BackendOptions(ctx_size=256)) as b:
        placed = _placed(b)
        assert list(b.generate(prompt, max_tokens=16, **GREEDY)) == expected
    matrices = {n for n in names if re.fullmatch(r"blk\.\d+\.attn_(q|k|v|output)\.weight", n)} | {"output.weight"}
    assert placed == {n: PLAIN for n in matrices}


# --- threads ----------------------------------------------------------------------------------------

def _topology(root, siblings: list[str], p_cores: str | None = None):
    for cpu, mask in enumerate(siblings):
        d = root / "cpu" / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "thread_siblings").write_text(mask + "\n")
    p = root / "cpu_core_cpus"
    if p_cores is not None:
        p.write_text(p_cores + "\n")
    return root / "cpu", p


def test_thread_count_is_physical_cores(tmp_path):
    smt = _topology(tmp_path / "smt", ["03", "03", "0c", "0c", "30", "30", "c0", "c0"])
    assert linux_math_cores(*smt) == 4                      # 2-way SMT: one thread per core
    no_smt = _topology(tmp_path / "nosmt", ["1", "2"])
    assert linux_math_cores(*no_smt) == 2                   # this machine's kind: 2 cores, no SMT
    # hybrid: 4 performance cores with SMT (cpus 0-7) and 4 efficiency cores (8-11): performance cores only
    hybrid = _topology(tmp_path / "hybrid", ["003", "003", "00c", "00c", "030", "030", "0c0", "0c0",
                                             "100", "200", "400", "800"], p_cores="0-7")
    assert linux_math_cores(*hybrid) == 4
    assert linux_math_cores(tmp_path / "absent", tmp_path / "absent2") is None
    assert parse_cpu_list("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
