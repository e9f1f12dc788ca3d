"""A study's YAML: the exact multirun overrides and cells of each committed study, and bad configs failing naming the
key. Nothing is trained here."""

from __future__ import annotations

import copy

import pytest

from ift.methods import ConfigError
from ift.study import spec
from ift.study.spec import cell_name, load_study, multirun_overrides, parse_study

LAYOUT = ["paths.outputs=${paths.root}/outputs/studies/{study}", "paths.world=${paths.root}/outputs/world",
          "paths.models=${paths.root}/outputs/models", "+logger.study={study}"]
REPLICATES = ["start=base,sft_beta", "seed=0,1,2", "+chain=${seed}"]  # seed c with chain c: zipped, not crossed


def expected(study: str, variant: str, fixed: list[str], tags: str = "", swept: tuple[str, ...] = ()) -> list[str]:
    """A variant's multirun overrides written out by hand."""
    return [*fixed, *(o.replace("{study}", study) for o in LAYOUT),
            f"run_name='{variant}{tags}-${{start_point:${{start.name}},${{chain}}}}-s${{seed}}'",
            "model_dir=${paths.runs}/${run_name}", "out=${paths.outputs}/evals/${run_name}",
            f"hydra.sweep.dir=${{paths.outputs}}/hydra/{variant}", "hydra.sweep.subdir=${run_name}",
            *REPLICATES, *swept]


def test_the_ablation_ladder_is_five_rungs_each_one_multirun():
    study = load_study("ablation")
    lam, gam = "method.max_lambda", "method.gamma"
    want = {
        "sft": ["method=sft", "method.reduction=sequence_mean"],
        "relation_only": ["method=ift", f"{lam}=0", "method.min_lambda=0", f"{gam}=0.95"],
        "residual_only": ["method=ift", f"{lam}=0.2", "method.min_lambda=0.2", f"{gam}=0"],
        "ift": ["method=ift", f"{lam}=0.2", "method.min_lambda=0.2", f"{gam}=0.95"],
        "ift_noisy_lambda": ["method=ift", f"{lam}=0.2", "method.min_lambda=0.2", f"{gam}=0.95",
                             "method.lambda_disturb=normal"],
    }
    assert [v.name for v in study.variants] == list(want)
    for variant in study.variants:
        assert multirun_overrides(study, variant) == expected("ablation", variant.name, want[variant.name])
    assert study.reference == ("sft", ()) and study.knob == "variant"
    names = [cell.name for cell in study.cells()]
    assert len(names) == len(set(names)) == 5 * 2 * 3
    assert names[:6] == ["sft-base-s0", "sft-base-chain1-s1", "sft-base-chain2-s2", "sft-sft_beta-s0",
                         "sft-sft_beta-chain1-s1", "sft-sft_beta-chain2-s2"]


def test_the_lambda_study_sweeps_five_lambdas_beside_sft():
    study = load_study("lambda")
    ift, sft = study.variants
    assert multirun_overrides(study, ift) == expected(
        "lambda", "ift", ["method=ift", "method.min_lambda=${method.max_lambda}"], "-lambda${method.max_lambda}",
        ("method.max_lambda=0.05,0.1,0.2,0.4,0.8",))
    assert multirun_overrides(study, sft) == expected("lambda", "sft", ["method=sft"])
    names = {cell.name for cell in study.cells()}
    assert len(names) == (5 + 1) * 2 * 3
    assert {"ift-lambda0.05-base-s0", "ift-lambda0.8-sft_beta-chain2-s2", "sft-base-chain1-s1"} <= names


def test_the_recipe_study_crosses_three_lrs_with_two_epoch_counts_for_ift_and_sft():
    study = load_study("recipe")
    tags = "-lr${trainer.finetune.learning_rate}-epochs${trainer.finetune.num_train_epochs}"
    swept = ("trainer.finetune.learning_rate=5e-05,0.0002,0.0005", "trainer.finetune.num_train_epochs=1,3")
    for variant, method in zip(study.variants, ["sft", "ift"]):
        assert multirun_overrides(study, variant, ["profile=smoke"]) == [
            *expected("recipe", method, [f"method={method}"], tags, swept), "profile=smoke"]
    assert study.reference == ("sft", (("lr", 2.0e-4), ("epochs", 1)))
    cells = study.cells()
    assert len(cells) == len({c.name for c in cells}) == 2 * 3 * 2 * 2 * 3
    assert "ift-lr5e-05-epochs3-sft_beta-chain1-s1" in {c.name for c in cells}


def test_a_cell_is_named_by_variant_swept_values_start_point_and_seed():
    assert cell_name("ift", (("lambda", 0.4),), "base", 0) == "ift-lambda0.4-base-s0"
    assert cell_name("residual_only", (), "sft_beta", 2) == "residual_only-sft_beta-chain2-s2"


VALID = {
    "title": "t", "knob": "lr", "reference": {"variant": "sft", "at": {"lr": 0.1}}, "starts": ["base"],
    "chains": [0, 1],
    "variants": {"sft": {"overrides": ["method=sft"], "sweep": {"lr": {"key": "trainer.finetune.learning_rate",
                                                                        "values": [0.1, 0.2]}}},
                 "ift": {"overrides": ["method=ift"]}},
}


def _with(path: str, value):
    raw = copy.deepcopy(VALID)
    *parents, last = path.split("/")
    node = raw
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


def test_the_valid_example_parses():
    study = parse_study(copy.deepcopy(VALID), name="example")
    assert [c.name for c in study.cells()] == ["sft-lr0.1-base-s0", "sft-lr0.1-base-chain1-s1",
                                               "sft-lr0.2-base-s0", "sft-lr0.2-base-chain1-s1",
                                               "ift-base-s0", "ift-base-chain1-s1"]


@pytest.mark.parametrize("path, value, message", [
    ("sweeps", {}, r"sweeps: unknown key"),
    ("title", KeyError, r"title is missing"),
    ("variants", {}, r"variants is empty"),
    ("variants/sft/overide", ["method=sft"], r"variants\.sft\.overide: unknown key"),
    ("variants/Bad-Name", {"overrides": []}, r"variants\.Bad-Name"),
    ("variants/sft/sweep/lr/values", [], r"variants\.sft\.sweep\.lr\.values is empty"),
    ("variants/sft/sweep/lr/values", [0.1, 0.1], r"variants\.sft\.sweep\.lr\.values repeats"),
    ("variants/sft/sweep/lr/key", "seed", r"variants\.sft\.sweep\.lr\.key=seed"),
    ("variants/sft/sweep/lr/vals", [1], r"variants\.sft\.sweep\.lr\.vals: unknown key"),
    ("variants/sft/sweep/lr/values", [True], r"variants\.sft\.sweep\.lr\.values"),
    ("variants/sft/sweep/lr/values", ["a,b"], r"variants\.sft\.sweep\.lr\.values"),
    ("variants/ift/overrides", ["method=ift", "seed=3"], r"variants\.ift\.overrides: 'seed=3' sets seed"),
    ("variants/ift/overrides", ["+chain=1"], r"variants\.ift\.overrides: '\+chain=1' sets chain"),
    ("variants/ift/overrides", ["paths.runs=/x"], r"variants\.ift\.overrides: 'paths\.runs=/x' sets paths\.runs"),
    ("variants/ift/overrides", ["method.gamma=0,0.5"], r"variants\.ift\.overrides: .* sweeps method\.gamma"),
    ("variants/ift/overrides", ["method.gamma=(("], r"variants\.ift\.overrides: .* is not a Hydra override"),
    ("variants/ift/overrides", ["hydra/launcher=slurm"], r"variants\.ift\.overrides: .* Hydra setting"),
    ("variants/ift/overrides", "method=ift", r"variants\.ift\.overrides must be a list"),
    ("reference/variant", "sft_mean", r"reference\.variant='sft_mean' is not a variant.*sft, ift"),
    ("reference/at", KeyError, r"reference\.at\.lr is missing"),
    ("reference/at", {"lr": 0.3}, r"reference\.at\.lr=0\.3 is not among"),
    ("knob", "epochs", r"knob='epochs'"),
    ("starts", ["base", "chat"], r"starts: 'chat' is not a start point"),
    ("starts", [], r"starts is empty"),
    ("chains", [0, -1], r"chains must be whole numbers >= 0"),
    ("chains", [1, 1], r"chains repeats"),
])
def test_a_bad_study_fails_naming_the_key(path, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_study(_with(path, value), name="example")


def test_command_line_overrides_pass_through_unless_they_sweep_or_set_what_the_study_sets():
    assert spec.check_passthrough(["profile=smoke", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                   "paths.world=/elsewhere"]) == ("profile=smoke", "hydra/launcher=slurm",
                                                                  "hydra.launcher.partition=gpu",
                                                                  "paths.world=/elsewhere")
    with pytest.raises(ConfigError, match="command line: 'seed=0,1' sweeps seed"):
        spec.check_passthrough(["seed=0,1"])
    with pytest.raises(ConfigError, match="command line: 'run_name=x' sets run_name"):
        spec.check_passthrough(["run_name=x"])
    with pytest.raises(ConfigError, match="sets hydra.sweep.dir"):
        spec.check_passthrough(["hydra.sweep.dir=/tmp/x"])


def test_an_unknown_study_names_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"study='nope'.*ablation, lambda, recipe"):
        load_study("nope")
    path = tmp_path / "mine.yaml"
    path.write_text("title: t\nknob: variant\nreference: {variant: a}\nstarts: [base]\nchains: [0]\n"
                    "variants: {a: {overrides: [method=sft]}}\n")
    assert load_study(str(path)).name == "mine"
