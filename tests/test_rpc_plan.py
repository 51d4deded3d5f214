"""Planning over several devices (`plan --rpc`, `chat --rpc --fit`) as a pure function on the real 120b shape.

The split llama.cpp itself makes is checked against its own load log in test_rpc.py (real workers); here:
every device's share is accounted for once, --fit only answers with placements that fit, and it keeps as
few experts in local RAM as the devices allow.
"""

from __future__ import annotations

import pytest

from gptoss_cli.memory.multi_device import fill_split, layer_devices, plan_devices, shares_for
from gptoss_cli.memory.placement import GiB, kv_cache_bytes
from gptoss_cli.memory.shapes import KNOWN_CONFIGS, shape_from_config

SHAPE = shape_from_config(KNOWN_CONFIGS["120b"], "gpt-oss-120b")
TWO_32GB = [("RPC0 (10.0.0.2:50052)", 30 * GiB), ("RPC1 (10.0.0.3:50052)", 30 * GiB)]


def test_each_layer_and_the_output_on_exactly_one_device():
    shares = shares_for(SHAPE, 8192, TWO_32GB, 0, True)
    layers = sorted(il for s in shares for il in s.layers)
    assert layers == list(range(SHAPE.n_layers)) and [s.output for s in shares] == [False, True]
    total = sum(s.bytes["weights"] + s.bytes["experts"] for s in shares) + SHAPE.input_bytes
    assert total == SHAPE.weight_bytes
    assert sum(s.bytes["kv_cache"] for s in shares) == sum(kv_cache_bytes(SHAPE, 8192))


@pytest.mark.parametrize("frees", [[1, 1], [3, 1], [1, 3], [5, 0, 5], [2, 2, 2, 2]])
def test_split_follows_free_memory_in_order(frees):
    where = layer_devices(SHAPE.n_layers, frees)
    assert where == sorted(where)                      # consecutive layers per device, in device order
    counts = [where.count(d) for d in range(len(frees))]
    for c, f in zip(counts, frees, strict=True):                    # proportional to free memory, within one layer
        assert abs(c - f / sum(frees) * (SHAPE.n_layers + 1)) <= 1


def test_default_split_that_fits_needs_no_fit():
    plan = plan_devices(SHAPE, 8192, [("RPC0", 48 * GiB), ("RPC1", 48 * GiB)], 8 * GiB, fit=True)
    assert plan.fits and plan.split is None and plan.n_cpu_moe == 0


def test_fit_keeps_the_fewest_experts_in_local_ram():
    default = plan_devices(SHAPE, 8192, TWO_32GB, 20 * GiB)
    assert not default.fits and "RPC0" in default.reason     # by free memory, device 0 gets 19 full layers
    plan = plan_devices(SHAPE, 8192, TWO_32GB, 20 * GiB, fit=True)
    assert plan.fits and sum(plan.split) == SHAPE.n_layers + 1
    assert all(s.needed <= s.free for s in plan.devices)
    assert plan.ram["experts"] == sum(SHAPE.expert_bytes[:plan.n_cpu_moe]) <= 20 * GiB
    assert fill_split(SHAPE, 8192, TWO_32GB, plan.n_cpu_moe - 1, True) is None


def test_fit_says_what_is_short():
    device = plan_devices(SHAPE, 8192, [("RPC0", GiB // 2)], 64 * GiB, fit=True)
    assert not device.fits and device.reason.startswith("RPC0 needs")
    assert device.reason.endswith("even with every expert in local RAM")
    ram = plan_devices(SHAPE, 8192, [("RPC0", 4 * GiB)], 4 * GiB, fit=True)
    assert not ram.fits and ram.reason.startswith("the weights kept in local RAM need")
