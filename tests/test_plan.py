"""The memory planner as a pure function on the real 20b/120b shapes, its GGUF reading, and `gptoss plan`."""

from __future__ import annotations

import json

import gguf
import pytest
from conftest import DATA

from converters.errors import BadInputError
from gptoss_cli.engine.gguf_header import read_header, read_metadata
from gptoss_cli.memory.devices import parse_meminfo, parse_nvidia_smi, parse_size
from gptoss_cli.memory.placement import GiB, compute_buffer_bytes, kv_cache_bytes, plan_memory
from gptoss_cli.memory.shapes import KNOWN_CONFIGS, shape_from_config, shape_from_config_file, shape_from_gguf

# Hand arithmetic, default recipe (MXFP4: 17 bytes per 32 weights; Q8_0: 34 per 32; F32: 4 per weight).
# Both releases: hidden 2880, expert width 2880, 64 heads, 8 KV heads, head_dim 64, vocab 201088.
#   attention per layer (Q8_0):  q 4096x2880 + k 512x2880 + v 512x2880 + o 2880x4096
#                                = (11,796,480 + 1,474,560 + 1,474,560 + 11,796,480) * 34/32 = 28,200,960
#   biases q,k,v,o (F32):        (4096 + 512 + 512 + 2880) * 4 = 32,000
#   two norms + sinks (F32):     2 * 2880 * 4 + 64 * 4          = 23,296
#   router (F32):                E * 2880 * 4 + E * 4
#   experts per layer (MXFP4):   3 * E * 2880 * 2880 * 17/32    (gate, up, down)
#   expert biases (F32):         E * (2880 + 2880 + 2880) * 4
#   token_embd (Q8_0, in RAM):   201088 * 2880 * 34/32 = 615,329,280
#   output (Q8_0) + output_norm: 615,329,280 + 11,520  = 615,340,800
# 120b, E = 128: router 1,474,560 + 512; experts 1,692,057,600 + biases 4,423,680 = 1,696,481,280
#   dense per layer = 28,200,960 + 32,000 + 23,296 + 1,475,072 = 29,731,328
# 20b, E = 32:   router 368,640 + 128; experts 423,014,400 + biases 1,105,920 = 424,120,320
#   dense per layer = 28,200,960 + 32,000 + 23,296 + 368,768 = 28,625,024
EXPERTS_120B, DENSE_120B = 1_696_481_280, 29_731_328
EXPERTS_20B, DENSE_20B = 424_120_320, 28_625_024
EMBD, OUTPUT = 615_329_280, 615_340_800


@pytest.fixture(scope="module")
def s120():
    return shape_from_config_file(DATA / "gpt-oss-120b.config.json")


@pytest.fixture(scope="module")
def s20():
    return shape_from_config_file(DATA / "gpt-oss-20b.config.json")


def test_tensor_sizes_of_the_real_shapes(s20, s120):
    assert (s120.n_layers, s20.n_layers) == (36, 24)
    assert s120.expert_bytes == (EXPERTS_120B,) * 36 and s120.layer_bytes == (DENSE_120B,) * 36
    assert s20.expert_bytes == (EXPERTS_20B,) * 24 and s20.layer_bytes == (DENSE_20B,) * 24
    assert (s120.input_bytes, s120.output_bytes) == (EMBD, OUTPUT)
    # Whole files: 36 * (1,696,481,280 + 29,731,328) + 615,329,280 + 615,340,800 = 63,374,323,968 bytes
    # (ggml-org's gpt-oss-120b-mxfp4.gguf is 63.4 GB); 20b: 24 * 452,745,344 + 1,230,670,080 = 12,096,558,336.
    assert s120.weight_bytes == 63_374_323_968
    assert s20.weight_bytes == 12_096_558_336
    # layer_types in config.json: sliding on even layers, full on odd ones
    assert s120.swa_layers == tuple(n % 2 == 0 for n in range(36))


def test_built_in_shapes_equal_the_official_configs(s20, s120):
    assert shape_from_config(KNOWN_CONFIGS["120b"], s120.name) == s120
    assert shape_from_config(KNOWN_CONFIGS["20b"], s20.name) == s20


def test_kv_cache_only_full_layers_grow_with_context(s120):
    # per token per layer: K + V = 2 * 8 heads * 64 * 2 bytes (f16) = 2048
    full, swa = kv_cache_bytes(s120, 32768, swa_full=False)
    assert full == 18 * 32768 * 2048 == 1_207_959_552
    assert swa == 18 * 768 * 2048        # llama.cpp: pad256(window 128 + ubatch 512) = 768 cells
    assert kv_cache_bytes(s120, 65536, swa_full=False)[1] == swa
    assert kv_cache_bytes(s120, 32768, swa_full=True) == (full, full)   # full-size SWA cache
    assert kv_cache_bytes(s120, 1000, swa_full=False)[0] == 18 * 1024 * 2048  # context padded to 256


def test_120b_on_24gb_at_32k(s120):
    # GPU holds: dense 36 * 29,731,328 + output 615,340,800 = 1,685,668,608; KV 2 * 1,207,959,552 (full SWA)
    #   compute, no flash attention: 4,467,863,552 (4260.89 MiB, the size llama.cpp reports for this shape,
    #   context and cache: see tests/test_plan_oracle.py)
    #   fixed = (1,685,668,608 + 2,415,919,104) * 1.1 + 4,467,863,552 = 8,979,610,035
    #   24 GiB = 25,769,803,776 -> 16,790,193,741 left / (1,696,481,280 * 1.1) = 8.997 -> 8 layers of experts
    plan = plan_memory(s120, 32768, 24 * GiB, 64 * GiB, swa_full=True)
    assert f"{compute_buffer_bytes(s120, 32768, flash_attn=False, swa_full=True) / 2**20:.2f}" == "4260.89"
    assert plan.fits and plan.n_cpu_moe == 36 - 8
    assert plan.gpu["experts"] == 8 * EXPERTS_120B
    assert plan.ram == {"token_embd": EMBD, "experts": 28 * EXPERTS_120B}
    assert plan.gpu_needed <= 24 * GiB
    # the smallest that fits: a byte less of VRAM moves one more layer of experts to RAM
    assert plan_memory(s120, 32768, plan.gpu_needed - 1, 64 * GiB, swa_full=True).n_cpu_moe == 29


def test_120b_short_swa_cache_and_flash_attention(s120):
    # swa_full off, flash attention: compute 131,223,552 (125.14 MiB, as llama.cpp reports);
    #   KV 1,207,959,552 + 28,311,552 = 1,236,271,104
    #   fixed = (1,685,668,608 + 1,236,271,104) * 1.1 + 131,223,552 = 3,345,357,235
    #   (25,769,803,776 - 3,345,357,235) / 1,866,129,408 = 12.02 -> 12 layers of experts, n_cpu_moe 24
    plan = plan_memory(s120, 32768, 24 * GiB, 64 * GiB, flash_attn=True, swa_full=False)
    assert plan.n_cpu_moe == 24 and plan.fits


def test_20b_on_8gb(s20):
    # dense 24 * 28,625,024 + 615,340,800 = 1,302,341,376; KV at 8192 with full SWA: 24 * 8192 * 2048
    #   = 402,653,184; compute 1,145,974,784 (1092.89 MiB, as llama.cpp reports)
    #   fixed = (1,302,341,376 + 402,653,184) * 1.1 + 1,145,974,784 = 3,021,468,800
    #   (8,589,934,592 - 3,021,468,800) / (424,120,320 * 1.1) = 11.94 -> 11 layers on GPU, n_cpu_moe 13
    plan = plan_memory(s20, 8192, 8 * GiB, 32 * GiB, swa_full=True)
    assert plan.n_cpu_moe == 13 and plan.fits
    assert plan_memory(s20, 8192, 16 * GiB, 32 * GiB).n_cpu_moe == 0  # 20b fits a 16 GB card whole


def test_more_vram_never_needs_more_experts_in_ram(s120):
    chosen = [plan_memory(s120, 16384, g * GiB, 256 * GiB).n_cpu_moe for g in range(6, 90, 4)]
    assert chosen == sorted(chosen, reverse=True)
    assert chosen[-1] == 0


def test_does_not_fit_and_cpu_only(s120, s20):
    tiny_gpu = plan_memory(s120, 8192, 2 * GiB, 256 * GiB)
    assert not tiny_gpu.fits and tiny_gpu.short_of == "gpu" and tiny_gpu.n_cpu_moe == 36
    short_ram = plan_memory(s120, 8192, 24 * GiB, 16 * GiB)
    assert not short_ram.fits and short_ram.short_of == "ram"
    cpu = plan_memory(s20, 8192, 0, 32 * GiB)
    assert cpu.fits and cpu.gpu == {} and cpu.gpu_layers == 0 and cpu.ram["weights"] == s20.weight_bytes
    assert not plan_memory(s20, 8192, 0, 8 * GiB).fits


# --- GGUF headers -----------------------------------------------------------------------------------

def test_gguf_header_agrees_with_gguf_py_and_the_config_estimate(tiny_gguf, tiny_checkpoint):
    header = read_header(tiny_gguf)
    reader = gguf.GGUFReader(tiny_gguf)
    assert {t.name: t.n_bytes for t in header.tensors} == {t.name: int(t.n_bytes) for t in reader.tensors}
    assert header.metadata["gpt-oss.block_count"] == 4
    shape = shape_from_gguf(tiny_gguf)
    assert shape.weight_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    estimate = shape_from_config_file(tiny_checkpoint)
    assert (estimate.expert_bytes, estimate.layer_bytes, estimate.input_bytes, estimate.output_bytes) == \
        (shape.expert_bytes, shape.layer_bytes, shape.input_bytes, shape.output_bytes)
    assert (shape.n_kv_heads, shape.head_dim, shape.sliding_window) == (2, 64, 8)


def test_read_metadata_and_bad_headers(tiny_gguf, tmp_path):
    assert read_metadata(tiny_gguf, {"general.architecture"}) == {"general.architecture": "gpt-oss"}
    junk = tmp_path / "x.gguf"
    junk.write_bytes(b"PK\x03\x04 not gguf at all")
    with pytest.raises(BadInputError, match="not a GGUF"):
        read_metadata(junk, {"general.architecture"})
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:40])
    with pytest.raises(BadInputError, match="truncated"):
        read_header(cut)


# --- parsing ----------------------------------------------------------------------------------------

def test_parse_size():
    assert parse_size("24GB") == parse_size("24 GiB") == 24 * GiB
    assert parse_size("16000MB") == 16000 << 20
    assert parse_size("0") == 0 and parse_size("1.5g") == int(1.5 * GiB)
    for bad in ("", "lots", "24XB", "-3GB"):
        with pytest.raises(BadInputError):
            parse_size(bad)


def test_parse_nvidia_smi_and_meminfo():
    devs = parse_nvidia_smi("NVIDIA GeForce RTX 4090, 23000, 24564\nNVIDIA A10, 100, 23028\n")
    assert [(d.name, d.free) for d in devs] == [("NVIDIA GeForce RTX 4090", 23000 << 20), ("NVIDIA A10", 100 << 20)]
    info = parse_meminfo("MemTotal:       65536000 kB\nMemAvailable:   32768000 kB\nHugePages_Total:       0\n")
    assert info["MemAvailable"] == 32768000 * 1024 and info["HugePages_Total"] == 0


# --- the command ------------------------------------------------------------------------------------

def test_plan_command_json(cli):
    r = cli("plan", "120b", "--vram", "24GB", "--ram", "64GB", "--ctx", "32768", "--flash-attn", "off", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["fits"] and doc["n_cpu_moe"] == 27
    assert doc["command"] == "gptoss chat 120b --n-cpu-moe 27 --ctx-size 32768 --flash-attn off"
    assert "release shape" in doc["source"]
    # chat's default, --flash-attn auto, runs flash attention: no attention-score buffer, 3 more layers fit
    r = cli("plan", "120b", "--vram", "24GB", "--ram", "64GB", "--ctx", "32768", "--json")
    doc = json.loads(r.stdout)
    assert doc["n_cpu_moe"] == 24 and doc["command"] == "gptoss chat 120b --n-cpu-moe 24 --ctx-size 32768"


def test_plan_command_table_and_errors(cli, tiny_gguf):
    r = cli("plan", "20b", "--vram", "8GB", "--ram", "32GB")
    assert r.returncode == 0, r.stderr
    # the backend's short sliding-window cache (see test_20b_on_8gb for the full-size one): KV at 8192 is
    # 12 * 8192 * 2048 + 12 * 768 * 2048 = 220,200,960; with flash attention (the default, auto) the compute
    # buffer is the activations alone, 512 * (8 * 2880 + 3 * 4 * 2880) * 4 = 117,964,800; fixed =
    # (1,302,341,376 + 220,200,960) * 1.1 + 117,964,800 = 1,792,761,370; 6,797,173,222 / 466,532,352 = 14.57
    # -> 14 layers' experts on the GPU, 10 in RAM
    assert "--n-cpu-moe 10" in r.stdout and "experts of layers 0-9" in r.stdout
    assert "\x1b[" not in r.stdout
    r = cli("plan", str(tiny_gguf), "--vram", "0", "--ram", "1GB")
    assert r.returncode == 0 and "CPU only" in r.stdout
    r = cli("plan", "120b", "--vram", "2GB", "--ram", "64GB")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: does not fit (gpt-oss-120b): even with every expert")
    r = cli("plan", "120b", "--vram", "lots")
    assert r.returncode == 2 and "not a memory size" in r.stderr


def test_plan_for_serve_slots(cli):
    """--parallel N plans `gptoss serve --parallel N`: N slots of --ctx-size tokens, each with its own KV cells
    (llama.cpp's sizes for the same context: tests/test_plan_oracle.py)."""
    args = ["plan", "20b", "--vram", "16GB", "--ram", "64GB", "--ctx", "4096", "--flash-attn", "off"]
    doc = json.loads(cli(*args, "--parallel", "4", "--json").stdout)
    # 12 full layers x 4096 cells and 12 sliding layers x (128 + 512, padded to 768) cells, 2048 bytes each, x 4
    assert doc["gpu"]["kv_cache"] == (12 * 4096 + 12 * 768) * 2048 * 4 and doc["parallel"] == 4
    assert doc["command"] == "gptoss serve 20b --ctx-size 4096 --flash-attn off --parallel 4"
    single = json.loads(cli(*args, "--json").stdout)
    assert single["gpu"]["kv_cache"] == (12 * 4096 + 12 * 768) * 2048 and single["command"].startswith("gptoss chat")
    r = cli(*args, "--parallel", "4")
    assert r.returncode == 0 and "gpt-oss-20b, context 4096 x 4 sequences: --n-cpu-moe" in r.stdout
