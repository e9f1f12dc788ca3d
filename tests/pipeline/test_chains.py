"""Whole-chain replicates (params.yaml ``chains``): chain c retrains base and sft_beta with seed c and trains its
cells from them. These tests check the wiring (configs, validation, DVC's graph); the report side is in
test_report_variance.py."""

from __future__ import annotations

import networkx as nx
import pytest
import yaml
from dvc.repo import Repo
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from conftest import REPO_ROOT
from dvc_stages import stage_name
from ift.paths import CONF_DIR, start_point_name
from ift.train.config_checks import ConfigError, validate_train_config


@pytest.fixture(autouse=True)
def _root(monkeypatch):
    monkeypatch.setenv("IFT_ROOT", "/r")  # paths.root: configs resolve lazily, so it stays set for the whole test


def _cfg(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def repo():
    return Repo(str(REPO_ROOT))


@pytest.fixture(scope="module")
def params():
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_start_point_names():
    assert start_point_name("base") == "base" and start_point_name("sft_beta", 0) == "sft_beta"
    assert start_point_name("base", 2) == "base-chain2"
    with pytest.raises(ValueError, match="chain=-1"):
        start_point_name("base", -1)


@pytest.mark.parametrize("profile", ["tiny", "smoke"])
def test_a_chain_cell_reads_its_own_chains_start_points_and_is_named_for_them(profile):
    chain0 = _cfg([f"profile={profile}", "method=ift", "start=sft_beta", "seed=1"])
    assert chain0.run_name == "ift-sft_beta-s1" and chain0.start.checkpoint == "/r/outputs/models/sft_beta"
    assert "chain" not in chain0  # chain 0's saved config.yaml is the one written before replicates existed
    cell = _cfg([f"profile={profile}", "method=ift", "start=sft_beta", "seed=2", "+chain=2"])
    assert cell.run_name == "ift-sft_beta-chain2-s2"
    assert cell.start.checkpoint == "/r/outputs/models/sft_beta-chain2"
    assert cell.start_checkpoints.base == "/r/outputs/models/base-chain2"


def test_impossible_chains_fail_validation_naming_the_key():
    with pytest.raises(ConfigError, match="chain must be a whole number"):
        validate_train_config(_cfg(["+chain=-1"]))
    with pytest.raises(ConfigError, match="chain must be a whole number"):
        validate_train_config(_cfg(["+chain=one"]))
    with pytest.raises(ConfigError, match="fixed hub checkpoints"):
        validate_train_config(_cfg(["profile=paper", "+chain=1", "seed=1"]))


def test_a_start_point_stage_trains_chain_c_with_seed_c():
    from ift.train.start_points import ChainConfigError, check_chain

    assert check_chain(_cfg(["seed=2", "+chain=2"]), "base") == 2
    assert check_chain(_cfg([]), "base") == 0
    with pytest.raises(ChainConfigError, match=r"seed=0 with chain=1.*seed=1 \+chain=1"):
        check_chain(_cfg(["+chain=1"]), "base")
    with pytest.raises(ChainConfigError, match="fixed hub checkpoints"):
        check_chain(_cfg(["profile=paper", "seed=1", "+chain=1"]), "sft_beta")


def test_dvc_wires_each_chain_from_its_own_base_to_its_evaluations(repo, params):
    """Every stage of chain c reads chain c's start points, and DVC's graph reaches chain 0's base from none."""
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    by_name = {stage_name(stage): stage for stage in graph}
    chains, starts = params["chains"], params["starts"]
    assert chains and 0 not in chains and 0 in params["seeds"]
    for chain in chains:
        base, sft_beta = by_name[f"base_chain@{chain}"], by_name[f"sft_beta_chain@{chain}"]
        assert f"seed={chain} +chain={chain}" in base.cmd and f"seed={chain} +chain={chain}" in sft_beta.cmd
        assert {o.def_path for o in base.outs} == {f"outputs/models/base-chain{chain}"}
        assert f"outputs/models/base-chain{chain}" in {d.def_path for d in sft_beta.deps}
        cells = [(m, s) for s in starts for m in params["methods"]] + [("dpo", "base")]
        for method, start in cells:
            kind = "train_chain" if (method, start) != ("dpo", "base") else "train_base_only_chain"
            train = by_name[f"{kind}@{method}-{start}-{chain}"]
            name = f"{method}-{start}-chain{chain}-s{chain}"
            assert f"method={method} start={start} seed={chain} +chain={chain}" in train.cmd
            assert f"outputs/models/{start}-chain{chain}" in {d.def_path for d in train.deps}
            assert {o.def_path for o in train.outs} == {f"outputs/runs/{name}"}
            evaluation = by_name[f"{kind.replace('train', 'eval')}@{method}-{start}-{chain}"]
            assert f"outputs/runs/{name}" in {d.def_path for d in evaluation.deps}
            assert f"out=outputs/evals/{name}" in evaluation.cmd
            upstream = {stage_name(s) for s in nx.descendants(graph, evaluation)}
            assert f"base_chain@{chain}" in upstream and "base" not in upstream and "sft_beta" not in upstream
            assert not any(f"_chain@{other}" in s for s in upstream for other in chains if other != chain)
        for start in starts:
            evaluation = by_name[f"eval_start_chain@{start}-{chain}"]
            assert f"model_dir=outputs/models/{start}-chain{chain} " in evaluation.cmd
    report = by_name["report"]
    assert {stage_name(s) for s in nx.descendants(graph, report)} >= {f"eval_chain@ift-base-{c}" for c in chains}
    assert "chains" in {p for d in report.deps for p in (getattr(d, "params", None) or [])}
