"""``python -m ift.selection``: the paper's checkpoint selection (``best_avg``), as an option beside our tables.

The paper saved checkpoints during training and reported, for each method, the checkpoint with the best average
benchmark score: selection on the evaluation set. Our tables report every run's final weights (``eval.select:
final``, the honest number). This stage measures what the paper's choice would change: for each run a table averages
over (chain 0's seed 0 and each chain's seed-c cell), it

1. retrains the run with the same config and seed, saving snapshots at ``eval.select_fractions`` of its steps (the
   last half's steps for SFT+DPO), and checks that the retrained final weights are byte-identical to the committed
   run's (else the snapshots would belong to another run, and it stops);
2. evaluates every snapshot and the final weights on the leaderboard tasks, and keeps the one with the best Avg
   (ties: the later step, so the final weights win a tie);
3. runs AlpacaEval on the kept one, and writes ``outputs/selection/evals/<run>/``: its ``leaderboard.json`` and
   ``alpaca.json`` (what the report reads) and ``selection.json`` (every step's Avg, the kept step).

Start points have no snapshots: their evaluations are copied. Then ``python -m ift.report`` writes
``report/selection/`` from these, with ``claims_change.md``: each claim's verdict under final and under best_avg.

    dvc repro selection/dvc.yaml          # not part of `dvc repro`: ~50 min on 2 CPU cores (docs/evaluation.md)
    python -m ift.selection                # the same, outside DVC

Each retrain runs in a spawned process (see ``_retrain``); one device: the snapshots are the model's own weights (a
sharded model is not supported here).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.io import write_json_atomic, write_text_atomic


class SelectionError(RuntimeError):
    """The selection cannot stand for the committed run (a retrain that differs, a missing evaluation)."""


def snapshot_steps(max_steps: int, fractions: Sequence[float]) -> list[int]:
    """The steps to snapshot: each fraction of ``max_steps``, rounded, at least 1, without the last step (the
    final weights are the run itself) and without repeats."""
    for fraction in fractions:
        if not 0 < float(fraction) < 1:
            raise ValueError(f"eval.select_fractions: each fraction must be in (0, 1), got {fraction!r}")
    return sorted({max(1, round(float(f) * max_steps)) for f in fractions} - {max_steps})


def choose(avgs: Mapping[int, float]) -> int:
    """The step with the best Avg; a tie goes to the later step (the final weights win a tie)."""
    if not avgs:
        raise SelectionError("no evaluated checkpoint to choose from")
    return max(avgs, key=lambda step: (avgs[step], step))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot_callback(directory: Path, fractions: Sequence[float], tokenizer):
    """A TrainerCallback that writes the model (and tokenizer) to ``directory/step-<N>`` at the snapshot steps."""
    from transformers import TrainerCallback

    from ift.checkpoints import write_checkpoint

    class Snapshots(TrainerCallback):
        steps: list[int] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.steps = snapshot_steps(int(state.max_steps), fractions)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step in self.steps and state.is_world_process_zero:
                target = directory / f"step-{state.global_step}"
                target.mkdir(parents=True, exist_ok=True)
                write_checkpoint(model, tokenizer, target)

    return Snapshots()


def table_runs(grid) -> list[tuple[str, str, int, int]]:
    """(method, start, seed, chain) of every run the tables average over (ift.grid.replicates)."""
    from ift.grid import methods_at, replicates

    return [(method, start, seed, chain) for start in grid.starts
            for method in methods_at(start, grid.methods, grid.base_only)
            for chain, seed, _ in replicates(method, grid.seeds, grid.chains)]


def _retrain(cfg_container: dict, work: str, fractions: list[float], tokenizer_dir: str) -> None:
    """The retrain with snapshots, in a fresh process: torch's thread pools as in ``python -m ift.train`` (an
    evaluation in the selecting process sets ``eval.threads``, and even setting the same count back gives MKL another
    split of the GEMMs, hence other weights: measured)."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from ift.train.cell import run_training

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    run_training(OmegaConf.create(cfg_container), run_dir=Path(work) / "final", work_dir=Path(work) / "train",
                 callbacks=[snapshot_callback(Path(work) / "snapshots", fractions, tokenizer)])


def select_run(*, method: str, start: str, seed: int, chain: int, profile: str, root_cfg, work: Path, out: Path,
               fractions: Sequence[float], suite, judge_cfg, eval_cfg) -> dict:
    """Retrain one run with snapshots, evaluate them, keep the best by Avg; write ``out`` (see module doc)."""
    import multiprocessing

    from hydra import compose
    from omegaconf import OmegaConf

    from ift.evaluate.checkpoint_eval import evaluate_checkpoint
    from ift.grid import eval_name

    name = eval_name(start, method, seed, chain)
    committed = Path(root_cfg.paths.runs) / name
    if not (committed / "model.safetensors").is_file():
        raise SelectionError(f"{committed}: no trained run to select from; run `dvc repro` first")
    overrides = [f"profile={profile}", f"method={method}", f"start={start}", f"seed={seed}", "logger=none",
                 f"paths.root={root_cfg.paths.root}"]
    cfg = compose(config_name="config", overrides=overrides + ([f"+chain={chain}"] if chain else []))
    shutil.rmtree(work, ignore_errors=True)
    snapshots = work / "snapshots"
    process = multiprocessing.get_context("spawn").Process(
        target=_retrain, args=(OmegaConf.to_container(cfg, resolve=True), str(work), [float(f) for f in fractions],
                               str(committed)))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SelectionError(f"{name}: the retrain with snapshots failed (exit code {process.exitcode}; its error is "
                             "printed above)")
    if _sha256(work / "final" / "model.safetensors") != _sha256(committed / "model.safetensors"):
        raise SelectionError(f"{name}: the retrained final weights differ from {committed}/model.safetensors, so its "
                             "snapshots belong to another run (changed code, config or CPU numerics since it was "
                             "trained); run `dvc repro` first")
    checkpoints = {int(p.name.split("-")[1]): p for p in snapshots.glob("step-*")}
    final_step = int(json.loads((work / "final" / "train_metrics.json").read_text())["steps"])
    checkpoints[final_step] = work / "final"
    avgs = {}
    for step, directory in sorted(checkpoints.items()):
        record = evaluate_checkpoint(model_dir=str(directory), out=work / "evals" / f"step-{step}",
                                     evals=["leaderboard"], suite=suite, eval_cfg=eval_cfg)["leaderboard"]
        avgs[step] = float(record["avg"])
    chosen = choose(avgs)
    evaluate_checkpoint(model_dir=str(checkpoints[chosen]), out=work / "evals" / f"step-{chosen}", evals=["alpaca"],
                        judge_cfg=judge_cfg, eval_cfg=eval_cfg)
    out.mkdir(parents=True, exist_ok=True)
    for filename in ("leaderboard.json", "alpaca.json"):
        shutil.copyfile(work / "evals" / f"step-{chosen}" / filename, out / filename)
    summary = {"run": name, "fractions": [float(f) for f in fractions], "final_step": final_step,
               "chosen_step": chosen, "chosen_is_final": chosen == final_step,
               "avg_by_step": {str(step): avgs[step] for step in sorted(avgs)},
               "final_weights_sha256": _sha256(committed / "model.safetensors")}
    write_json_atomic(out / "selection.json", summary)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def copy_start_point(evals_dir: Path, out_dir: Path, name: str) -> None:
    """A start point has no snapshots: its own evaluation is its selection."""
    for filename in ("leaderboard.json", "alpaca.json"):
        source = evals_dir / name / filename
        if not source.is_file():
            raise SelectionError(f"{source}: missing start-point evaluation; run `dvc repro` first")
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out_dir / name / filename)


def grid_file_text(grid) -> str:
    """The grid the selection's report tabulates (its params_file): the tables' replicates only, so seeds [0]."""
    import yaml

    return yaml.safe_dump({"profile": grid.profile, "methods": grid.methods, "base_only_methods": grid.base_only,
                           "starts": grid.starts, "seeds": [0] if grid.chains else grid.seeds,
                           "chains": grid.chains}, sort_keys=False)


def run(cfg) -> None:
    """Every table run of params.yaml's grid (see module doc), then the grid file for the report."""
    from omegaconf import OmegaConf

    from ift.evaluate.suites import suite_from_config
    from ift.grid import eval_name, load_grid

    grid = load_grid(Path(cfg.paths.root) / "params.yaml")
    fractions = list(cfg.eval.select_fractions)
    snapshot_steps(100, fractions)  # bad fractions fail before anything trains
    out_dir = Path(cfg.paths.outputs) / "selection" / "evals"
    evals_dir = Path(cfg.paths.outputs) / "evals"
    suite = suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True))
    judge_cfg = OmegaConf.to_container(cfg.judge, resolve=True)
    # each snapshot is evaluated as a final checkpoint; one lane (no fork after training in this process): same numbers
    eval_cfg = {**OmegaConf.to_container(cfg.eval, resolve=True), "parallel": False, "select": "final"}
    for start in grid.starts:
        for chain in (0, *grid.chains):
            copy_start_point(evals_dir, out_dir, eval_name(start, None, None, chain))
    runs = table_runs(grid)
    began = time.time()
    for index, (method, start, seed, chain) in enumerate(runs, 1):
        name = eval_name(start, method, seed, chain)
        summary = select_run(method=method, start=start, seed=seed, chain=chain, profile=grid.profile, root_cfg=cfg,
                             work=Path(cfg.paths.outputs) / "selection" / "work" / name, out=out_dir / name,
                             fractions=fractions, suite=suite, judge_cfg=judge_cfg, eval_cfg=eval_cfg)
        avgs = ", ".join(f"{step}: {100 * avg:.1f}" for step, avg in summary["avg_by_step"].items())
        print(f"[selection] {index}/{len(runs)} {name}: Avg by step {{{avgs}}} -> step {summary['chosen_step']}"
              f"{' (final)' if summary['chosen_is_final'] else ''} [{time.time() - began:.0f} s]", flush=True)
    write_text_atomic(Path(cfg.paths.outputs) / "selection" / "grid.yaml", grid_file_text(grid))


def main() -> None:
    import hydra

    from ift.paths import CONF_DIR

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _app(cfg) -> None:
        began = time.time()
        run(cfg)
        print(f"[selection] done in {time.time() - began:.1f} s")

    _app()


if __name__ == "__main__":
    main()
