"""Multi-process training equals single-process training with the same global batch (2 CPU processes, gloo).

The worker (tests/helpers/dist_train.py) trains SFT, IFT and DPO for 3 SGD steps from the same initial weights,
once in one process with batch 8 and once under torchrun with 2 processes of batch 4. The IFT loss is normalised
by the number of sequences gathered over processes and multiplied by the process count (DDP averages gradients);
dropping either would change the update by a factor of the process count, which this test would catch.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

WORKER = REPO_ROOT / "tests" / "helpers" / "dist_train.py"
TOLERANCE = dict(rtol=1e-5, atol=1e-5)  # float32 sums reduced in a different order across processes


def test_two_processes_equal_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path), "8"], env=env, capture_output=True,
                            text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    double = subprocess.run([*torchrun, str(WORKER), str(tmp_path), "8"], env=env, capture_output=True, text=True)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = torch.load(tmp_path / "result-1.pt"), torch.load(tmp_path / "result-2.pt")
    for method in ("sft", "ift", "dpo"):
        assert len(one[method]["losses"]) == 3
        torch.testing.assert_close(torch.tensor(two[method]["losses"]), torch.tensor(one[method]["losses"]),
                                   **TOLERANCE)
        for name, value in one[method]["params"].items():
            torch.testing.assert_close(two[method]["params"][name], value, **TOLERANCE,
                                       msg=f"{method}: parameter {name} differs between 1 and 2 processes")
        assert one[method]["losses"][0] != one[method]["losses"][-1]  # training actually moved the model
