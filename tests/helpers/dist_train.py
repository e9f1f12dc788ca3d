"""Worker for tests/test_distributed.py: a few optimiser steps of SFT, IFT and DPO on a tiny model, under 1 or
more processes (torchrun, gloo on CPU), with the same GLOBAL batch; writes the losses and final parameters.

    torchrun --nproc_per_node 2 tests/helpers/dist_train.py <out_dir> <global_batch>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (tiny_lm)

import torch  # noqa: E402

import ift  # noqa: E402,F401
from tiny_lm import pref_rows, qa_rows, tiny_model, tiny_tokenizer  # noqa: E402


def main() -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from ift.train.trainers import build_trainer

    out_dir, global_batch = Path(sys.argv[1]), int(sys.argv[2])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    init_dir = out_dir / "init"
    if rank == 0 and not init_dir.exists():
        tiny_model(tok, seed=3).save_pretrained(init_dir)
        tok.save_pretrained(init_dir)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        dist.barrier()
    results = {}
    for method, rows in (("sft", qa_rows(3 * global_batch, seed=1)), ("ift", qa_rows(3 * global_batch, seed=2)),
                         ("dpo", pref_rows(3 * global_batch, seed=3))):
        model = AutoModelForCausalLM.from_pretrained(init_dir)
        common = dict(output_dir=str(out_dir / f"work-{method}-{world}"), per_device_train_batch_size=global_batch // world,
                      gradient_accumulation_steps=1, max_steps=3, learning_rate=0.5, optim="sgd",
                      lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, bf16=False, use_cpu=True,
                      report_to="none", seed=0, data_seed=0, logging_steps=1, activation_checkpointing=False,
                      save_strategy="no", disable_tqdm=True, **({"ddp_backend": "gloo"} if world > 1 else {}))
        method_cfg = {"name": method, "beta": 0.1} if method == "dpo" else {"name": method}
        trainer = build_trainer(method_cfg, model=model, tokenizer=tok, dataset=Dataset.from_list(rows),
                                common_args=common, max_length=64)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        params = {name: p.detach().clone() for name, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}
        results[method] = {"losses": losses, "params": params}
    if rank == 0:
        torch.save(results, out_dir / f"result-{world}.pt")
    if world > 1:
        torch.distributed.barrier()


if __name__ == "__main__":
    main()
