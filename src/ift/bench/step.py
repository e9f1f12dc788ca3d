"""One method's real trainer (ift.train.trainers), its collated batch and its optimiser step."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trl import SFTTrainer

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.bench.settings import PASS1_LABEL, VARIANTS
from ift.bench.workload import method_config


def _label_pass1(trainer, cuda_peaks: list[int]) -> None:
    """Mark IFT's pass 1 as a profiler range (``ift.pass1``); on CUDA also note the allocator's peak as it returns."""
    import torch

    original = trainer.pass1

    def labelled_pass1(*args, **kwargs):
        with torch.profiler.record_function(PASS1_LABEL):
            out = original(*args, **kwargs)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda_peaks.append(torch.cuda.max_memory_allocated())
        return out

    trainer.pass1 = labelled_pass1


class PlainCrossEntropySFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the plain causal-LM loss: the model's full logits and ``F.cross_entropy`` over the
    response tokens (token mean). The benchmark's floor for SFT (``sft_lean``); it never trains a cell."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch.nn.functional as F

        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), inputs["labels"][:, 1:].flatten(), ignore_index=-100)
        return (loss, None) if return_outputs else loss


def ready_to_step(trainer, max_steps: int) -> None:
    """The optimiser and its schedule, created as Trainer's loop creates them before the first step."""
    trainer.create_optimizer()
    trainer.create_scheduler(num_training_steps=max_steps, optimizer=trainer.optimizer)
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's epoch loop sets before each step


def optimiser_step(trainer, batch: Mapping) -> tuple[float, float | None]:
    """One optimiser step on one collated ``batch``, as Trainer's inner loop runs it (gradient accumulation 1):
    the loss and its backward, gradient clipping, the optimiser and schedule steps, gradients freed. Returns the loss
    and the gradient norm before clipping (None without clipping)."""
    model = trainer.model
    num_items = trainer._get_num_items_in_batch([batch], trainer.args.device)
    loss = trainer.training_step(model, dict(batch), num_items)
    grad_norm = None
    if trainer.args.max_grad_norm > 0:
        grad_norm = trainer._clip_grad_norm(model)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    model.zero_grad(set_to_none=True)
    trainer.state.global_step += 1
    return float(loss), (None if grad_norm is None else float(grad_norm))


class MethodBench:
    """One method's real trainer (ift.train.trainers.build_trainer), its collated batch and its optimiser step."""

    def __init__(
        self, name: str, settings: Mapping, model_dir: Path, tokenizer, rows, expected, work_dir: Path
    ):
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM

        from ift.train.arguments import training_kwargs
        from ift.train.trainers import build_trainer, sft_config

        self.name = name
        self.settings = settings
        self.device = settings["device"]
        dtype = torch.bfloat16 if settings["dtype"] == "bfloat16" else torch.float32
        method = method_config(name)
        kind = method["name"]
        recipe = {
            "per_device_train_batch_size": int(settings["batch_size"]),
            "gradient_accumulation_steps": 1,
            "max_steps": int(settings["warmup"]) + int(settings["rounds"]) + 1,
            "learning_rate": float(settings["learning_rate"]),
            "lr_scheduler_type": "constant",
            "weight_decay": 0.0,
            "max_grad_norm": float(settings["max_grad_norm"]),
            "optim": str(settings["optim"]),
        }
        trainer_cfg = {
            "device": self.device,
            "bf16": settings["dtype"] == "bfloat16",
            "activation_checkpointing": False,
            "logging_steps": 1,
            "dataloader_num_workers": 0,
        }
        common = training_kwargs(
            trainer_cfg,
            recipe,
            output_dir=work_dir / name,
            seed=int(settings["seed"]),
            run_name=f"bench-{name}",
            report_to="none",
        )
        common["disable_tqdm"] = True
        if kind in ("sft", "ift"):
            data = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
        else:
            data = [dict(r) for r in rows]
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        if VARIANTS[name].lean:
            self.trainer = PlainCrossEntropySFTTrainer(
                model=model, args=sft_config(common, int(settings["seq_len"])), train_dataset=Dataset.from_list(data),
                processing_class=tokenizer,
            )
        else:
            self.trainer = build_trainer(
                method,
                model=model,
                tokenizer=tokenizer,
                dataset=Dataset.from_list(data),
                common_args=common,
                max_length=int(settings["seq_len"]),
            )
        trainer = self.trainer
        self.pass1_cuda_peaks: list[int] = []
        if kind == "ift":
            _label_pass1(trainer, self.pass1_cuda_peaks)
        batch = next(iter(trainer.get_train_dataloader()))
        self._check_batch(kind, batch, expected)
        self.batch = trainer._prepare_inputs(batch)
        self.tokens, self.sequences = self._count(kind, self.batch)
        ready_to_step(trainer, recipe["max_steps"])
        self.model = trainer.model

    # ---- the data every method sees must be the same token ids ------------------------------------------------
    def _check_batch(
        self, kind: str, batch: Mapping, expected: tuple[list[list[int]], list[list[int]]]
    ) -> None:
        chosen, rejected = expected
        if kind in ("sft", "ift"):
            got = [batch["input_ids"][i].tolist() for i in range(batch["input_ids"].shape[0])]
            want = chosen
        elif kind == "dpo":
            got = [batch["input_ids"][i].tolist() for i in range(batch["input_ids"].shape[0])]
            want = chosen + rejected
        else:  # orpo keeps the sides apart
            got = [row.tolist() for key in ("chosen_input_ids", "rejected_input_ids") for row in batch[key]]
            want = chosen + rejected
        if sorted(got) != sorted(want):
            lengths = sorted({len(g) for g in got})
            raise RuntimeError(
                f"[bench] {self.name}: the trainer's batch is not the benchmark's token ids "
                f"(sequence lengths {lengths}, expected {self.settings['seq_len']})"
            )

    @staticmethod
    def _count(kind: str, batch: Mapping) -> tuple[int, int]:
        if kind == "orpo":
            masks = [batch["chosen_attention_mask"], batch["rejected_attention_mask"]]
        else:
            masks = [batch["attention_mask"]]
        return int(sum(int(m.sum()) for m in masks)), int(sum(m.shape[0] for m in masks))

    # ---- one optimiser step, as Trainer's inner loop does it (gradient accumulation 1) ------------------------
    def step(self) -> tuple[float, float | None]:
        return optimiser_step(self.trainer, self.batch)

    def resident_bytes(self) -> int:
        """Bytes held between steps: policy weights and buffers, reference model, optimizer state (unique storages)."""
        import torch

        tensors = [*self.model.parameters(), *self.model.buffers()]
        ref = getattr(self.trainer, "ref_model", None)
        if ref is not None:
            tensors += [*ref.parameters(), *ref.buffers()]
        for state in self.trainer.optimizer.state.values():
            tensors += [value for value in state.values() if torch.is_tensor(value)]
        storages = {}
        for tensor in tensors:
            storage = tensor.untyped_storage()
            storages[(storage.device.type, storage.data_ptr())] = storage.nbytes()
        return int(sum(storages.values()))
