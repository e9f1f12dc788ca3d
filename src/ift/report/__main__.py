"""``python -m ift.report``: the paper's tables, summary metrics, plots and index from the evaluations.

    python -m ift.report                                   # the pipeline's stage (params.yaml grid, all required)
    python -m ift.report require_complete=false paths.evals=<multirun evals dir>   # whatever exists
    python -m ift.report update_readme=true                # also refresh README's Results section
    python -m ift.report with_published=true               # the paper's published numbers under our rows
    python -m ift.report paper_full=true paths.report=report/paper_full   # the opt-in grid (paper_full/dvc.yaml)
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ift.grid import load_grid
from ift.paths import CONF_DIR
from ift.report.build import build_report, log_to_wandb, update_readme
from ift.report.published import DEFAULT_FILE as DEFAULT_PUBLISHED_FILE


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    began = time.time()
    grid = load_grid(Path(cfg.params_file), paper_full=bool(cfg.paper_full))
    evals, runs = [Path(cfg.paths.evals)], [Path(cfg.paths.runs)]
    if cfg.paper_full:  # its own cells are apart; the start points and the default grid's cells are the pipeline's
        evals.append(Path(cfg.paths.paper_full) / "evals")
        runs.append(Path(cfg.paths.paper_full) / "runs")
    if cfg.profile is None:  # the pipeline's own profile (a Hydra override `profile=` would name the config group)
        OmegaConf.update(cfg, "profile", grid.profile)
    with_published = cfg.profile == "paper" if cfg.with_published is None else bool(cfg.with_published)
    published_file = Path(cfg.published_file) if cfg.published_file else DEFAULT_PUBLISHED_FILE
    result = build_report(evals_dir=evals, runs_dir=runs,
                          out_dir=Path(cfg.paths.report), methods=grid.methods, starts=grid.starts, seeds=grid.seeds,
                          profile=str(cfg.profile), require_complete=bool(cfg.require_complete),
                          published_file=published_file if with_published else None, base_only=grid.base_only,
                          compare_file=published_file, bench_file=Path(cfg.bench_file) if cfg.bench_file else None,
                          chains=grid.chains,
                          baseline_claims=Path(cfg.baseline_claims) if cfg.baseline_claims else None,
                          frozen_lake_study_file=Path(cfg.frozen_lake_study_file))
    if cfg.update_readme:
        changed = update_readme(Path(cfg.paths.readme), Path(cfg.paths.report))
        print(f"[report] README Results section {'updated' if changed else 'already current'}")
    log_to_wandb(result, cfg.logger, str(cfg.profile), cfg)
    print(f"[report] report done in {time.time() - began:.1f} s: {len(result['files'])} files written to "
          f"{cfg.paths.report}" + (f"; {len(result['missing'])} evaluations missing" if result["missing"] else ""))


if __name__ == "__main__":
    main()
