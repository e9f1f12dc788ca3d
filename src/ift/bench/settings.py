"""The benchmark's settings: the methods it runs (VARIANTS), its shapes (conf/bench.yaml), what a step is."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.paths import CONF_DIR

SCHEMA_VERSION = 1
BASELINE = "sft"
PASS1_LABEL = "ift.pass1"  # profiler range around IFTTrainer.pass1 (memory up to the end of pass 1)


@dataclass(frozen=True)
class Variant:
    """A benchmarked method: conf/method/<file>.yaml and keys overridden on top of it (IFT's ablations switch each of
    its two optimisations alone with ``memory_efficient: pass1 | pass2``, a trainer option)."""

    file: str
    overrides: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    lean: bool = False  # the plain-cross-entropy trainer (ift.bench.step.PlainCrossEntropySFTTrainer), not the method's


VARIANTS: dict[str, Variant] = {
    "sft_lean": Variant(
        "sft",
        {"reduction": "token_mean"},
        about="the floor: the model's full logits and PyTorch's cross-entropy over the response tokens (token mean)",
        lean=True,
    ),
    "sft": Variant("sft", about="conf/method/sft.yaml: per-sequence-mean SFT, lean LM head (memory_efficient=true)"),
    "ift": Variant(
        "ift",
        {"memory_efficient": True},
        about="IFTTrainer, memory_efficient=true: chunked argmax in pass 1, chunked label log-probs in pass 2",
    ),
    "ift_plain": Variant(
        "ift",
        {"memory_efficient": False},
        about="IFTTrainer, memory_efficient=false: full-vocabulary logits in both passes (before)",
    ),
    "ift_plain_pass1": Variant(
        "ift",
        {"memory_efficient": "pass2"},
        about="ablation: full logits in pass 1 only (pass 2 chunked)",
    ),
    "ift_plain_pass2": Variant(
        "ift",
        {"memory_efficient": "pass1"},
        about="ablation: full logits in pass 2 only (pass 1 chunked argmax)",
    ),
    "dpo": Variant("dpo", {"precompute_ref_log_probs": False},
                   about="TRL DPOTrainer with a reference model, lean LM head (memory_efficient=true)"),
    "dpo_precomputed": Variant(
        "dpo",
        {"precompute_ref_log_probs": True},
        about="TRL DPOTrainer, reference log-probs precomputed at construction (untimed)",
    ),
    "orpo": Variant("orpo", about="TRL ORPOTrainer with the response-only NLL term, lean LM head (memory_efficient=true)"),
}

DEFAULT_METHODS = (
    "sft_lean",
    "sft",
    "ift",
    "ift_plain",
    "ift_plain_pass1",
    "ift_plain_pass2",
    "dpo",
    "dpo_precomputed",
    "orpo",
)

LEAN = "sft_lean"
# Each method's compute floor in units of sft_lean's step: the passes through the model it needs (a forward and a
# backward cost 1 + 2 = 3 forward-equivalents per sequence). IFT: + one no-gradient forward = 4/3. DPO: two sequences
# (chosen, rejected) = 2, + two no-gradient reference forwards = 8/3; with the reference precomputed = 2. ORPO: two
# sequences = 2. A method's "time / floor" is its step time over sft_lean's, divided by this.
FLOORS = {"sft_lean": 1.0, "sft": 1.0, "ift": 4 / 3, "ift_plain": 4 / 3, "ift_plain_pass1": 4 / 3,
          "ift_plain_pass2": 4 / 3, "dpo": 8 / 3, "dpo_precomputed": 2.0, "orpo": 2.0}
# The performance issue's targets, against sft_lean: step time (of the floor for the preference methods) and peak
# memory; None: no target.
LEAN_TARGETS = {"sft": (1.10, 1.0, "lean"), "ift": (1.45, 1.1, "lean"), "dpo": (1.15, 2.2, "floor"),
                "dpo_precomputed": (1.15, 2.2, "floor"), "orpo": (1.15, 2.2, "floor")}

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) for MFU, matched against torch.cuda.get_device_name().
GPU_PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
}

STEP_DEFINITION = (
    "one optimiser step of the method's real trainer on one batch (gradient accumulation 1): "
    "Trainer._get_num_items_in_batch, trainer.training_step (compute_loss forward pass(es) + backward), "
    "gradient clipping to max_grad_norm, optimizer.step(), lr_scheduler.step(), model.zero_grad(set_to_none). "
    "Not included: data loading/collation (the collated batch is prepared once), logging, checkpointing. "
    "DPO with a reference model includes the reference forward; dpo_precomputed reads reference log-probs "
    "computed once at trainer construction (not timed). IFT includes pass 1 (no-grad forward for the argmax)."
)


class BenchError(ValueError):
    """An impossible benchmark config value; the message names the key."""


@dataclass
class MethodResult:
    name: str
    times_s: list[float] = field(default_factory=list)
    first_loss: float | None = None
    first_grad_norm: float | None = None
    tokens_per_step: int = 0
    sequences_per_step: int = 0
    resident_bytes: int = 0
    step_peak_bytes: int | None = None
    pass1_peak_bytes: int | None = None

    def summary(self) -> dict[str, Any]:
        median = statistics.median(self.times_s)
        peak = None if self.step_peak_bytes is None else self.resident_bytes + self.step_peak_bytes
        return {
            "median_step_s": median,
            "min_step_s": min(self.times_s),
            "max_step_s": max(self.times_s),
            "step_times_s": list(self.times_s),
            "tokens_per_step": self.tokens_per_step,
            "sequences_per_step": self.sequences_per_step,
            "tokens_per_s": self.tokens_per_step / median,
            "resident_bytes": self.resident_bytes,
            "step_peak_bytes": self.step_peak_bytes,
            "pass1_peak_bytes": self.pass1_peak_bytes,
            "peak_bytes": peak,
            "first_loss": self.first_loss,
            "first_grad_norm": self.first_grad_norm,
        }


def _plain(node) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def resolve_settings(cfg: Mapping) -> dict[str, Any]:
    """The shape's settings with top-level overrides applied, validated (errors name the key)."""
    cfg = _plain(cfg)
    shapes = cfg.get("shapes") or {}
    shape = cfg.get("shape")
    if shape not in shapes:
        raise BenchError(f"shape={shape!r} is unknown; choose one of {sorted(shapes)}")
    spec = dict(shapes[shape])
    model_cfg = spec.get("model")
    if isinstance(model_cfg, str):  # a conf/model/*.yaml name
        from omegaconf import OmegaConf

        model_cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / f"{model_cfg}.yaml"))
    if not isinstance(model_cfg, Mapping):
        raise BenchError(f"shapes.{shape}.model must be a mapping of model dims or a conf/model name")
    settings = {
        "shape": shape,
        "model": dict(model_cfg),
        "vocab_size": int(spec["vocab_size"]),
        "seq_len": int(cfg.get("seq_len") or spec["seq_len"]),
        "batch_size": int(cfg.get("batch_size") or spec["batch_size"]),
        "device": str(spec.get("device", "cpu")),
        "dtype": str(spec.get("dtype", "float32")),
        "prompt_fraction": float(cfg.get("prompt_fraction", 0.25)),
        "methods": list(cfg.get("methods") or DEFAULT_METHODS),
        "warmup": int(cfg.get("warmup", 1)),
        "rounds": int(cfg.get("rounds", 3)),
        "measure_memory": bool(cfg.get("measure_memory", True)),
        "threads": cfg.get("threads"),
        "seed": int(cfg.get("seed", 0)),
        "optim": str(cfg.get("optim", "rmsprop")),
        "learning_rate": float(cfg.get("learning_rate", 1e-5)),
        "max_grad_norm": float(cfg.get("max_grad_norm", 1.0)),
        "gpu_peak_tflops": cfg.get("gpu_peak_tflops"),
    }
    unknown = [m for m in settings["methods"] if m not in VARIANTS]
    if unknown:
        raise BenchError(f"methods: unknown {unknown}; choose from {list(VARIANTS)}")
    if len(set(settings["methods"])) != len(settings["methods"]):
        raise BenchError(f"methods: each method at most once, got {settings['methods']}")
    if BASELINE not in settings["methods"]:
        raise BenchError(f"methods must include {BASELINE!r}: every ratio is taken to it")
    if settings["vocab_size"] < 16:
        raise BenchError(f"shapes.{shape}.vocab_size must be >= 16, got {settings['vocab_size']}")
    if not 0.0 < settings["prompt_fraction"] < 1.0:
        raise BenchError(f"prompt_fraction must lie in (0, 1), got {settings['prompt_fraction']}")
    prompt_len = int(round(settings["seq_len"] * settings["prompt_fraction"]))
    if settings["seq_len"] < 8 or not 2 <= prompt_len <= settings["seq_len"] - 3:
        raise BenchError(
            f"seq_len={settings['seq_len']} with prompt_fraction={settings['prompt_fraction']} leaves "
            "no room for a prompt and a response (seq_len >= 8)"
        )
    settings["prompt_len"] = prompt_len
    for key in ("batch_size", "rounds"):
        if settings[key] < 1:
            raise BenchError(f"{key} must be >= 1, got {settings[key]}")
    if settings["warmup"] < 1:
        raise BenchError(
            f"warmup must be >= 1 (the first step creates the optimizer state), got {settings['warmup']}"
        )
    if settings["dtype"] not in ("float32", "bfloat16"):
        raise BenchError(f"shapes.{shape}.dtype must be float32 or bfloat16, got {settings['dtype']}")
    if settings["device"] not in ("cpu", "cuda"):
        raise BenchError(f"shapes.{shape}.device must be cpu or cuda, got {settings['device']}")
    if settings["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchError(
                f"shape={shape} needs a CUDA GPU and torch.cuda.is_available() is False "
                "(run shape=small or shape=tiny on CPU)"
            )
    if settings["dtype"] == "bfloat16" and settings["device"] != "cuda":
        raise BenchError(f"shapes.{shape}.dtype=bfloat16 needs device=cuda; CPU runs in float32")
    return settings
