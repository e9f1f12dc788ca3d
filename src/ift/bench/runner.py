"""The benchmark itself: build the real trainers on random tokens, time their steps side by side, measure memory.

See the package docstring (``ift.bench``) for what a step includes and how memory is measured.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
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
    """A benchmarked method: conf/method/<file>.yaml, keys overridden on top of it, and (IFT ablations only)
    IFTOptions changed while one IFTTrainer method runs, so each of IFT's two optimisations can be switched alone."""

    file: str
    overrides: dict[str, Any] = field(default_factory=dict)
    ablate: dict[str, dict[str, Any]] = field(default_factory=dict)
    about: str = ""


VARIANTS: dict[str, Variant] = {
    "sft": Variant("sft", about="TRL SFTTrainer (TRL's fused, chunked LM head)"),
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
        {"memory_efficient": True},
        {"pass1": {"memory_efficient": False}},
        about="ablation: full logits in pass 1 only (pass 2 chunked)",
    ),
    "ift_plain_pass2": Variant(
        "ift",
        {"memory_efficient": True},
        {"token_logps_pass2": {"memory_efficient": False}},
        about="ablation: full logits in pass 2 only (pass 1 chunked argmax)",
    ),
    "dpo": Variant("dpo", {"precompute_ref_log_probs": False}, about="TRL DPOTrainer with a reference model"),
    "dpo_precomputed": Variant(
        "dpo",
        {"precompute_ref_log_probs": True},
        about="TRL DPOTrainer, reference log-probs precomputed at construction (untimed)",
    ),
    "orpo": Variant("orpo", about="TRL ORPOTrainer with the response-only NLL term (full logits)"),
}

DEFAULT_METHODS = (
    "sft",
    "ift",
    "ift_plain",
    "ift_plain_pass1",
    "ift_plain_pass2",
    "dpo",
    "dpo_precomputed",
    "orpo",
)

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


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# Machine, tokenizer, model, data
# ---------------------------------------------------------------------------------------------------------------


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on (no host names, no paths)."""
    import torch
    import transformers
    import trl

    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1_5_15_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
    }
    return info


def bench_tokenizer(vocab_size: int):
    """A word-level tokenizer whose vocabulary is ``<pad> <s> </s> <unk> w4 .. w{V-1}``: text <-> ids exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def random_rows(settings: Mapping, tokenizer) -> tuple[list[dict], list[list[int]], list[list[int]]]:
    """``batch_size`` rows of random tokens as text (prompt / chosen / rejected) and their exact id sequences.

    Every sequence is ``<s> prompt.. response.. </s>``, ``seq_len`` tokens. The BOS and EOS are written into the text
    so no trainer adds one of its own: every method trains on the very same token ids. SFT and IFT use prompt +
    chosen; DPO and ORPO the pairs (twice as many sequences per step).
    """
    import torch

    generator = torch.Generator().manual_seed(int(settings["seed"]) + 1)
    low, high = 4, int(settings["vocab_size"])  # skip the four special tokens
    prompt_len, seq_len = int(settings["prompt_len"]), int(settings["seq_len"])
    response_len = seq_len - prompt_len
    rows, chosen_ids, rejected_ids = [], [], []
    for _ in range(int(settings["batch_size"])):
        prompt = torch.randint(low, high, (prompt_len - 1,), generator=generator).tolist()
        chosen = torch.randint(low, high, (response_len - 1,), generator=generator).tolist()
        rejected = torch.randint(low, high, (response_len - 1,), generator=generator).tolist()

        def words(ids):
            return " ".join(f"w{i}" for i in ids)

        rows.append(
            {
                "prompt": f"{tokenizer.bos_token} {words(prompt)}",
                "chosen": f" {words(chosen)} {tokenizer.eos_token}",
                "rejected": f" {words(rejected)} {tokenizer.eos_token}",
            }
        )
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        chosen_ids.append([bos, *prompt, *chosen, eos])
        rejected_ids.append([bos, *prompt, *rejected, eos])
    return rows, chosen_ids, rejected_ids


def build_initial_model(settings: Mapping, tokenizer, directory: Path) -> int:
    """Random-init the shape's MistralForCausalLM (the start-point builder), save it; return its parameter count."""
    from omegaconf import OmegaConf

    from ift.train.start_points import build_tiny_model

    model = build_tiny_model(OmegaConf.create(dict(settings["model"])), tokenizer, int(settings["seed"]))
    n_params = sum(p.numel() for p in model.parameters())
    if settings["dtype"] == "bfloat16":
        import torch

        model = model.to(torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    return n_params


def method_config(name: str) -> dict[str, Any]:
    """The method node the training app would get: conf/method/<file>.yaml plus the variant's overrides."""
    from omegaconf import OmegaConf

    variant = VARIANTS[name]
    node = OmegaConf.to_container(
        OmegaConf.load(Path(CONF_DIR) / "method" / f"{variant.file}.yaml"), resolve=True
    )
    node.update(variant.overrides)
    return node


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


def _ablate(trainer, method_name: str, changes: Mapping[str, Any]) -> None:
    """Make ``trainer.<method_name>`` run with IFTOptions ``changes`` (the rest of the step keeps its options)."""
    import dataclasses

    original = getattr(trainer, method_name)

    def with_changed_options(*args, **kwargs):
        saved = trainer.ift
        trainer.ift = dataclasses.replace(saved, **changes)
        try:
            return original(*args, **kwargs)
        finally:
            trainer.ift = saved

    setattr(trainer, method_name, with_changed_options)


# ---------------------------------------------------------------------------------------------------------------
# One method: its trainer, its batch, its step
# ---------------------------------------------------------------------------------------------------------------


class MethodBench:
    """One method's real trainer (ift.train.trainers.build_trainer), its collated batch and its optimiser step."""

    def __init__(
        self, name: str, settings: Mapping, model_dir: Path, tokenizer, rows, expected, work_dir: Path
    ):
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM

        from ift.train.arguments import training_kwargs
        from ift.train.trainers import build_trainer

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
        self.trainer = build_trainer(
            method,
            model=model,
            tokenizer=tokenizer,
            dataset=Dataset.from_list(data),
            common_args=common,
            max_length=int(settings["seq_len"]),
        )
        trainer = self.trainer
        for method_name, changes in VARIANTS[name].ablate.items():
            _ablate(trainer, method_name, changes)
        self.pass1_cuda_peaks: list[int] = []
        if kind == "ift":
            _label_pass1(trainer, self.pass1_cuda_peaks)
        batch = next(iter(trainer.get_train_dataloader()))
        self._check_batch(kind, batch, expected)
        self.batch = trainer._prepare_inputs(batch)
        self.tokens, self.sequences = self._count(kind, self.batch)
        trainer.create_optimizer()
        trainer.create_scheduler(num_training_steps=recipe["max_steps"], optimizer=trainer.optimizer)
        trainer.current_gradient_accumulation_steps = 1  # what Trainer's epoch loop sets before each step
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
        trainer, model = self.trainer, self.model
        num_items = trainer._get_num_items_in_batch([self.batch], trainer.args.device)
        loss = trainer.training_step(model, dict(self.batch), num_items)
        grad_norm = None
        if trainer.args.max_grad_norm > 0:
            grad_norm = trainer._clip_grad_norm(model)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad(set_to_none=True)
        trainer.state.global_step += 1
        return float(loss), (None if grad_norm is None else float(grad_norm))

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


# ---------------------------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------------------------


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    _synchronize(device)
    start = time.perf_counter()
    out = fn()
    _synchronize(device)
    return time.perf_counter() - start, out


def measure_step_memory(bench: MethodBench) -> tuple[int | None, int | None]:
    """Peak tensor bytes allocated during one step above the level at its start, for the whole step and (IFT)
    up to the end of pass 1: ``(step_peak, pass1_peak)``.

    CUDA: ``torch.cuda.max_memory_allocated`` after a peak reset, minus ``memory_allocated`` at the start (pass 1:
    the same maximum read when pass 1 returns). CPU: PyTorch's profiler with ``profile_memory=True`` records every
    allocation and free of the CPU allocator; the peak of their running sum in time order is the step's peak, and
    its maximum inside the ``ift.pass1`` range is pass 1's. None where the profiler exposes no memory events.
    """
    import torch

    if bench.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        bench.pass1_cuda_peaks.clear()
        bench.step()
        torch.cuda.synchronize()
        pass1 = max(bench.pass1_cuda_peaks) - start if bench.pass1_cuda_peaks else None
        return int(torch.cuda.max_memory_allocated() - start), pass1
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        bench.step()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # pragma: no cover - a torch without the kineto results API
        return None, None
    allocations = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    )
    windows = [(e.start_ns(), e.end_ns()) for e in events if e.name() == PASS1_LABEL]
    current = peak = 0
    pass1 = None
    for when, nbytes in allocations:
        current += nbytes
        peak = max(peak, current)
        if any(lo <= when <= hi for lo, hi in windows):
            pass1 = max(pass1 or 0, current)
    return (int(peak) if allocations else None), pass1


@contextlib.contextmanager
def _stderr_silenced():
    """Kineto prints two lines to the C-level stderr per profiled region; keep the benchmark's output readable."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def model_flops_per_token(model_dir: Path, seq_len: int) -> int:
    """Training FLOPs per token (forward + backward = 3x forward), TRL's estimate for the model's config."""
    from transformers import AutoConfig
    from trl.trainer.utils import compute_flops_per_token

    return int(compute_flops_per_token(AutoConfig.from_pretrained(model_dir), seq_len))


def gpu_peak_flops(settings: Mapping) -> float | None:
    if settings["device"] != "cuda":
        return None
    if settings.get("gpu_peak_tflops"):
        return float(settings["gpu_peak_tflops"]) * 1e12
    import torch

    name = torch.cuda.get_device_name()
    for key, tflops in GPU_PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


# ---------------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------------


def run_benchmark(cfg: Mapping, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark described by ``cfg`` (conf/bench.yaml) and return its result (see ``write_results``)."""
    import torch
    from transformers import set_seed

    settings = resolve_settings(cfg)
    if settings["threads"]:
        torch.set_num_threads(int(settings["threads"]))
    set_seed(settings["seed"])
    with _quiet():
        return _run(settings, log)


@contextlib.contextmanager
def _quiet():
    """No progress bars, advisory warnings or info logs from transformers/TRL/datasets while building trainers."""
    import logging
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    old_env = os.environ.get("TQDM_DISABLE")
    old_verbosity, old_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    old_datasets_bars = datasets.is_progress_bar_enabled()
    trl_logger = logging.getLogger("trl")
    old_trl_level = trl_logger.level
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference log-prob pass reads it
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    trl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        trl_logger.setLevel(old_trl_level)
        if old_datasets_bars:
            datasets.enable_progress_bars()
        if old_bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(old_verbosity)
        if old_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_env


def _run(settings: Mapping, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    machine = machine_info(settings["device"])
    tokenizer = bench_tokenizer(settings["vocab_size"])
    rows, chosen_ids, rejected_ids = random_rows(settings, tokenizer)
    names = settings["methods"]
    with tempfile.TemporaryDirectory(prefix="ift-bench-") as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "initial"
        n_params = build_initial_model(settings, tokenizer, model_dir)
        log(
            f"[bench] shape={settings['shape']}: {n_params / 1e6:.1f}M parameters, batch {settings['batch_size']} x "
            f"seq {settings['seq_len']} (prompt {settings['prompt_len']}), {settings['device']} {settings['dtype']}, "
            f"{torch.get_num_threads()} threads; methods {', '.join(names)}"
        )
        benches = {}
        for name in names:
            started = time.perf_counter()
            benches[name] = MethodBench(
                name, settings, model_dir, tokenizer, rows, (chosen_ids, rejected_ids), tmp / "trainers"
            )
            log(
                f"[bench] built {name} ({type(benches[name].trainer).__name__}) in "
                f"{time.perf_counter() - started:.1f}s"
            )
        results = {
            name: MethodResult(name, tokens_per_step=b.tokens, sequences_per_step=b.sequences)
            for name, b in benches.items()
        }
        for name, bench in benches.items():  # warm-up; the first step is at identical initial weights
            for i in range(settings["warmup"]):
                seconds, (loss, grad_norm) = timed(bench.step, settings["device"])
                if i == 0:
                    results[name].first_loss, results[name].first_grad_norm = loss, grad_norm
            log(
                f"[bench] warm-up {name}: first loss {results[name].first_loss:.6f}, last step {seconds:.3f}s"
            )
        for round_index in range(settings["rounds"]):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, _ = timed(benches[name].step, settings["device"])
                results[name].times_s.append(seconds)
            log(
                f"[bench] round {round_index + 1}/{settings['rounds']}: "
                + ", ".join(f"{n} {results[n].times_s[-1]:.3f}s" for n in names)
            )
        for name, bench in benches.items():
            results[name].resident_bytes = bench.resident_bytes()
            if settings["measure_memory"]:
                results[name].step_peak_bytes, results[name].pass1_peak_bytes = measure_step_memory(bench)
        flops_per_token = model_flops_per_token(model_dir, settings["seq_len"])
        del benches
    return assemble(settings, machine, n_params, flops_per_token, results)


def assemble(
    settings: Mapping,
    machine: Mapping,
    n_params: int,
    flops_per_token: int,
    results: Mapping[str, MethodResult],
) -> dict[str, Any]:
    """The JSON-ready result of one shape: settings, machine, per-method numbers, ratios to SFT, target checks."""

    methods = {name: r.summary() for name, r in results.items()}
    peak_flops = gpu_peak_flops(settings)
    for summary in methods.values():
        summary["model_tflops_per_s"] = summary["tokens_per_s"] * flops_per_token / 1e12
        summary["mfu"] = (summary["tokens_per_s"] * flops_per_token / peak_flops) if peak_flops else None
    base = methods[BASELINE]

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    def paired(name):  # median over rounds of (this method's step / SFT's step in the same round)
        pairs = [t / b for t, b in zip(methods[name]["step_times_s"], base["step_times_s"]) if b > 0]
        return statistics.median(pairs) if pairs else None

    ratios = {
        name: {
            "step_time": ratio(m["median_step_s"], base["median_step_s"]),
            "step_time_paired": paired(name),
            "peak_memory": ratio(m["peak_bytes"], base["peak_bytes"]),
            "step_peak_memory": ratio(m["step_peak_bytes"], base["step_peak_bytes"]),
            "tokens_per_s": ratio(m["tokens_per_s"], base["tokens_per_s"]),
        }
        for name, m in methods.items()
    }
    out: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "machine": dict(machine),
        "settings": {
            key: settings[key]
            for key in (
                "shape",
                "model",
                "vocab_size",
                "seq_len",
                "prompt_len",
                "batch_size",
                "device",
                "dtype",
                "methods",
                "warmup",
                "rounds",
                "seed",
                "optim",
                "learning_rate",
                "max_grad_norm",
            )
        },
        "n_params": n_params,
        "model_flops_per_token": flops_per_token,
        "step_definition": STEP_DEFINITION,
        "memory_definition": (
            "peak_bytes = resident_bytes (policy weights + buffers, reference model, optimizer state; unique storages) "
            "+ step_peak_bytes (peak of tensor memory allocated during one step above its level at the step's start: "
            "CUDA max_memory_allocated; CPU the running sum of the PyTorch profiler's allocator events); "
            "pass1_peak_bytes (IFT only): the same peak up to the end of IFT's pass 1"
        ),
        "methods": methods,
        "method_definitions": {name: VARIANTS[name].about for name in methods},
        "ratios_to_sft": ratios,
    }
    if "ift" in methods:
        out["ift_optimisations"] = _optimisation_effects(methods)
    if "ift" in methods:
        time_ratio, memory_ratio = ratios["ift"]["step_time"], ratios["ift"]["peak_memory"]
        out["targets"] = {
            "ift_over_sft_step_time": {
                "value": time_ratio,
                "target": 1.40,
                "met": time_ratio is not None and time_ratio <= 1.40,
            },
            "ift_over_sft_peak_memory": {
                "value": memory_ratio,
                "target": 1.10,
                "met": memory_ratio is not None and memory_ratio <= 1.10,
            },
        }
    return out


def _optimisation_effects(methods: Mapping[str, Mapping]) -> dict[str, Any]:
    """Each IFT variant with full logits (before) against ``ift`` (after): time and memory ratios, loss agreement.

    All variants start from the same weights on the same batch, so their first-step losses and (pre-clipping)
    gradient norms must agree: the optimised paths compute the same loss and gradients as the plain one up to
    float32 reassociation (tolerance: relative 1e-4).
    """
    import math

    fast = methods["ift"]
    effects = {}
    for name in ("ift_plain", "ift_plain_pass1", "ift_plain_pass2"):
        if name not in methods:
            continue
        before = methods[name]
        diff = abs(fast["first_loss"] - before["first_loss"])

        def over(key, before=before):
            return None if before[key] is None or not fast[key] else before[key] / fast[key]

        effects[name] = {
            "step_time_before_over_after": over("median_step_s"),
            "peak_memory_before_over_after": over("peak_bytes"),
            "step_peak_memory_before_over_after": over("step_peak_bytes"),
            "pass1_peak_memory_before_over_after": over("pass1_peak_bytes"),
            "first_loss_before": before["first_loss"],
            "first_loss_after": fast["first_loss"],
            "first_loss_abs_diff": diff,
            "losses_agree": bool(
                math.isclose(fast["first_loss"], before["first_loss"], rel_tol=1e-4, abs_tol=1e-5)
            ),
            "first_grad_norm_before": before["first_grad_norm"],
            "first_grad_norm_after": fast["first_grad_norm"],
            "grad_norms_agree": (
                None
                if before["first_grad_norm"] is None or fast["first_grad_norm"] is None
                else bool(
                    math.isclose(
                        fast["first_grad_norm"], before["first_grad_norm"], rel_tol=1e-4, abs_tol=1e-6
                    )
                )
            ),
        }
    return effects


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------


def write_results(result: Mapping, path: str | Path) -> Path:
    """Merge one shape's result into ``path`` ({"schema", "shapes": {shape: result}}), atomically."""
    import json

    from ift.io import write_json_atomic

    path = Path(path)
    existing: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError, OSError):
            existing = json.loads(path.read_text())
    if existing.get("schema") != SCHEMA_VERSION or not isinstance(existing.get("shapes"), dict):
        existing = {"schema": SCHEMA_VERSION, "shapes": {}}
    existing["shapes"][result["settings"]["shape"]] = dict(result)
    return write_json_atomic(path, existing)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown_table(result: Mapping, names: Sequence[str] | None = None) -> str:
    """The per-method table (as in benchmarks/RESULTS.md)."""
    methods, ratios = result["methods"], result["ratios_to_sft"]
    gpu = result["settings"]["device"] == "cuda"
    head = [
        "method",
        "median step (s)",
        "tokens/s",
        "peak MiB",
        "step peak MiB",
        "pass-1 peak MiB",
        "time / SFT",
        "time / SFT (paired)",
        "peak mem / SFT",
        "step peak / SFT",
    ]
    if gpu:
        head.append("MFU")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names or [n for n in result["settings"]["methods"] if n in methods]:
        m, r = methods[name], ratios[name]
        cells = [
            name,
            f"{m['median_step_s']:.3f}",
            f"{m['tokens_per_s']:,.0f}",
            _mib(m["peak_bytes"]),
            _mib(m["step_peak_bytes"]),
            _mib(m.get("pass1_peak_bytes")) if m.get("pass1_peak_bytes") is not None else "-",
            _x(r["step_time"]),
            _x(r["step_time_paired"]),
            _x(r["peak_memory"]),
            _x(r["step_peak_memory"]),
        ]
        if gpu:
            cells.append("n/a" if m["mfu"] is None else f"{100 * m['mfu']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(result: Mapping) -> str:
    """Human-readable summary: machine, settings, the table, the optimisation effect and the targets."""
    s, m = result["settings"], result["machine"]
    lines = [
        f"shape={s['shape']}: {result['n_params'] / 1e6:.1f}M params, batch {s['batch_size']} x seq {s['seq_len']}, "
        f"{s['device']} {s['dtype']}, {s['rounds']} timed rounds",
        f"machine: {m['cpu_model']} ({m['logical_cpus']} logical CPUs, {m['torch_threads']} torch threads)"
        f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}; torch {m['torch']}; {m['date_utc']}",
        "",
        markdown_table(result),
        "",
    ]
    for name, effect in (result.get("ift_optimisations") or {}).items():
        lines.append(
            f"{name} (before) / ift (after): step time {_x(effect['step_time_before_over_after'])}x, "
            f"peak memory {_x(effect['peak_memory_before_over_after'])}x, step peak "
            f"{_x(effect['step_peak_memory_before_over_after'])}x, pass-1 peak "
            f"{_x(effect['pass1_peak_memory_before_over_after'])}x; first-step losses differ by "
            f"{effect['first_loss_abs_diff']:.2e} (agree: {effect['losses_agree']}, gradient norms agree: "
            f"{effect['grad_norms_agree']})"
        )
    for key, target in (result.get("targets") or {}).items():
        lines.append(
            f"target {key}: {_x(target['value'])} <= {target['target']:.2f}: "
            f"{'met' if target['met'] else 'NOT met'}"
        )
    return "\n".join(lines)
