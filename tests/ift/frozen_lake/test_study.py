"""Tests of the pre-declared Frozen Lake study (ift.frozen_lake.batched, ift.frozen_lake.study).

References are independent of the code under test: losses from ift.losses on log-probs gathered by hand from
π(a|s) (or from the per-run objectives of ift.frozen_lake.methods), training from torch.optim and transformers'
schedule on one PolicyNet, the measures on small hand-made policies whose answers are worked out by hand.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, REPO_ROOT
from ift.frozen_lake.batched import (
    BatchProblem,
    IFTShared,
    LossData,
    RunSpec,
    dpo_losses,
    ift_losses,
    method_losses,
    orpo_losses,
    schedule_factors,
    sft_losses,
    stack_policies,
    state_logits,
    train_batch,
)
from ift.frozen_lake.env import DEFAULT_MAP, Trajectory
from ift.frozen_lake.experiment import ConfigError, ExperimentConfig, build_problem, run_seed
from ift.frozen_lake.methods import IFTOptions, MethodOptions, make_objective
from ift.frozen_lake.policy import init_policy, policy_matrix
from ift.frozen_lake.study.analysis import analyse
from ift.frozen_lake.study.report import write_report
from ift.frozen_lake.study.run import (
    HOLDS,
    INCONCLUSIVE,
    OPPOSITE,
    moved_states,
    mse_by_category,
    own_action_counts,
    paired_verdict,
    run_study,
    state_categories,
    study_config_from_dict,
)
from ift.losses import dpo_loss, ift_loss, orpo_loss, sft_loss

LEFT, DOWN, RIGHT, UP = range(4)
# A grid small enough for a test, every method variant and map of the committed config kept.
TINY = ["seeds=2", "grid.lrs=[0.01,0.001]", "grid.steps=[4,9]", "expert.steps=10", "anchor.steps=6",
        "nlp_like.lr=0.001", "nlp_like.steps=9"]


def compose_study(overrides: list[str], root) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="frozen_lake_study", overrides=[*overrides, f"paths.root={root}"])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def problem():
    return build_problem(DEFAULT_MAP, discount=0.9)


def batch_problem(problem) -> BatchProblem:
    return BatchProblem(problem.lake.next_state, problem.optimal_probs, problem.lake.decision_states,
                        problem.optimal, problem.suboptimal)


# --------------------------------------------------------------------------------------------------------
# Losses: each method's per-run loss is the ift.losses function on that run's log-probs
# --------------------------------------------------------------------------------------------------------


def test_row_wise_losses_equal_ift_losses_on_hand_built_logps():
    # float64: the batched and the one-row computations may round differently in float32 (by 3 ulps on an AMD EPYC,
    # where MKL's vector math differs from Intel's), so float32 cannot tell an ulp from a wrong formula at 1e-7
    generator = torch.Generator().manual_seed(3)
    logps = torch.log_softmax(torch.randn(3, 2, 6, 4, generator=generator, dtype=torch.float64), -1)[..., 0]  # [R, 2, T]
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])  # chosen 4 steps, rejected 6
    reference = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    beta = torch.tensor([0.1, 0.5, 0.1], dtype=torch.float64)
    chosen = logps[:, 0].masked_fill(~mask[0], 0.0)
    sft, ift = sft_losses(chosen, mask[0].expand(3, -1)), ift_losses(chosen, mask[0].expand(3, -1), IFTShared())
    dpo = dpo_losses(logps.masked_fill(~mask, 0.0), reference, mask, beta)
    orpo = orpo_losses(logps.masked_fill(~mask, 0.0), mask, beta)
    for r in range(3):
        row = chosen[r : r + 1]
        assert sft[r] == sft_loss(row, mask[:1])
        assert torch.allclose(ift[r], ift_loss(row, mask[:1], gamma=0.95), rtol=0, atol=1e-12)
        sums = logps[r].masked_fill(~mask, 0.0).sum(-1)
        means = sums / mask.sum(-1)
        expected_dpo = dpo_loss(sums[:1], sums[1:], reference[r, :1], reference[r, 1:], beta=float(beta[r]))[0]
        assert torch.allclose(dpo[r], expected_dpo[0], rtol=0, atol=1e-12)
        assert torch.allclose(orpo[r], orpo_loss(means[:1], means[1:], beta=float(beta[r]))[0][0], rtol=0, atol=1e-12)
    assert not torch.equal(dpo[0], dpo[1])  # β really is per run


@pytest.mark.parametrize("method", ["sft", "ift", "dpo", "orpo"])
def test_method_loss_on_the_frozen_lake_batch_equals_ift_losses(problem, method):
    """Stacked policies of 3 seeds: the batched loss of each equals (a) ift.losses on log-probs read off that
    policy's π(a|s) by hand and (b) the frozen_lake stage's own objective for that policy."""
    policies = [init_policy(seed, 16, 4, 64, "tanh") for seed in range(3)]
    with torch.no_grad():  # move the policies off their init, so DPO's reference differs from the policy
        for policy in policies:
            policy.layers[2].bias.add_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    references = [init_policy(seed, 16, 4, 64, "tanh") for seed in range(3)]
    params = stack_policies(policies)
    data = LossData.of(batch_problem(problem), "tanh")
    chosen, rejected = problem.optimal, problem.suboptimal
    beta = {"dpo": 0.1, "orpo": 0.25}.get(method, 0.0)

    def hand_logps(policy, trajectory: Trajectory) -> torch.Tensor:
        probs = policy_matrix(policy)
        return torch.tensor([[math.log(probs[s, a]) for s, a in zip(trajectory.states, trajectory.actions)]])

    reference = torch.stack([torch.stack([hand_logps(p, chosen).sum(), hand_logps(p, rejected).sum()])
                             for p in references]).float()
    lam = torch.full((3,), 0.2)
    losses = method_losses(method, params, state_logits(params, "tanh"), data, lam=lam,
                           beta=torch.full((3,), beta), reference=reference)
    for row, policy in enumerate(policies):
        objective = make_objective(method, initial_policy=references[row], next_state=problem.lake.next_state,
                                   optimal=chosen, suboptimal=rejected,
                                   options=MethodOptions(ift=IFTOptions(max_lambda=0.2), dpo_beta=0.1, orpo_beta=0.25),
                                   seed=row, steps=1)
        assert losses[row].item() == pytest.approx(objective(policy, 0).item(), abs=1e-5)
        ones = lambda t: torch.ones(1, len(t), dtype=torch.bool)  # noqa: E731
        if method == "sft":
            expected = sft_loss(hand_logps(policy, chosen), ones(chosen))
        elif method == "dpo":
            expected = dpo_loss(hand_logps(policy, chosen).sum(-1), hand_logps(policy, rejected).sum(-1),
                                reference[row, :1].double(), reference[row, 1:].double(), beta=0.1)[0]
        elif method == "orpo":
            expected = orpo_loss(hand_logps(policy, chosen).mean(-1), hand_logps(policy, rejected).mean(-1),
                                 beta=0.25)[0]
        else:  # IFT: the greedy successor s̃_t of s_{t-1}, then log π(a_t | (1-λ)·onehot(s_t) + λ·onehot(s̃_t))
            probs = policy_matrix(policy)
            states = chosen.states
            intuitions = [states[0]] + [int(problem.lake.next_state[s, int(np.argmax(probs[s]))]) for s in states[:-1]]
            inputs = torch.zeros(len(states), 16)
            for t, (s, guess) in enumerate(zip(states, intuitions)):
                inputs[t, s] += 0.8
                inputs[t, guess] += 0.2
            with torch.no_grad():
                logps = torch.log_softmax(policy(inputs), -1)[torch.arange(len(states)), list(chosen.actions)]
            expected = ift_loss(logps[None], ones(chosen), gamma=0.95)
        assert losses[row].item() == pytest.approx(float(expected.reshape(-1)[0]), abs=1e-5)


# --------------------------------------------------------------------------------------------------------
# Training: the batched optimisers and schedules are torch.optim's and transformers'
# --------------------------------------------------------------------------------------------------------


def test_cosine_schedule_is_transformers_with_ceil_warmup():
    from transformers import get_cosine_schedule_with_warmup

    for steps in (30, 100, 7):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
        expected = []
        for _ in range(steps):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert np.allclose(schedule_factors("cosine", steps, 0.1), expected, rtol=0, atol=1e-12)
        assert schedule_factors("cosine", steps, 0.1)[0] == 0.0  # the first step takes no step: lr 0
    assert np.array_equal(schedule_factors("constant", 5, 0.1), np.ones(5))


@pytest.mark.parametrize("optimizer, schedule", [("rmsprop", "cosine"), ("adam", "cosine"), ("rmsprop", "constant")])
def test_batched_training_matches_torch_optim_on_one_policy(problem, optimizer, schedule):
    from transformers import get_cosine_schedule_with_warmup

    steps, lr = 12, 3e-3
    runs = [RunSpec(seed=seed, method=method, optimizer=optimizer, lr=lr, steps=steps, schedule=schedule,
                    warmup_ratio=0.1, beta=0.1) for seed in (0, 1) for method in ("sft", "dpo")]
    result = train_batch(batch_problem(problem), runs, hidden_size=64, activation="tanh")
    for row, run in enumerate(runs):
        policy = init_policy(run.seed, 16, 4, 64, "tanh")
        objective = make_objective(run.method, initial_policy=init_policy(run.seed, 16, 4, 64, "tanh"),
                                   next_state=problem.lake.next_state, optimal=problem.optimal,
                                   suboptimal=problem.suboptimal, options=MethodOptions(dpo_beta=0.1), seed=run.seed,
                                   steps=steps)
        optim = (torch.optim.Adam if optimizer == "adam" else torch.optim.RMSprop)(policy.parameters(), lr=lr)
        scheduler = (get_cosine_schedule_with_warmup(optim, math.ceil(0.1 * steps), steps) if schedule == "cosine"
                     else None)
        for step in range(steps):
            optim.zero_grad()
            objective(policy, step).backward()
            optim.step()
            if scheduler:
                scheduler.step()
        assert np.abs(policy_matrix(policy) - result.final_probs[row]).max() < 1e-5
    assert np.abs(result.final_probs[0] - policy_matrix(init_policy(0, 16, 4, 64, "tanh"))).max() > 1e-3  # it moved


def test_batched_training_reproduces_the_frozen_lake_stage_trainer(problem):
    """Runs of different lengths in one batch: each equals the stage's run_seed trained for its own length."""
    runs = [RunSpec(seed=0, method=m, optimizer="adam", lr=0.01, steps=steps, beta={"dpo": 0.1, "orpo": 0.25}.get(m, 0),
                    lambda_disturb="normal" if m == "ift" else None)
            for steps in (5, 15) for m in ("sft", "ift", "dpo", "orpo")]
    result = train_batch(batch_problem(problem), runs, hidden_size=64, activation="tanh")
    for steps in (5, 15):
        config = ExperimentConfig(seeds=1, steps=steps, expert_steps=1,
                                  options=MethodOptions(ift=IFTOptions(lambda_disturb="normal")))
        stage = {r.method: r for r in run_seed(config, problem, 0)}
        for row, run in enumerate(runs):
            if run.steps == steps:
                assert np.abs(np.array(stage[run.method].mse_curve) - result.mse_curves[row, : steps + 1]).max() < 1e-6
                assert np.isnan(result.mse_curves[row, steps + 1 :]).all()


# --------------------------------------------------------------------------------------------------------
# Measures on hand-made policies
# --------------------------------------------------------------------------------------------------------


def test_moved_states_on_a_hand_made_policy():
    optimal = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0.25] * 4])
    initial = np.full((5, 4), 0.25)
    final = np.array([
        [0.1, 0.1, 0.7, 0.1],  # TV 0.45, closer to π* (right): toward
        [0.05, 0.05, 0.85, 0.05],  # TV 0.6, mass to right while π* is left: away
        [0.2, 0.3, 0.25, 0.25],  # TV 0.05 <= 0.1: not moved
        [0.7, 0.1, 0.1, 0.1],  # moved a lot but not a decision state (terminal): ignored
        [0.25] * 4,
    ])
    toward, away = moved_states(initial, final, optimal, decisions=np.array([0, 1, 2, 4]), threshold=0.1)
    assert toward.tolist() == [True, False, False, False, False]
    assert away.tolist() == [False, True, False, False, False]
    toward, away = moved_states(initial, final, optimal, decisions=np.array([0, 1, 2, 4]), threshold=0.5)
    assert toward.tolist() == [False] * 5 and away.tolist() == [False, True, False, False, False]


def test_off_trajectory_mass_on_a_hand_made_policy():
    from ift.frozen_lake.batched import off_trajectory_mass

    chosen = Trajectory(states=(0, 1), actions=(RIGHT, DOWN))
    rejected = Trajectory(states=(0, 2), actions=(DOWN, RIGHT))
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.125, 0.125], [0.0, 0.0, 1.0, 0.0], [0.25] * 4])
    mass = off_trajectory_mass(probs, chosen, rejected)
    # state 0: both trajectories (right, down) -> 1 - 0.3 - 0.2; state 1: down only; state 2: right only
    assert mass[:3] == pytest.approx([0.5, 0.75, 0.0])
    assert np.isnan(mass[3])  # on neither trajectory
    batched = off_trajectory_mass(np.stack([probs, probs]), chosen, rejected)
    assert np.allclose(batched[1, :3], mass[:3])


def test_state_categories_and_mse_decomposition_on_the_ring_map(problem):
    cells = {c: sorted(problem.lake.cell(s) for s in states) for c, states in state_categories(problem).items()}
    assert cells == {  # worked out by hand from the map in tests/ift/frozen_lake/test_experiment.py
        "chosen only": [(0, 1), (0, 2), (0, 3)], "both paths": [(0, 0)],
        "rejected: π*'s action": [(2, 3), (3, 0), (3, 1), (3, 2), (3, 3)], "rejected: tie": [(2, 0)],
        "rejected: not π*'s": [(1, 0)], "neither path": []}
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=16)
    shares = mse_by_category(probs, problem)
    decisions = problem.lake.decision_states
    assert sum(shares.values()) == pytest.approx(((probs - problem.optimal_probs)[decisions] ** 2).mean())


@pytest.mark.parametrize("rows, counts", [
    (("SFFF", "FHHG", "FHHF", "FFFF"), (5, 1, 2, 8)),  # ring: down, up are not π*'s; (2,0) tied
    (("FFFF", "FHHF", "FHHF", "SGFF"), (5, 1, 5, 11)),  # adjacent: turn back on the first 5 cells of 11
    (("SFFF", "FHHF", "FHHG", "FFFF"), (5, 1, 1, 7)),  # near: only the first step (down from S) is not π*'s
])
def test_own_action_counts_of_the_maps(rows, counts):
    got = own_action_counts(build_problem(rows, 0.9))
    assert (got["own"], got["tie"], got["not_own"], got["steps"]) == counts


def test_paired_verdict_interval():
    t_90_df4 = 2.131846786326649  # Student t, 0.95 quantile, 4 degrees of freedom
    differences = np.array([-0.03, -0.01, -0.02, -0.04, -0.02])
    verdict, mean, low, high = paired_verdict(differences, 0.9)
    half = t_90_df4 * differences.std(ddof=1) / math.sqrt(5)
    assert verdict == HOLDS and mean == pytest.approx(-0.024) and (low, high) == pytest.approx((mean - half, mean + half))
    assert paired_verdict(-differences, 0.9)[0] == OPPOSITE
    assert paired_verdict(np.array([-0.03, 0.02, -0.01, 0.04, 0.0]), 0.9)[0] == INCONCLUSIVE
    assert paired_verdict(np.zeros(5), 0.9)[0] == INCONCLUSIVE


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


def test_committed_grid_covers_the_issue_minimum(tmp_path):
    config = study_config_from_dict(compose_study([], tmp_path))
    optimizers = {s.optimizer for s in config.grid}
    lrs = sorted({s.lr for s in config.grid})
    assert optimizers == {"rmsprop", "adam"} and {s.schedule for s in config.grid} == {"cosine"}
    assert {s.warmup_ratio for s in config.grid} == {0.1}
    assert lrs[-1] / lrs[0] >= 1e3 and {s.steps for s in config.grid} >= {30, 100, 300, 1000}
    assert sorted(v.beta for v in config.variants_of("dpo")) == [0.1, 0.5]
    assert sorted(v.beta for v in config.variants_of("orpo")) == [0.25, 1.0]
    ift = config.variants_of("ift")
    assert {v.max_lambda for v in ift} == {0.2} and {v.lambda_disturb for v in ift} == {None, "normal"}
    assert config.seeds == 5 and len(config.maps) >= 2 and dict(config.maps)["ring"] == DEFAULT_MAP
    assert config.anchor.optimizer == "adam" and config.anchor.lr == 0.01 and config.anchor.steps == 300
    assert config.nlp_like in config.grid and config.nlp_like.optimizer == "rmsprop"


@pytest.mark.parametrize("override, key", [
    ("grid.optimizers=[rmsprop,lbfgs]", "grid.optimizers[1]"),
    ("grid.lrs=[0.01,0]", "grid.lrs[1]"),
    ("grid.lrs=[-0.001]", "grid.lrs[0]"),
    ("grid.steps=[0,30]", "grid.steps[0]"),
    ("grid.schedule=linear", "grid.schedule"),
    ("grid.warmup_ratio=1.0", "grid.warmup_ratio"),
    ("anchor.steps=0", "anchor.steps"),
    ("anchor.optimizer=sgd", "anchor.optimizer"),
    ("nlp_like.lr=0.5", "nlp_like"),
    ("seeds=1", "seeds"),
    ("variants.dpo_b01.beta=0", "variants.dpo_b01.beta"),
    ("variants.sft.method=ppo", "variants.sft.method"),
    ("+variants.sft.beta=0.1", "variants.sft"),
    ("paper_variants.dpo=orpo_b1", "paper_variants.dpo"),
    ("maps.ring=[SFF,FFF,FFG]", "maps.ring"),
    ("measures.interval=1.0", "measures.interval"),
    ("ift.propagation_norm=L3", "ift.propagation_norm"),
])
def test_bad_config_raises_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError) as error:
        study_config_from_dict(compose_study([override], tmp_path))
    assert str(error.value).startswith(f"{key}:"), str(error.value)


# --------------------------------------------------------------------------------------------------------
# The study end to end
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    return study_config_from_dict(compose_study(TINY, tmp_path_factory.mktemp("root")))


def test_study_is_deterministic_by_seed(tiny_config, tmp_path):
    first, second = run_study(tiny_config, log=lambda _: None), run_study(tiny_config, log=lambda _: None)
    for one, two in zip(first.maps, second.maps, strict=True):
        for a, b in zip(one.records, two.records, strict=True):
            assert (a.map, a.setting, a.variant, a.seed, a.policy_mse, a.param_mse) == (
                b.map, b.setting, b.variant, b.seed, b.policy_mse, b.param_mse)
            assert np.array_equal(a.mse_curve, b.mse_curve) and np.array_equal(a.probs, b.probs)
    paths = [write_report(result, analyse(result), tmp_path / name, tmp_path / name / "plots")
             for name, result in (("a", first), ("b", second))]
    for key in paths[0]:
        assert paths[0][key].read_bytes() == paths[1][key].read_bytes(), key
    # a seed's runs do not depend on which other seeds share the batch
    from dataclasses import replace

    alone = run_study(replace(tiny_config, seeds=1), check_anchor=False, log=lambda _: None)
    ring, ring_alone = first.maps[0], alone.maps[0]
    for setting in tiny_config.settings:
        for variant in tiny_config.variants:
            (a,), b = ring_alone.select(setting, variant.name), ring.select(setting, variant.name)[0]
            assert abs(a.policy_mse - b.policy_mse) < 1e-6
    seed0, seed1 = ring.select(tiny_config.anchor, "ift")
    assert seed0.policy_mse != seed1.policy_mse  # the seed really changes the run


def test_anchor_check_has_teeth(tiny_config):
    from dataclasses import replace

    with pytest.raises(RuntimeError, match="anchor"):
        run_study(replace(tiny_config, anchor_tolerance=1e-12), log=lambda _: None)


def test_study_tables_count_every_setting_and_pair(tiny_config):
    result = run_study(tiny_config, log=lambda _: None)
    analysis = analyse(result)
    grid_points = len(tiny_config.grid) * len(tiny_config.maps)
    pairs = {"DPO < IFT": 4, "IFT < ORPO": 4, "ORPO < SFT": 2, "IFT < SFT": 2}  # variants: dpo 2, ift 2, orpo 2
    for row in analysis["claims"]["all settings"]:
        assert row["settings"] == grid_points * pairs[row["claim"]]
        assert row["holds"] + row["opposite"] + row["inconclusive"] == row["settings"]
    assert len(analysis["ordering"]) == grid_points * 8
    assert len(analysis["winners"]) == grid_points
    for name, tables in analysis["highlighted"]["anchor"].items():
        problem = build_problem(dict(tiny_config.maps)[name], 0.9)
        mass = {row["policy"]: [row[a] for a in ("left", "down", "right", "up")] for row in tables["action_mass"]}
        for policy in ("π*", "initial", "sft", "ift", "dpo", "orpo"):
            assert sum(mass[policy]) == pytest.approx(1.0)  # a mean of distributions
        assert mass["π*"] == pytest.approx(problem.optimal_probs[problem.lake.decision_states].mean(0).tolist())
        assert mass["rejected path (steps)"] == np.bincount(problem.suboptimal.actions, minlength=4).tolist()
        for row in tables["decomposition"]:
            parts = sum(value for key, value in row.items() if key not in ("method", "total"))
            assert parts == pytest.approx(row["total"], abs=1e-12)


def test_cli_writes_the_report_and_rejects_a_bad_key(tmp_path):
    env = {**os.environ, "IFT_ROOT": str(tmp_path), "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "ift.frozen_lake.study", *TINY], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    report = tmp_path / "report"
    for name in ("frozen_lake_study.md", "frozen_lake_study.csv", "frozen_lake_study.json",
                 "plots/frozen_lake_study_winners.png", "plots/frozen_lake_study_curves.png",
                 "plots/frozen_lake_study_off_trajectory.png"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "frozen_lake_study.md").read_text()
    assert "| DPO < IFT |" in text and "Is the paper's ordering reproduced anywhere" in text
    assert not list(report.rglob("*.tmp"))
    csv_rows = (report / "frozen_lake_study.csv").read_text().splitlines()
    # per map: initial + (grid settings + anchor) x variants + expert
    assert len(csv_rows) - 1 == 3 * (1 + (2 * 2 * 2 + 1) * 7 + 1)
    bad = subprocess.run([sys.executable, "-m", "ift.frozen_lake.study", "grid.lrs=[0.01,-1]"], cwd=REPO_ROOT,
                         env={**env, "IFT_ROOT": str(tmp_path / "bad")}, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "grid.lrs[1]" in bad.stderr
    assert not (tmp_path / "bad" / "report").exists()
