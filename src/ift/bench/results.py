"""The benchmark's results: ratios to SFT, the optimisations' effects, results.json and the markdown table."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.bench.measure import gpu_peak_flops
from ift.bench.settings import (
    BASELINE,
    FLOORS,
    LEAN,
    LEAN_TARGETS,
    SCHEMA_VERSION,
    STEP_DEFINITION,
    VARIANTS,
    MethodResult,
)


def assemble(
    settings: Mapping,
    machine: Mapping,
    n_params: int,
    flops_per_token: int,
    results: Mapping[str, MethodResult],
    *,
    matmul_peak_flops: float | None = None,
) -> dict[str, Any]:
    """The JSON-ready result of one shape: settings, machine, per-method numbers, ratios to SFT and to sft_lean (and
    to each method's floor), MFU, target checks.

    MFU: model FLOP/s (TRL's training FLOPs per token x tokens/s) over the peak: the GPU's bf16 peak on CUDA, else
    ``matmul_peak_flops``, the dense matmul rate measured in the same run. The model-FLOPs count is per token the
    method trains on, so extra no-gradient passes (IFT's pass 1, DPO's reference) lower a method's MFU."""

    methods = {name: r.summary() for name, r in results.items()}
    gpu_peak = gpu_peak_flops(settings)
    peak_flops = gpu_peak or matmul_peak_flops
    for summary in methods.values():
        summary["model_tflops_per_s"] = summary["tokens_per_s"] * flops_per_token / 1e12
        summary["mfu"] = (summary["tokens_per_s"] * flops_per_token / peak_flops) if peak_flops else None
    base = methods[BASELINE]

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    def paired(name, reference=BASELINE):  # median over rounds of (this method's step / the reference's, same round)
        pairs = [t / b for t, b in zip(methods[name]["step_times_s"], methods[reference]["step_times_s"]) if b > 0]
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
        "peak_flops": peak_flops,
        "peak_flops_source": ("GPU bf16 peak" if gpu_peak else
                              "dense matmul at the model's width, measured in this run" if peak_flops else None),
    }
    if LEAN in methods:
        lean = methods[LEAN]
        out["ratios_to_sft_lean"] = {}
        for name, m in methods.items():
            time_paired = paired(name, LEAN)
            out["ratios_to_sft_lean"][name] = {
                "step_time": ratio(m["median_step_s"], lean["median_step_s"]),
                "step_time_paired": time_paired,
                "peak_memory": ratio(m["peak_bytes"], lean["peak_bytes"]),
                "floor": FLOORS.get(name),
                "step_time_over_floor": ratio(time_paired, FLOORS.get(name)),
            }
        out["targets_vs_sft_lean"] = {}
        for name, (time_target, memory_target, against) in LEAN_TARGETS.items():
            if name not in methods:
                continue
            lean_ratios = out["ratios_to_sft_lean"][name]
            time_value = lean_ratios["step_time_paired" if against == "lean" else "step_time_over_floor"]
            out["targets_vs_sft_lean"][name] = {
                "step_time": {"value": time_value, "target": time_target, "of": against,
                              "met": time_value is not None and time_value <= time_target},
                "peak_memory": {"value": lean_ratios["peak_memory"], "target": memory_target,
                                "met": lean_ratios["peak_memory"] is not None
                                and lean_ratios["peak_memory"] <= memory_target},
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
    lean = result.get("ratios_to_sft_lean")
    if lean:
        head += ["time / sft_lean (paired)", "peak mem / sft_lean", "floor", "time / floor"]
    if gpu or result.get("peak_flops"):
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
        if lean:
            lr = lean[name]
            cells += [_x(lr["step_time_paired"]), _x(lr["peak_memory"]),
                      "-" if lr["floor"] is None else f"{lr['floor']:.2f}", _x(lr["step_time_over_floor"])]
        if gpu or result.get("peak_flops"):
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
    if result.get("peak_flops"):
        lines.append(f"MFU against {result['peak_flops'] / 1e9:,.1f} GFLOP/s ({result['peak_flops_source']})")
    for name, target in (result.get("targets_vs_sft_lean") or {}).items():
        for key, check in target.items():
            lines.append(
                f"target {name} {key} / {'sft_lean' if key == 'peak_memory' or check.get('of') == 'lean' else 'floor'}"
                f": {_x(check['value'])} <= {check['target']:.2f}: {'met' if check['met'] else 'NOT met'}"
            )
    for key, target in (result.get("targets") or {}).items():
        lines.append(
            f"target {key}: {_x(target['value'])} <= {target['target']:.2f}: "
            f"{'met' if target['met'] else 'NOT met'}"
        )
    return "\n".join(lines)
