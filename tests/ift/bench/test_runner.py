"""The benchmark (``python -m ift.bench``) at a micro shape: it runs every method and writes a well-formed results.json.

Benchmarks are not tests: nothing here asserts a timing or a target. What is checked is the structure of the result,
that every method produced a finite positive step time and memory figure, and that IFT's optimised paths compute the
same first-step loss and gradient norm as the plain path (relative 1e-4).
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from conftest import CONF_DIR

pytestmark = pytest.mark.slow  # runs a whole stage at a micro shape: a few seconds


def _bench_cfg(tmp_path, overrides=()):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(
            config_name="bench",
            overrides=[f"paths.root={tmp_path}", "shape=micro", "warmup=1", "rounds=2", *overrides],
        )


@pytest.fixture(scope="module")
def micro_result(tmp_path_factory):
    from ift.bench import run_benchmark, write_results

    root = tmp_path_factory.mktemp("bench")
    cfg = _bench_cfg(root)
    result = run_benchmark(cfg, log=lambda _: None)
    path = write_results(result, cfg.out)
    return result, path


def test_results_json_structure(micro_result):
    from ift.bench.settings import DEFAULT_METHODS

    result, path = micro_result
    assert path.name == "results.json" and path.parent.name == "bench"
    saved = json.loads(path.read_text())
    assert saved["schema"] == 1 and set(saved["shapes"]) == {"micro"}
    shape = saved["shapes"]["micro"]
    assert shape == json.loads(json.dumps(result))  # what was written is what was returned
    for key in ("date_utc", "cpu_model", "logical_cpus", "torch", "transformers", "trl", "torch_threads"):
        assert shape["machine"][key], key
    assert shape["settings"]["shape"] == "micro" and shape["settings"]["seq_len"] == 32
    assert set(shape["methods"]) == set(DEFAULT_METHODS) and shape["settings"]["methods"] == list(
        DEFAULT_METHODS
    )
    assert shape["n_params"] > 0 and shape["model_flops_per_token"] > 0
    assert "training_step" in shape["step_definition"]
    assert set(shape["targets"]) == {"ift_over_sft_step_time", "ift_over_sft_peak_memory"}
    assert shape["ratios_to_sft"]["sft"]["step_time"] == pytest.approx(1.0)


def test_every_method_has_finite_positive_numbers(micro_result):
    result, _ = micro_result
    for name, method in result["methods"].items():
        assert len(method["step_times_s"]) == 2, name
        for key in ("median_step_s", "min_step_s", "tokens_per_s", "first_loss"):
            assert math.isfinite(method[key]) and method[key] > 0, (name, key, method[key])
        assert method["resident_bytes"] > 0 and method["step_peak_bytes"] > 0, name
        assert method["peak_bytes"] == method["resident_bytes"] + method["step_peak_bytes"]
        for key, value in result["ratios_to_sft"][name].items():
            assert value is not None and math.isfinite(value) and value > 0, (name, key)
    methods = result["methods"]
    for (
        name,
        method,
    ) in methods.items():  # IFT's pass 1 is marked and its peak measured; no other method has one
        if name.startswith("ift"):
            assert 0 < method["pass1_peak_bytes"] <= method["step_peak_bytes"], name
        else:
            assert method["pass1_peak_bytes"] is None, name
    # pairs: twice the sequences (and tokens) of SFT per step
    assert methods["dpo"]["tokens_per_step"] == 2 * methods["sft"]["tokens_per_step"] == 2 * 2 * 32
    assert methods["orpo"]["sequences_per_step"] == 2 * methods["sft"]["sequences_per_step"]
    # DPO with a reference model holds one more model than with precomputed reference log-probs
    assert methods["dpo"]["resident_bytes"] > methods["dpo_precomputed"]["resident_bytes"]


def test_ift_optimised_and_plain_paths_agree(micro_result):
    result, _ = micro_result
    effects = result["ift_optimisations"]
    assert set(effects) == {"ift_plain", "ift_plain_pass1", "ift_plain_pass2"}
    for name, effect in effects.items():
        assert effect["losses_agree"] and effect["grad_norms_agree"], (name, effect)
        assert effect["first_loss_before"] == pytest.approx(effect["first_loss_after"], rel=1e-4)
    # the random-init loss is about log(vocab) for every LM loss
    assert result["methods"]["ift"]["first_loss"] == pytest.approx(math.log(256), rel=0.2)


def test_sft_lean_is_the_same_loss_as_sft_and_every_method_is_held_against_its_floor(micro_result):
    """sft_lean (plain cross-entropy) computes TRL SFT's token-mean loss and gradient on the same batch; every method
    gets ratios to it, its floor and time / floor; MFU is model FLOP/s over the matmul rate measured in the run."""
    from ift.bench.settings import FLOORS, LEAN_TARGETS

    result, _ = micro_result
    methods, lean = result["methods"], result["ratios_to_sft_lean"]
    assert methods["sft_lean"]["first_loss"] == pytest.approx(methods["sft"]["first_loss"], rel=1e-5)
    assert methods["sft_lean"]["first_grad_norm"] == pytest.approx(methods["sft"]["first_grad_norm"], rel=1e-4)
    assert FLOORS["ift"] == pytest.approx(4 / 3) and FLOORS["dpo"] == pytest.approx(8 / 3)
    for name, ratios in lean.items():
        assert ratios["floor"] == FLOORS[name]
        steps = zip(methods[name]["step_times_s"], methods["sft_lean"]["step_times_s"])
        assert ratios["step_time_paired"] == pytest.approx(statistics.median(t / b for t, b in steps))
        assert ratios["step_time_over_floor"] == pytest.approx(ratios["step_time_paired"] / FLOORS[name])
        assert ratios["peak_memory"] == pytest.approx(methods[name]["peak_bytes"] / methods["sft_lean"]["peak_bytes"])
    assert lean["sft_lean"]["step_time_paired"] == pytest.approx(1.0)
    assert set(result["targets_vs_sft_lean"]) == set(LEAN_TARGETS)
    dpo_time = result["targets_vs_sft_lean"]["dpo"]["step_time"]
    assert dpo_time["value"] == lean["dpo"]["step_time_over_floor"] and dpo_time["met"] == (dpo_time["value"] <= 1.15)
    assert result["peak_flops"] > 0 and "measured" in result["peak_flops_source"]
    for method in methods.values():
        expected = method["tokens_per_s"] * result["model_flops_per_token"] / result["peak_flops"]
        assert method["mfu"] == pytest.approx(expected) and 0 < method["mfu"] < 1.5


def test_matmul_peak_counts_two_flops_per_multiply_add(monkeypatch):
    """matmul_peak_flops is 2·rows·width² over the best of the timed products (the clock is faked)."""
    from ift.bench import measure

    times = iter([0.5, 0.25, 0.4])
    monkeypatch.setattr(measure, "timed", lambda fn, device: (next(times), fn()))
    assert measure.matmul_peak_flops(8, 4, "cpu", torch.float32, repeats=3) == pytest.approx(2 * 4 * 8 * 8 / 0.25)


def test_results_of_two_shapes_are_merged(tmp_path):
    from ift.bench import write_results

    path = tmp_path / "results.json"
    write_results({"settings": {"shape": "a"}, "x": 1}, path)
    write_results({"settings": {"shape": "b"}, "x": 2}, path)
    write_results({"settings": {"shape": "a"}, "x": 3}, path)
    shapes = json.loads(path.read_text())["shapes"]
    assert shapes == {"a": {"settings": {"shape": "a"}, "x": 3}, "b": {"settings": {"shape": "b"}, "x": 2}}


@pytest.mark.parametrize(
    "override, key",
    [
        ("shape=huge", "shape"),
        ("methods=[ift]", "sft"),
        ("methods=[sft,nope]", "methods"),
        ("rounds=0", "rounds"),
        ("prompt_fraction=1.0", "prompt_fraction"),
    ],
)
def test_bad_config_fails_naming_the_key(tmp_path, override, key):
    from ift.bench.settings import BenchError, resolve_settings

    with pytest.raises(BenchError, match=key):
        resolve_settings(_bench_cfg(tmp_path, [override]))


def test_gpu_shape_needs_cuda(tmp_path):
    import torch

    from ift.bench.settings import BenchError, resolve_settings

    cfg = _bench_cfg(tmp_path, ["shape=gpu"])
    if torch.cuda.is_available():
        assert resolve_settings(cfg)["dtype"] == "bfloat16"
    else:
        with pytest.raises(BenchError, match="CUDA"):
            resolve_settings(cfg)
