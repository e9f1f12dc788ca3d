"""scripts/cpu_ops_probe.py, which scripts/emulated_cpus.sh compares across CPU models: it must be deterministic on
one machine, or a difference under emulation would mean nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT

PROBE = REPO_ROOT / "scripts" / "cpu_ops_probe.py"


def _probe() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return dict(item.split("=", 1) for item in result.stdout.split())


def test_the_probe_hashes_every_operation_the_same_way_twice():
    first, second = _probe(), _probe()
    assert first == second
    for op in ("exp", "sqrt", "linear_192x2048", "sdpa_causal", "model_logits", "adamw_2_steps"):
        assert len(first[op]) == 8 and int(first[op], 16) >= 0, op
    assert len(set(first.values())) == len(first)  # distinct computations, distinct hashes: nothing hashed twice
