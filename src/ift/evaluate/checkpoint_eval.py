"""``python -m ift.evaluate``: evaluate one checkpoint on the leaderboard tasks and/or AlpacaEval.

    python -m ift.evaluate model_dir=outputs/runs/ift-base-s0 out=outputs/eval/ift-base-s0
    python -m ift.evaluate model_dir=outputs/models/sft_beta out=outputs/eval/sft_beta evals=[alpaca]
    python -m ift.evaluate profile=paper model_dir=... out=...      # suite=openllm judge=alpaca_eval_2

``model_dir`` is any checkpoint dir (a trained cell, a start point) or, in the paper profile, a hub id. ``out``
receives ``leaderboard.json`` (:mod:`ift.evaluate.leaderboard` documents it) and ``alpaca.json`` +
``alpaca_annotations.json`` (:mod:`ift.evaluate.alpaca_eval`). Each result file is written atomically once its
evaluation has finished, and the files of the evaluations being run are removed first, so an interrupted run
never leaves a partial or stale result; lm-eval's rendered task files and alpaca-eval's annotator config live in
a temporary directory outside ``out``. ``python -m ift.evaluate.lm_eval_command`` (same arguments) writes those task
files and the ``lm_eval`` command lines that rerun the leaderboard evaluation with lm-eval's own CLI
(:mod:`ift.evaluate.lm_eval_command`).

On CPU with ``eval.parallel=true`` (the default) the work runs in two processes: this one scores the leaderboard's
log-likelihood tasks while a forked copy (:mod:`ift.evaluate.forked`) runs its generation tasks and then AlpacaEval.
The lm-eval calls and batches are the ones a single process makes, so the numbers are identical (tested); on 2
cores a tiny checkpoint's evaluation goes from ~22 s to ~17 s.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.io import write_json_atomic

EVALS = ("leaderboard", "alpaca")
RESULT_FILES = {
    "leaderboard": ("leaderboard.json", "lm_eval_samples.json"),
    "alpaca": ("alpaca.json", "alpaca_annotations.json"),
}


class EvaluationConfigError(ValueError):
    """The evaluation cannot start: a missing or bad argument, world file or judge input."""


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise EvaluationConfigError(f"eval.dtype={name!r}: expected auto, float32, bfloat16 or float16") from None


def check_arguments(model_dir: str | None, out: str | None, evals: Sequence[str]) -> list[str]:
    if not model_dir:
        raise EvaluationConfigError("model_dir is not set: python -m ift.evaluate model_dir=<checkpoint dir> out=<dir>")
    if not out:
        raise EvaluationConfigError("out is not set: python -m ift.evaluate model_dir=<checkpoint dir> out=<dir>")
    evals = list(evals)
    unknown = [e for e in evals if e not in EVALS]
    if unknown or not evals:
        raise EvaluationConfigError(f"evals={evals}: expected a non-empty subset of {list(EVALS)}")
    return evals


def _whole_number_at_least_1(value: Any) -> bool:
    if isinstance(value, str):
        return re.fullmatch(r"[1-9][0-9]*", value) is not None
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_eval_config(eval_cfg: Mapping[str, Any], evals: Sequence[str]) -> None:
    """The batch sizes of the evaluations to run, before any model loads: lm-eval's eval.batch_size (leaderboard) is
    a whole number >= 1, auto or auto:N (lm-eval's own forms); eval.generate_batch_size (alpaca) a whole number >= 1."""
    batch_size = eval_cfg.get("batch_size", 32)
    if "leaderboard" in evals and not (_whole_number_at_least_1(batch_size) or (
            isinstance(batch_size, str) and re.fullmatch(r"auto(:[1-9][0-9]*)?", batch_size))):
        raise EvaluationConfigError(f"eval.batch_size={batch_size!r}: expected a whole number >= 1, auto or auto:N")
    generate_batch_size = eval_cfg.get("generate_batch_size", 32)
    if "alpaca" in evals and not _whole_number_at_least_1(generate_batch_size):
        raise EvaluationConfigError(f"eval.generate_batch_size={generate_batch_size!r}: expected a whole number >= 1")


def check_judge_inputs(judge_cfg: Mapping[str, Any]) -> None:
    """Local judge inputs (the world's references and answer key) exist before any model is loaded."""
    for key in ("references", "answer_key"):
        value = judge_cfg.get(key)
        if isinstance(value, str) and not Path(value).is_file():
            raise EvaluationConfigError(f"judge.{key}: {value} not found; generate the world first "
                                        "(python -m ift.world)")


def remove_results(out: Path, evals: Sequence[str]) -> None:
    """Drop the result files of the evaluations about to run: none may outlive a failed re-run."""
    for name in evals:
        for filename in RESULT_FILES[name]:
            (out / filename).unlink(missing_ok=True)


def generator_name(model_dir: str) -> str:
    """The model's name in alpaca-eval's tables: the checkpoint dir's name (or the hub id's last part)."""
    return Path(str(model_dir).rstrip("/")).name or str(model_dir)


def evaluate_checkpoint(*, model_dir: str, out: str | Path, evals: Sequence[str], suite=None,
                        judge_cfg: Mapping[str, Any] | None = None, eval_cfg: Mapping[str, Any]) -> dict[str, dict]:
    """Run the requested evaluations of one checkpoint and write their result files into ``out``."""
    from ift.checkpoints import load_causal_lm, widen_tokenizer_window
    from ift.evaluate.suites import check_world_files

    evals = check_arguments(model_dir, str(out) if out else None, evals)
    check_eval_config(eval_cfg, evals)
    if "leaderboard" in evals and suite.source == "world":
        check_world_files(suite)
    if "alpaca" in evals:
        check_judge_inputs(judge_cfg)
    out = Path(out)
    if eval_cfg.get("threads"):
        import torch

        torch.set_num_threads(int(eval_cfg["threads"]))
    device = resolve_device(str(eval_cfg.get("device", "auto")))
    dtype = resolve_dtype(str(eval_cfg.get("dtype", "auto")), device)
    two_lanes = "leaderboard" in evals and _in_two_processes(eval_cfg, device)
    model, tokenizer = load_causal_lm(model_dir, what="model_dir", hint="pass any checkpoint dir: a run under "
                                      "outputs/runs/ or a start point under outputs/models/", dtype=dtype)
    model.to(device).eval()
    widen_tokenizer_window(model.config, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    remove_results(out, evals)
    records: dict[str, dict] = {}
    work_dir = make_work_dir()
    try:
        if two_lanes:
            records = _two_lanes(model, tokenizer, suite, judge_cfg, eval_cfg, work_dir, out, model_dir, evals)
        else:
            if "leaderboard" in evals:
                records["leaderboard"] = _leaderboard(model, tokenizer, suite, eval_cfg, work_dir, out, model_dir)
            if "alpaca" in evals:
                records["alpaca"] = _write_alpaca(out, *_alpaca(model, tokenizer, judge_cfg, eval_cfg, work_dir,
                                                                model_dir))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return records


WORK_DIR_NAME = re.compile(r"ift-eval-(?P<pid>[0-9]+)-[^-]+")  # ift-eval-<pid of its evaluation>-<mkdtemp's suffix>


def make_work_dir() -> Path:
    """The evaluation's temporary directory (lm-eval's task files, alpaca-eval's annotator config), named after
    this process: ``ift-eval-<pid>-XXXXXXXX`` in the temp dir. It is removed when the evaluation ends, but a killed
    evaluation leaves it behind; so first remove those of earlier evaluations whose process no longer runs."""
    remove_stale_work_dirs(Path(tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix=f"ift-eval-{os.getpid()}-"))


def remove_stale_work_dirs(temp_dir: Path) -> list[Path]:
    """Remove this user's ``ift-eval-<pid>-*`` directories whose pid no longer runs; returns them. A running
    evaluation's directory (its pid is alive, or not ours to signal) is kept, and so is one without a pid in its name
    (made before names had one): whose it is cannot be told."""
    removed = []
    for path in sorted(temp_dir.glob("ift-eval-*")):
        match = WORK_DIR_NAME.fullmatch(path.name)
        if not match or path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
            continue
        if _process_runs(int(match["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        print(f"[evaluate] removed {path}: left by an evaluation (pid {match['pid']}) that no longer runs")
        removed.append(path)
    return removed


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:  # no process's pid (os.kill would signal a process group)
        return False
    try:
        os.kill(pid, 0)  # signal 0: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _in_two_processes(eval_cfg: Mapping[str, Any], device: str) -> bool:
    """eval.parallel, which applies on CPU only (fork after CUDA is unsafe, and a GPU is better used by one)."""
    parallel = eval_cfg.get("parallel", False)
    if not isinstance(parallel, bool):
        raise EvaluationConfigError(f"eval.parallel={parallel!r}: expected true or false")
    return parallel and device == "cpu"


def _make_lm(model, tokenizer, eval_cfg):
    from ift.evaluate.leaderboard import make_lm

    return make_lm(model, tokenizer, batch_size=eval_cfg.get("batch_size", 32), max_length=eval_cfg.get("max_length"))


def _lm_eval_options(eval_cfg) -> dict[str, Any]:
    return {"log_samples": bool(eval_cfg.get("log_samples", False)),
            "bootstrap_iters": int(eval_cfg.get("bootstrap_iters", 100000))}


def _leaderboard(model, tokenizer, suite, eval_cfg, work_dir: Path, out: Path, model_dir: str) -> dict:
    from ift.evaluate.leaderboard import evaluate_leaderboard

    record, samples = evaluate_leaderboard(_make_lm(model, tokenizer, eval_cfg), suite, work_dir,
                                           model_dir=str(model_dir), **_lm_eval_options(eval_cfg))
    return _write_leaderboard(out, record, samples)


def _write_leaderboard(out: Path, record: dict, samples: dict | None) -> dict:
    if record:
        if samples is not None:
            write_json_atomic(out / RESULT_FILES["leaderboard"][1], samples)
        write_json_atomic(out / RESULT_FILES["leaderboard"][0], record)
    return record


def _alpaca(model, tokenizer, judge_cfg, eval_cfg, work_dir: Path, model_dir: str) -> tuple[dict, list]:
    from ift.evaluate.alpaca_eval import evaluate_alpaca

    return evaluate_alpaca(
        model, tokenizer, judge_cfg, work_dir, model_dir=str(model_dir), generator=generator_name(model_dir),
        max_new_tokens=int(eval_cfg["max_new_tokens"]), batch_size=int(eval_cfg.get("generate_batch_size", 32)),
    )


def _write_alpaca(out: Path, record: dict, annotations: list) -> dict:
    write_json_atomic(out / RESULT_FILES["alpaca"][1], annotations)  # first: alpaca.json implies it is complete
    write_json_atomic(out / RESULT_FILES["alpaca"][0], record)
    return record


def _two_lanes(model, tokenizer, suite, judge_cfg, eval_cfg, work_dir: Path, out: Path, model_dir: str,
               evals: Sequence[str]) -> dict[str, dict]:
    """eval.parallel on CPU: this process scores the leaderboard's log-likelihood tasks while a forked one generates
    (the leaderboard's generation tasks, then AlpacaEval). The calls and batches are those of one process, so the
    numbers are too; leaderboard.json is written once both halves are in, then alpaca.json."""
    from ift.evaluate.forked import ForkedGenerator
    from ift.evaluate.leaderboard import json_safe, leaderboard_record, run_lm_eval, split_generation_calls
    from ift.evaluate.suites import evaluation_calls, task_manager

    lm = _make_lm(model, tokenizer, eval_cfg)
    manager = task_manager(suite, work_dir)
    likelihood_calls, generation_calls = split_generation_calls(evaluation_calls(suite), manager)
    options = _lm_eval_options(eval_cfg)

    def generation_lane():
        parts = run_lm_eval(lm, generation_calls, manager, **options)
        yield json_safe(parts), dict(lm.truncated)  # JSON-safe: lm-eval's results may hold unpicklable objects
        if "alpaca" in evals:
            yield _alpaca(model, tokenizer, judge_cfg, eval_cfg, work_dir, model_dir)

    records: dict[str, dict] = {}
    start = time.perf_counter()
    with ForkedGenerator(generation_lane, name=f"generation lane of {model_dir}") as lane:
        parts = run_lm_eval(lm, likelihood_calls, manager, **options)
        generated, truncated = lane.next()
        truncated = {kind: lm.truncated[kind] + count for kind, count in truncated.items()}
        record, samples = leaderboard_record(parts + generated, suite, model_dir=str(model_dir), truncated=truncated,
                                             seconds=time.perf_counter() - start)
        records["leaderboard"] = _write_leaderboard(out, record, samples)
        if "alpaca" in evals:
            records["alpaca"] = _write_alpaca(out, *lane.next())
    return records


def report_line(records: Mapping[str, dict]) -> str:
    """A short human summary of what was written."""
    parts = []
    if "leaderboard" in records and records["leaderboard"]:
        board = records["leaderboard"]
        values = " ".join(f"{k}={v['value']:.3f}" for k, v in board["tasks"].items())
        parts.append(f"leaderboard ({board['suite']}): {values} avg={board['avg']:.3f} [{board['seconds']:.1f} s]")
    if "alpaca" in records:
        alpaca = records["alpaca"]
        lc = alpaca["lc_win_rate_minimal"]
        parts.append(f"alpaca ({alpaca['judge']}): win_rate={alpaca['win_rate']:.1f} +- {alpaca['standard_error']:.1f}"
                     f" lc_minimal={'n/a' if lc is None else f'{lc:.1f}'} n={alpaca['n']} [{alpaca['seconds']:.1f} s]")
    return "\n".join(parts)


def run_from_config(cfg) -> dict[str, dict]:
    """The Hydra app's body: plain values out of the config, then :func:`evaluate_checkpoint`."""
    from omegaconf import OmegaConf

    from ift.evaluate.suites import suite_from_config

    evals = check_arguments(cfg.get("model_dir"), cfg.get("out"), list(cfg.get("evals") or []))
    if cfg.eval.get("select", "final") != "final":
        raise EvaluationConfigError(f"eval.select={cfg.eval.select!r}: this evaluates the weights in model_dir "
                                    "(final); best_avg retrains the run with snapshots: python -m ift.selection "
                                    "(docs/evaluation.md)")
    suite = suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True)) if "leaderboard" in evals else None
    judge_cfg = OmegaConf.to_container(cfg.judge, resolve=True) if "alpaca" in evals else None
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    started = time.perf_counter()
    records = evaluate_checkpoint(model_dir=str(cfg.model_dir), out=str(cfg.out), evals=evals, suite=suite,
                                  judge_cfg=judge_cfg, eval_cfg=eval_cfg)
    print(report_line(records))
    from ift.tracking import configure_tracking, eval_metrics, eval_run, log_eval_run

    if configure_tracking(cfg.logger) == "wandb":
        log_eval_run(cfg.logger, eval_run(cfg), eval_metrics(records))
    print(f"[evaluate] {Path(str(cfg.out)).name} done in {time.perf_counter() - started:.1f} s: "
          f"{headline(records)}")
    return records


def headline(records: Mapping[str, dict]) -> str:
    """The end line's figures: the leaderboard's Avg and the AlpacaEval win rate (those that ran)."""
    parts = []
    if records.get("leaderboard"):
        parts.append(f"Avg {records['leaderboard']['avg']:.3f}")
    if records.get("alpaca"):
        parts.append(f"win rate {records['alpaca']['win_rate']:.1f}%")
    return ", ".join(parts) or "nothing evaluated"


def main() -> None:
    import hydra

    from ift.paths import CONF_DIR

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _app(cfg) -> None:
        run_from_config(cfg)

    _app()
