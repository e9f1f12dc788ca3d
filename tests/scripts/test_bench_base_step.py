"""scripts/bench_base_step.py: its FLOP count of the profiled matrix products and its operator groups."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import bench_base_step  # noqa: E402


def test_matmul_flops_by_hand():
    assert bench_base_step.matmul_flops("aten::mm", [[5, 4], [4, 3]]) == 2 * 5 * 4 * 3
    assert bench_base_step.matmul_flops("aten::addmm", [[3], [5, 4], [4, 3]]) == 2 * 5 * 4 * 3  # bias first
    assert bench_base_step.matmul_flops("aten::bmm", [[2, 5, 4], [2, 4, 3]]) == 2 * 2 * 5 * 4 * 3


@pytest.mark.parametrize(("name", "group"), [("aten::mm", "matrix products"), ("aten::addmm", "matrix products"),
                                             ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention (SDPA)"),
                                             ("aten::mul", "the rest"), ("aten::linear", "the rest")])
def test_operator_groups(name, group):
    assert bench_base_step.group_of(name) == group


def test_profile_step_counts_the_products_the_profiler_recorded():
    """A toy step of known products: one [6x8]@[8x5] mm, one [3x6x8]@[3x8x2] bmm and one bias-free elementwise op."""
    a, b = torch.randn(6, 8), torch.randn(8, 5)
    c, d = torch.randn(3, 6, 8), torch.randn(3, 8, 2)

    class Toy:
        def step(self):
            return torch.mm(a, b).relu(), torch.bmm(c, d)

    groups, flops, seconds = bench_base_step.profile_step(Toy(), steps=4)
    assert flops == 4 * (2 * 6 * 8 * 5 + 2 * 3 * 6 * 8 * 2)
    assert seconds > 0 and groups["matrix products"] == pytest.approx(seconds)
    assert groups["the rest"] > 0  # relu


def test_a_world_without_a_tokenizer_is_named(tmp_path):
    import bench_start_point_head

    with pytest.raises(SystemExit, match=f"--world {tmp_path / 'nowhere'}: no tiny world there"):
        bench_start_point_head.base_setup(tmp_path, tmp_path / "nowhere")
