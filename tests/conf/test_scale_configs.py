"""Scale-out configs: accelerate configs parse, the SLURM launcher resolves, a multirun composes the right jobs."""

from __future__ import annotations

import pytest
import yaml

from conftest import CONF_DIR, compose


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_accelerate_configs_parse_and_use_bf16(name, kind):
    config = yaml.safe_load((CONF_DIR / "accelerate" / f"{name}.yaml").read_text())
    assert config["distributed_type"] == kind and config["mixed_precision"] == "bf16"
    assert config["num_processes"] >= 1


def test_slurm_launcher_config_resolves():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    # one `python -m ift.train` process per job (nothing starts accelerate): one task and one GPU, not a node's 8
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1, 1) and launcher.timeout_min > 0


def test_multirun_sweep_composes_one_job_per_cell_with_distinct_run_dirs(tmp_path):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["method=sft,ift", "start=base,sft_beta", "seed=0,1"])
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    jobs = [overrides for batch in batches for overrides in batch]
    assert len(jobs) == 8
    run_names = {str(compose(list(job), root=tmp_path).run_name) for job in jobs}
    assert run_names == {f"{m}-{s}-s{seed}" for m in ("sft", "ift") for s in ("base", "sft_beta") for seed in (0, 1)}
