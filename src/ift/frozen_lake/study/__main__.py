"""`python -m ift.frozen_lake.study`: run the pre-declared Frozen Lake study and write its report
(conf/frozen_lake_study.yaml; DVC stage `frozen_lake_study`).

Examples: `python -m ift.frozen_lake.study`, `python -m ift.frozen_lake.study seeds=3 paths.report=/tmp/report`.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ift.frozen_lake.study.analysis import analyse
from ift.frozen_lake.study.report import summary_lines, write_report
from ift.frozen_lake.study.run import run_study, study_config_from_dict
from ift.paths import CONF_DIR


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="frozen_lake_study")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(1)  # small batched updates; one thread keeps the bytes independent of the core count
    config = study_config_from_dict(OmegaConf.to_container(cfg, resolve=True))
    result = run_study(config)
    analysis = analyse(result)
    written = write_report(result, analysis, cfg.paths.report, cfg.paths.plots)
    runs = sum(len(m.records) for m in result.maps)
    print(f"frozen lake study: {runs} runs on {len(result.maps)} maps, trained and checked in {result.seconds:.1f} s")
    for line in summary_lines(analysis, config):
        print(line)
    for path in written.values():
        print(f"  -> {path}")


if __name__ == "__main__":
    main()
