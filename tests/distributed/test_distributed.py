"""Multi-process training equals single-process training with the same global batch (2 CPU processes, gloo).

The worker (tests/helpers/dist_train.py) trains each method for 3 SGD steps from the same initial weights
(lr 0.5; gradient clipping at 5.0: the global gradient norm is computed every step and binds on one SFT and one
IFT step, while the other updates keep the gradient's scale, so a wrongly scaled gradient shows in the
parameters): once in one process with batch 8 — the reference — and then

- under DDP: torchrun, 2 processes x batch 4: SFT (TRL's token mean and our per-sequence mean), IFT, DPO, ORPO and
  SimPO
  (DPO with precomputed reference log-probs is not run on 2 processes: for an in-memory dataset TRL writes the
  precomputed values to the cache directory of rank 0's process, which rank 1 then looks for in its own);
- under FSDP2: ``accelerate launch --config_file conf/accelerate/fsdp.yaml`` (the repo's own config; only the
  process count and the precision are overridden: 2 processes, fp32), 2 processes x batch 2 x gradient
  accumulation 2, so the step's sequence count is gathered over micro-batches *and* processes: the same methods.

SFT, DPO, ORPO and SimPO run the lean LM head (``memory_efficient: true``, ift.train.lean_head, the default) in every
run above; the DDP run is also compared with one process on their trainers' own paths (``memory_efficient: false``:
TRL's fused LM head, or the full logits), so the lean head under DDP equals TRL in one process.

Compared with the reference, per method: the logged loss and gradient norm of every step, every final parameter,
and the checkpoint written by ``ift.train.loop.save_run`` (what ``python -m ift.train`` writes) reloaded.
Tolerance rtol = atol = 1e-5: float32 sums reduced in a different order (measured max differences: 5e-7 for
losses, 3e-6 for gradient norms of ~9, 3e-7 for parameters and saved weights). The IFT loss is normalised by the
number of sequences gathered over processes and multiplied by the process count (DDP and FSDP average gradients);
dropping the multiplication halves the gradient (measured under FSDP: losses off by 2.1, parameters by 0.29),
which this test catches. Under FSDP it also asserts that every parameter really was sharded (a DTensor).

FSDP on CPU: accelerate (1.15) only turns its FSDP plugin on for accelerator devices; on CPU it silently trains
plain DDP instead. The worker promotes accelerate's state from MULTI_CPU to FSDP the way accelerate does for GPUs
(see ``allow_fsdp_on_cpu`` there); from then on everything is the real path: the plugin built from the yaml's
environment, ``fsdp2_prepare_model`` (one unit per decoder layer, the input embedding and [final norm, LM head] as
units of their own, the root; the main process's weights broadcast to the others), the Trainer's FSDP code, our
IFTTrainer hooks on sharded modules, clipping over sharded gradients, gathering the full state dict on save.

Not covered here: bf16 mixed precision, NCCL/GPUs, FSDP activation checkpointing, tied embeddings, Trainer
checkpoints and resuming under FSDP, FSDP1, DeepSpeed ZeRO-3 (not installed on CPU machines).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]

WORKER = REPO_ROOT / "tests" / "helpers" / "dist_train.py"
FSDP_CONFIG = REPO_ROOT / "conf" / "accelerate" / "fsdp.yaml"
GLOBAL_BATCH = "8"
METHODS = ("sft", "sft_sequence_mean", "ift", "dpo", "orpo", "simpo")  # names in the worker's METHOD_NODES
LEAN_METHODS = tuple(method for method in METHODS if method != "ift")  # memory_efficient switches their log-prob path
TOLERANCE = dict(rtol=1e-5, atol=1e-5)  # float32 sums reduced in a different order across processes


def _run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(part) for part in command], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """A work dir holding the 1-process reference run (result-1.pt) and the shared initial weights."""
    out = tmp_path_factory.mktemp("distributed")
    _run([sys.executable, WORKER, out, GLOBAL_BATCH, ",".join(METHODS)])
    return out


def _assert_same_training(one: dict, two: dict, label: str, methods=METHODS) -> None:
    for method in methods:
        ref, other = one[method], two[method]
        assert len(ref["losses"]) == 3
        assert ref["losses"][0] != ref["losses"][-1]  # training actually moved the model
        torch.testing.assert_close(torch.tensor(other["losses"]), torch.tensor(ref["losses"]), **TOLERANCE,
                                   msg=lambda m, method=method: f"{label} {method}: losses differ\n{m}")
        torch.testing.assert_close(torch.tensor(other["grad_norms"]), torch.tensor(ref["grad_norms"]), **TOLERANCE,
                                   msg=lambda m, method=method: f"{label} {method}: gradient norms differ\n{m}")
        assert set(other["params"]) == set(ref["params"])
        for name, value in ref["params"].items():
            torch.testing.assert_close(other["params"][name], value, **TOLERANCE,
                                       msg=f"{label} {method}: parameter {name} differs from 1 process")
            torch.testing.assert_close(other["saved"][name], value, **TOLERANCE,
                                       msg=f"{label} {method}: saved checkpoint's {name} differs from 1 process")
        assert other["architectures"] == ref["architectures"] == ["MistralForCausalLM"]


def test_ddp_two_processes_equal_one_process(out_dir):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port())]
    _run([*torchrun, WORKER, out_dir, GLOBAL_BATCH, ",".join(METHODS)])
    _run([sys.executable, WORKER, out_dir, GLOBAL_BATCH, ",".join(LEAN_METHODS), "1", "plain"])
    one, two = torch.load(out_dir / "result-1.pt"), torch.load(out_dir / "result-ddp-2.pt")
    _assert_same_training(one, two, "DDP")
    trl_one = torch.load(out_dir / "result-1-plain.pt")
    _assert_same_training(trl_one, two, "DDP lean head vs TRL's path in 1 process", LEAN_METHODS)


def test_fsdp2_two_processes_equal_one_process(out_dir):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP_CONFIG,
              "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(_free_port())]
    _run([*launch, WORKER, out_dir, GLOBAL_BATCH, ",".join(METHODS), "2"])  # 2 micro-batches per step
    one, two = torch.load(out_dir / "result-1.pt"), torch.load(out_dir / "result-fsdp-2.pt")
    for method in METHODS:
        assert set(two[method]["sharded"]) == set(one[method]["params"]), f"{method}: not every parameter sharded"
    _assert_same_training(one, two, "FSDP2")
