"""scripts/frozen_lake_dpo_family.py: TDPO's and SimPO's objectives in the Frozen Lake game (issue 27)."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch

from conftest import REPO_ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("frozen_lake_dpo_family",
                                                  REPO_ROOT / "scripts" / "frozen_lake_dpo_family.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair_and_policy():
    from ift.frozen_lake.env import DEFAULT_MAP
    from ift.frozen_lake.experiment import build_problem
    from ift.frozen_lake.methods import TrajectoryBatch
    from ift.frozen_lake.policy import init_policy

    problem = build_problem(DEFAULT_MAP, 0.9)
    pair = TrajectoryBatch.of([problem.optimal, problem.suboptimal])
    return pair, init_policy(0, problem.lake.num_states, problem.lake.num_actions, 16, "tanh")


def test_tdpo_starts_at_log_2_and_its_terms_are_the_trajectory_log_ratios_and_a_kl_zero_only_at_the_reference():
    from ift.frozen_lake.methods import trajectory_logps

    script = load_script()
    pair, policy = pair_and_policy()
    ratio, kl = script.tdpo_terms(policy, policy, pair)
    assert torch.count_nonzero(ratio) == 0 and torch.count_nonzero(kl) == 0
    for variant in ("tdpo1", "tdpo2"):  # policy = reference: no log-ratio, no KL, so -log σ(0)
        assert float(script.tdpo_objective(pair, policy, variant)(policy, 0)) == pytest.approx(math.log(2))
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    ratio, kl = script.tdpo_terms(moved, policy, pair)
    torch.testing.assert_close(ratio, trajectory_logps(moved, pair) - trajectory_logps(policy, pair))
    assert (kl[pair.mask] > 0).all() and (kl[~pair.mask] == 0).all()


def test_dpo_row_equals_the_frozen_lake_experiments_own(capsys):
    """The script's DPO is the experiment's DPO: same policy MSE as `python -m ift.frozen_lake` computes."""
    import numpy as np
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ift.frozen_lake.experiment import config_from_dict, run_experiment
    from ift.paths import CONF_DIR

    load_script().main()
    printed = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(printed) == {"dpo", "simpo", "tdpo1", "tdpo2"}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="frozen_lake", overrides=[f"paths.root={REPO_ROOT}", "methods=[dpo]"])
    result = run_experiment(config_from_dict(OmegaConf.to_container(cfg, resolve=True)))
    expected = np.mean([run.policy_mse for run in result.runs_of("dpo")])
    assert float(printed["dpo"][1]) == pytest.approx(expected, abs=5e-4)
    assert float(printed["dpo"][-1]) == 0.0  # distance of DPO from itself
