"""scripts/gpu_check.sh: its CPU dry run (every config composed, every trainer built on a toy model), its refusal
without CUDA, and the RESULTS.md section it appends (src/ift/bench/gpu_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_the_dry_run_composes_every_config_and_builds_every_trainer_on_cpu():
    result = _run("--dry-run")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("[gpu_check --dry-run]")]
    built = {line.split("]")[1].split(":")[0].strip(): line for line in lines[:-1]}
    assert set(built) == {"sft", "dpo", "sft_dpo/sft", "sft_dpo/dpo", "tdpo", "orpo", "simpo", "ift"}
    assert "IFTTrainer" in built["ift"] and "DPOTrainer" in built["dpo"] and "ORPOTrainer" in built["orpo"]
    assert "TDPOTrainer" in built["tdpo"] and "SimPOTrainer" in built["simpo"]  # TRL CPOTrainer on the lean head
    assert all("10 steps" in line and "activation_checkpointing=True" in line for line in built.values())
    assert "every config composed" in lines[-1]


def test_without_cuda_it_stops_at_once_saying_why():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = _run()
    assert result.returncode == 2 and "no CUDA device" in result.stderr and "--dry-run" in result.stderr


def test_the_report_appends_figures_and_ratios_to_sft(tmp_path):
    from transformers import MistralConfig

    from ift.bench import gpu_check

    MistralConfig(**gpu_check.TOY_MODEL).save_pretrained(tmp_path / "model")
    for method, step in (("sft", 0.5), ("ift", 0.8)):
        (tmp_path / f"{method}.json").write_text(json.dumps({
            "method": method, "gpus": 1, "steps": 10, "step_seconds_median": step, "tokens_per_second": 1000.0,
            "peak_memory_bytes_rank0": 2 * 2**30}))
    results = tmp_path / "RESULTS.md"
    results.write_text("# before\n")
    section = gpu_check.report(tmp_path, None, results)
    text = results.read_text()
    assert text.startswith("# before\n") and text.endswith(section)
    assert "| sft | 0.500 | 1.00x | 1000 | 2.0 |" in section and "| ift | 0.800 | 1.60x |" in section
    assert "GPU check" in section and "torch" in section
