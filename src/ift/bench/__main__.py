"""``python -m ift.bench``: step time and peak memory of every method side by side (conf/bench.yaml).

Examples: ``python -m ift.bench`` (shape=small), ``python -m ift.bench shape=tiny``,
``python -m ift.bench shape=small batch_size=4 rounds=5 methods=[sft,ift,ift_plain]``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ift.paths import CONF_DIR


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    from ift.bench import report, run_benchmark, write_results

    result = run_benchmark(cfg)
    path = write_results(result, cfg.out)
    print()
    print(report(result))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
