"""Worker for tests/distributed/test_distributed.py: a few optimiser steps of each method on a tiny model, under 1 or
more processes on CPU (gloo), with the same GLOBAL batch; writes the losses, gradient norms, final (full)
parameters and the reloaded checkpoint that ``ift.train.loop.save_run`` wrote, to <out_dir>/result-<tag>.pt.

    python tests/helpers/dist_train.py <out_dir> <global_batch> [methods] [grad_accum] [lean|plain]  # 1 process
    torchrun --nproc_per_node 2 tests/helpers/dist_train.py <out_dir> <global_batch> ...            # DDP
    accelerate launch --config_file conf/accelerate/fsdp.yaml --num_processes 2 --mixed_precision no \
        tests/helpers/dist_train.py <out_dir> <global_batch> ...                                    # FSDP2

``methods``: comma-separated names of METHOD_NODES (default sft,ift,dpo). ``plain`` sets ``memory_efficient: false``
on SFT, DPO, ORPO and SimPO (their trainers' own log-prob paths: TRL's fused head, or full logits; the tag gets
``-plain``); the default is the lean LM head (ift.train.lean_head), as in every conf/method file.

FSDP on CPU: accelerate (1.15) only switches to FSDP for accelerator device types; on CPU it silently keeps
``MULTI_CPU`` (plain DDP) and ignores the FSDP plugin, although torch's FSDP2 (``fully_shard``) runs on CPU with
gloo. Under FSDP (``ACCELERATE_USE_FSDP=true``, which ``accelerate launch`` sets from the yaml) this worker
therefore promotes ``MULTI_CPU`` to ``FSDP`` right after AcceleratorState is built, with the same assignments
accelerate makes for GPUs, so that everything downstream (the plugin built from the yaml's environment,
``fsdp2_prepare_model``, the Trainer's FSDP code paths, our IFTTrainer hooks, saving) is the real FSDP2 path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (tiny_lm)

import torch  # noqa: E402

import ift  # noqa: E402,F401
from tiny_lm import pref_rows, qa_rows, tiny_model, tiny_tokenizer  # noqa: E402

FSDP = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
# IFT_TEST_LORA=1: every method trains LoRA adapters (ift.train.lora, conf/lora/default.yaml's targets at r 4);
# the saved checkpoint is then the merged plain model (tests/ift/train/test_lora.py compares it across process counts).
LORA = {"r": 4, "alpha": 8, "dropout": 0.0} if os.environ.get("IFT_TEST_LORA") == "1" else None
# name -> (method node, the data it trains on: answers | pairs, and their seed)
METHOD_NODES = {
    "sft": ({"name": "sft"}, "answers", 1),  # TRL's SFTTrainer: token mean
    "sft_sequence_mean": ({"name": "sft", "reduction": "sequence_mean"}, "answers", 1),
    "ift": ({"name": "ift"}, "answers", 2),
    "dpo": ({"name": "dpo", "beta": 0.1}, "pairs", 3),
    "dpo_precomputed": ({"name": "dpo", "beta": 0.1, "precompute_ref_log_probs": True}, "pairs", 3),
    "orpo": ({"name": "orpo", "beta": 0.25}, "pairs", 4),
    "simpo": ({"name": "simpo", "beta": 2.0, "gamma_beta_ratio": 0.8}, "pairs", 5),
}


def allow_fsdp_on_cpu() -> None:
    """Make accelerate honour its FSDP plugin on CPU (see the module docstring)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = self.distributed_type  # as accelerate does at the end

    AcceleratorState.__init__ = __init__


def full_params(model) -> dict[str, torch.Tensor]:
    """Every parameter as a full tensor (FSDP2 keeps DTensor shards; gathering is collective, same order on all)."""
    from torch.distributed.tensor import DTensor

    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for name, p in model.named_parameters()}


def main() -> None:
    from datasets import Dataset
    from torch.distributed.tensor import DTensor
    from transformers import AutoModelForCausalLM

    from ift.train.loop import save_run
    from ift.train.trainers import build_trainer

    out_dir, global_batch = Path(sys.argv[1]), int(sys.argv[2])
    methods = sys.argv[3].split(",") if len(sys.argv) > 3 else ["sft", "ift", "dpo"]
    grad_accum = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    plain = len(sys.argv) > 5 and sys.argv[5] == "plain"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    tag = f"{'fsdp' if FSDP else 'ddp'}-{world}" if world > 1 else "1"
    tag += "-lora" if LORA else ""
    tag += "-plain" if plain else ""
    torch.set_num_threads(1)
    if FSDP:
        allow_fsdp_on_cpu()
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
    for method in methods:
        method_cfg, kind, data_seed = METHOD_NODES[method]
        rows = (qa_rows if kind == "answers" else pref_rows)(3 * global_batch, seed=data_seed)
        if plain and method_cfg["name"] != "ift":
            method_cfg = {**method_cfg, "memory_efficient": False}
        model = AutoModelForCausalLM.from_pretrained(init_dir)
        if LORA:
            from ift.train.lora import wrap

            torch.manual_seed(0)  # lora_A's random init, the same in every run (the train app seeds before it too)
            model = wrap(model, {**method_cfg, "peft": LORA})
        common = dict(output_dir=str(out_dir / f"work-{method}-{tag}"),
                      per_device_train_batch_size=global_batch // (world * grad_accum),
                      gradient_accumulation_steps=grad_accum, max_steps=3, learning_rate=0.5, optim="sgd",
                      lr_scheduler_type="constant", max_grad_norm=5.0, weight_decay=0.0, bf16=False, use_cpu=True,
                      report_to="none", seed=0, data_seed=0, logging_steps=1, activation_checkpointing=False,
                      save_strategy="no", disable_tqdm=True, **({"ddp_backend": "gloo"} if world > 1 else {}))
        trainer = build_trainer(method_cfg, model=model, tokenizer=tok, dataset=Dataset.from_list(rows),
                                common_args=common, max_length=64)
        assert trainer.is_fsdp_enabled == FSDP, "FSDP requested but the Trainer is not running FSDP"
        trainer.train()
        logged = [entry for entry in trainer.state.log_history if "loss" in entry]
        results[method] = {"losses": [entry["loss"] for entry in logged],
                           "grad_norms": [entry["grad_norm"] for entry in logged],
                           "params": full_params(trainer.model),
                           "sharded": sorted(name for name, p in trainer.model.named_parameters()
                                             if isinstance(p, DTensor))}
        saved = out_dir / f"saved-{method}-{tag}"
        save_run(trainer, tok, saved)  # what `python -m ift.train` writes as the run directory
        if rank == 0:
            reloaded = AutoModelForCausalLM.from_pretrained(saved)
            results[method]["saved"] = {name: p.detach() for name, p in reloaded.named_parameters()}
            results[method]["architectures"] = reloaded.config.architectures
    if rank == 0:
        torch.save(results, out_dir / f"result-{tag}.pt")
    if world > 1:
        torch.distributed.barrier()


if __name__ == "__main__":
    main()
