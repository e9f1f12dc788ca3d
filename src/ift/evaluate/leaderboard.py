"""The Open LLM Leaderboard tasks through ``lm_eval.simple_evaluate``, and the ``leaderboard.json`` they become.

Each task's ``chat_template`` (the suite's, unless the task sets its own) decides its prompt format: true puts the
prompt in the model's chat template with the few-shot examples as turns (``apply_chat_template=True,
fewshot_as_multiturn=True``; suite=toy, whose tiny chat models answer only in that format, and suite=openllm, as the
paper's chat-template evaluation), false sends plain text, as the Open LLM Leaderboard (v1) itself did (toy
WinoGrande, a sentence that lm-eval splits at the blank, whose halves a chat template would put in different
turns). Which tasks run, with how many shots, is the suite's business (:mod:`ift.evaluate.suites`).

``leaderboard.json`` (read by the report stage; keep it stable)::

    {
      "suite": "toy" | "openllm",
      "model_dir": str,
      "tasks": {                      # always these six keys
        "arc":            {"metric": "acc_norm",    "value": float, "stderr": float | null, "n": int,
                           "num_fewshot": int, "chat_template": bool, "lm_eval_task": str, "filter": "none"},
        "arc_gen":        {"metric": "exact_match", ..., "filter": "letter"},
        "mmlu":           {"metric": "acc", ...},
        "truthfulqa_mc2": {"metric": "acc", ...},
        "winogrande":     {"metric": "acc", ...},
        "gsm8k":          {"metric": "exact_match", ..., "filter": "strict-match"}
      },
      "avg": float,                   # mean of the five values other than arc_gen (the paper's Avg)
      "truncated_requests": {"loglikelihood": int, "generate_until": int},  # prompts cut to fit the window
      "lm_eval": {...},               # lm-eval's own results dict, JSON-safe (per-sample logs left out)
      "seconds": float                # wall time of the lm-eval runs
    }

Values are fractions in [0, 1] as lm-eval reports them (the paper's tables show percentages). ``stderr`` is
lm-eval's standard error (null where lm-eval reports none); ``n`` is the number of evaluated test items (for a
group such as MMLU, the sum over its subtasks). A nonzero ``truncated_requests`` means some prompt did not fit the
model's context window and lm-eval cut it from the left: the shot counts are then too high for the model.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ift.evaluate.suites import Suite, TaskSpec, evaluation_calls, task_manager
from ift.numerics import describe


def make_lm(model, tokenizer, *, batch_size: int | str, max_length: int | None = None):
    """lm-eval's Hugging Face LM around an already loaded model, counting prompts that overflow its window."""
    from lm_eval.models.huggingface import HFLM

    class CheckedHFLM(HFLM):
        """HFLM that counts requests longer than the model's window.

        lm-eval cuts such prompts from the left (log-likelihood requests silently), which would quietly drop
        few-shot turns or the question itself; the counts end up in leaderboard.json."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.truncated = {"loglikelihood": 0, "generate_until": 0}

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
            limit = self.max_length + 1  # HFLM keeps the last max_length + 1 tokens of context + continuation
            self.truncated["loglikelihood"] += sum(len(ctx) + len(cont) > limit for _, ctx, cont in requests)
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

        def tok_batch_encode(self, strings, padding_side="left", left_truncate_len=None, truncation=False):
            if left_truncate_len:
                _, mask = super().tok_batch_encode(strings, padding_side=padding_side, truncation=truncation)
                self.truncated["generate_until"] += int((mask.sum(dim=1) > left_truncate_len).sum())
            return super().tok_batch_encode(strings, padding_side=padding_side,
                                            left_truncate_len=left_truncate_len, truncation=truncation)

    kwargs: dict[str, Any] = {"pretrained": model, "tokenizer": tokenizer, "batch_size": batch_size}
    if max_length:
        kwargs["max_length"] = int(max_length)
    with _without_log_records("lm_eval.models.huggingface", PASSED_MODEL_WARNINGS):
        return CheckedHFLM(**kwargs)


# What lm-eval logs whenever it is handed a loaded model, which is how this project always calls it (one process,
# the model loaded and checked by ift.checkpoints; distributed evaluation goes through lm_eval_command instead).
PASSED_MODEL_WARNINGS = ("`pretrained` model kwarg is not of type `str`",
                         "Passed an already-initialized model through `pretrained`")


@contextmanager
def _without_log_records(logger_name: str, prefixes: tuple[str, ...]) -> Iterator[None]:
    """While active, drop the named logger's records whose message starts with one of ``prefixes``."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefixes)

    logger = logging.getLogger(logger_name)
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(value) for value in obj]
    return obj


def json_safe(obj: Any) -> Any:
    """lm-eval's results as strict JSON: numpy scalars, dtypes and functions become numbers or strings, and
    NaN / infinity (not JSON) become null."""
    from lm_eval.utils import handle_non_serializable

    def default(value):
        converted = handle_non_serializable(value)
        return converted if isinstance(converted, (int, float, str, list)) else str(converted)

    return _finite_or_none(json.loads(json.dumps(obj, default=default)))


def merge_results(parts: list[dict]) -> dict:
    """One lm-eval results dict from several ``simple_evaluate`` calls (one per shot count, registry suite)."""
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged.setdefault(key, value)
    return merged


@contextmanager
def compiled_templates_cached() -> Iterator[None]:
    """Speed only: while active, lm-eval compiles each Jinja prompt template once instead of once per document.

    ``lm_eval.utils.apply_template`` calls ``env.from_string`` for every field of every document and few-shot
    example (~10k compilations in a toy run, about half of its CPU time on a tiny model). Rendering is
    unchanged: the same environment compiles the same source, only the compiled template is reused."""
    import lm_eval.utils

    original = lm_eval.utils.apply_template
    compile_once = functools.lru_cache(maxsize=1024)(lm_eval.utils.env.from_string)

    def apply_template(template: str, doc: dict) -> str:
        return compile_once(template).render(**doc)

    lm_eval.utils.apply_template = apply_template
    try:
        yield
    finally:
        lm_eval.utils.apply_template = original


def run_lm_eval(lm, calls: list[tuple[int | None, bool, list[str]]], manager, *, log_samples: bool = False,
                bootstrap_iters: int = 100000) -> list[dict] | None:
    """lm-eval's results dict of each ``(num_fewshot, chat_template, task names)`` call (:func:`evaluation_calls`),
    each call in its own prompt format; None on a non-zero rank of a distributed run (rank 0 writes the results)."""
    import lm_eval

    parts = []
    for num_fewshot, chat_template, names in calls:
        with compiled_templates_cached():
            result = lm_eval.simple_evaluate(
                model=lm,
                tasks=names,
                num_fewshot=num_fewshot,
                task_manager=manager,
                apply_chat_template=chat_template,
                fewshot_as_multiturn=chat_template,
                log_samples=log_samples,
                bootstrap_iters=bootstrap_iters,
            )
        if result is None:
            return None
        parts.append(result)
    return parts


def split_generation_calls(calls: list[tuple[int | None, bool, list[str]]], manager) -> tuple[list, list]:
    """The calls split into (log-likelihood tasks, generation tasks), each keeping its prompt format.

    A task goes to the second list when its lm-eval config (the manager's index, includes resolved, no data loaded)
    says ``output_type: generate_until``; groups, tags and anything else stay in the first. lm-eval batches
    log-likelihood and generation requests separately, so the split changes no batch and no number."""
    likelihood, generation = [], []
    for num_fewshot, chat_template, names in calls:
        entries = [manager.task_index.get(name) for name in names]
        generates = [getattr(entry, "cfg", None) is not None and entry.cfg.get("output_type") == "generate_until"
                     for entry in entries]
        for target, keep in ((likelihood, False), (generation, True)):
            chosen = [name for name, flag in zip(names, generates) if flag is keep]
            if chosen:
                target.append((num_fewshot, chat_template, chosen))
    return likelihood, generation


def _number(value: Any) -> float | None:
    """A finite float, or None for lm-eval's "N/A" / NaN placeholders."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _leaf_tasks(results: Mapping[str, Any], name: str) -> list[str]:
    """The leaf tasks under ``name`` (itself when it is a task, its subtasks recursively when a group)."""
    subtasks = results.get("group_subtasks", {}).get(name)
    if not subtasks:
        return [name]
    return [leaf for sub in subtasks for leaf in _leaf_tasks(results, sub)]


def _n_items(results: Mapping[str, Any], name: str) -> int:
    samples = results.get("n-samples", {})
    return sum(int(samples[leaf]["effective"]) for leaf in _leaf_tasks(results, name) if leaf in samples)


def _metric_row(results: Mapping[str, Any], name: str, spec: TaskSpec) -> tuple[float, float | None]:
    """(value, stderr) of the spec's metric for the task or group ``name``, refusing a missing or non-number value."""
    row = results.get("results", {}).get(name) or results.get("groups", {}).get(name)
    if row is None or spec.result_key not in row:
        available = sorted(k for k in (row or {}) if "," in k and "_stderr" not in k)
        raise KeyError(f"lm-eval reported no {spec.result_key!r} for {name!r} (has: {available})")
    value = _number(row[spec.result_key])
    if value is None:
        raise ValueError(f"lm-eval reported {row[spec.result_key]!r} for {name} {spec.result_key}")
    return value, _number(row.get(f"{spec.metric}_stderr,{spec.filter}"))


def _subtask_mean(results: Mapping[str, Any], spec: TaskSpec) -> tuple[float, float | None]:
    """Unweighted mean over a group's leaf tasks (the Open LLM Leaderboard v1's MMLU: the mean of 57 subjects), with
    the stderr of a mean of independent estimates, sqrt(sum se^2) / k (None if a leaf has none)."""
    leaves = _leaf_tasks(results, spec.lm_eval_task)
    rows = [_metric_row(results, leaf, spec) for leaf in leaves]
    errors = [stderr for _, stderr in rows]
    stderr = math.sqrt(sum(e * e for e in errors)) / len(rows) if None not in errors else None
    return sum(value for value, _ in rows) / len(rows), stderr


def headline(results: Mapping[str, Any], spec: TaskSpec) -> dict[str, Any]:
    """The task's row of leaderboard.json, read from lm-eval's results (tasks and groups alike)."""
    if spec.subtask_mean:
        value, stderr = _subtask_mean(results, spec)
    else:
        value, stderr = _metric_row(results, spec.lm_eval_task, spec)
    shots = results.get("n-shot", {}).get(spec.lm_eval_task, spec.num_fewshot)
    return {
        "metric": spec.metric,
        "filter": spec.filter,
        "lm_eval_task": spec.lm_eval_task,
        "value": value,
        "stderr": stderr,
        "n": _n_items(results, spec.lm_eval_task),
        "num_fewshot": int(shots),
        "chat_template": spec.chat_template,
    }


def summarize(results: Mapping[str, Any], suite: Suite) -> dict[str, Any]:
    """The flat table of leaderboard.json: one headline row per task and the paper's average."""
    tasks = {spec.key: headline(results, spec) for spec in suite.tasks}
    average = [tasks[key]["value"] for key in suite.average]
    return {"tasks": tasks, "avg": sum(average) / len(average)}


def leaderboard_record(parts: list[dict], suite: Suite, *, model_dir: str, truncated: Mapping[str, int],
                       seconds: float) -> tuple[dict, dict | None]:
    """(leaderboard.json content, lm-eval's per-sample logs or None) from the results of the suite's calls."""
    results = merge_results(parts)
    samples = results.pop("samples", None)
    record = {
        "suite": suite.name,
        "model_dir": str(model_dir),
        **summarize(results, suite),
        "truncated_requests": dict(truncated),
        "lm_eval": json_safe(results),
        "seconds": round(seconds, 2),
        "numerics": describe(),  # the CPU and kernels these numbers came from (ift.numerics)
    }
    return record, (json_safe(samples) if samples is not None else None)


def evaluate_leaderboard(lm, suite: Suite, work_dir: Path, *, model_dir: str, log_samples: bool = False,
                         bootstrap_iters: int = 100000) -> tuple[dict, dict | None]:
    """(leaderboard.json content, lm-eval's per-sample logs or None). Writes nothing outside ``work_dir``."""
    start = time.perf_counter()
    parts = run_lm_eval(lm, evaluation_calls(suite), task_manager(suite, work_dir), log_samples=log_samples,
                        bootstrap_iters=bootstrap_iters)
    if parts is None:
        return {}, None
    return leaderboard_record(parts, suite, model_dir=model_dir, truncated=getattr(lm, "truncated", {}),
                              seconds=time.perf_counter() - start)
