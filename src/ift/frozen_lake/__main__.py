"""`python -m ift.frozen_lake`: run the Frozen Lake experiment and write its report (conf/frozen_lake.yaml).

Examples: `python -m ift.frozen_lake`, `python -m ift.frozen_lake seeds=10 train.steps=500`,
`python -m ift.frozen_lake methods=[sft,ift] paths.report=/tmp/report`.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ift.frozen_lake.experiment import config_from_dict, run_experiment
from ift.frozen_lake.report import summarize, write_report
from ift.paths import CONF_DIR


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="frozen_lake")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(1)  # tiny full-batch updates: threads only add overhead (and share 2 cores)
    config = config_from_dict(OmegaConf.to_container(cfg, resolve=True))
    result = run_experiment(config)
    written = write_report(result, cfg.paths.report, cfg.paths.plots)
    print(f"frozen lake: {config.seeds} seeds x {len(config.methods)} methods in {result.seconds:.1f} s")
    for row in summarize(result):
        print(f"  {row['method']:<8} policy MSE {row['policy_mse_mean']:.4f} ± {row['policy_mse_std']:.4f}"
              f"  parameter MSE {row['param_mse_mean']:.5f}  optimal path {row['follows_optimal_path']}/{row['seeds']}")
    for path in written.values():
        print(f"  -> {path}")


if __name__ == "__main__":
    main()
