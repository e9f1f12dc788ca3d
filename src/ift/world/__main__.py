"""`python -m ift.world`: generate the miniature world from the Hydra config (`data.world` -> `paths.world`).

Examples: `python -m ift.world`, `python -m ift.world profile=smoke`, `python -m ift.world data.world.seed=7`.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig, OmegaConf

from ift.paths import CONF_DIR
from ift.world.build import generate_world


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    started = time.perf_counter()
    world_cfg = OmegaConf.to_container(cfg.data.world, resolve=True)
    manifest = generate_world(world_cfg, cfg.paths.world)
    seconds = time.perf_counter() - started
    version, seed = manifest["world_version"], manifest["seed"]
    print(f"world v{version} (seed {seed}) -> {cfg.paths.world} ({seconds:.1f} s)")
    print(f"  corpus tokens: {manifest['corpus_tokens']}, vocab: {manifest['vocab_size']}")
    for path, count in manifest["counts"].items():
        longest = manifest["max_tokens"].get(path)
        print(f"  {path:<34} {count:>6}" + (f"  (longest {longest} tokens)" if longest else ""))


if __name__ == "__main__":
    main()
