"""The paper profile's leaderboard suite (it needs the hub to run): its tasks resolve in lm-eval's registry, our
ARC-Gen YAML parses and builds the intended prompt and letter extraction on ARC-Challenge-shaped rows, and the
suite is run as one lm-eval call per shot count."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from conftest import compose

ARC_CHALLENGE_ROWS = [  # allenai/ai2_arc ARC-Challenge schema; some items use numeric labels
    {"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster after a meteorite "
     "impact. Which is the most likely effect of this increase in rotation?",
     "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.",
                          "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                 "label": ["A", "B", "C", "D"]},
     "answerKey": "C"},
    {"id": "NYSEDREGENTS_2015_4_8", "question": "Which object is the best conductor of electricity?",
     "choices": {"text": ["a wax crayon", "a plastic spoon", "a rubber eraser", "an iron nail"],
                 "label": ["1", "2", "3", "4"]},
     "answerKey": "4"},
]


@pytest.fixture(scope="module")
def openllm():
    from ift.evaluate.suites import suite_from_config

    cfg = compose(["profile=paper"])
    assert cfg.suite.name == "openllm" and cfg.judge.name == "alpaca_eval_2"
    return suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True))


@pytest.fixture(scope="module")
def registry(openllm, tmp_path_factory):
    """lm-eval's full task index (~15 s to build) plus our ARC-Gen, as the paper profile builds it."""
    from ift.evaluate.suites import task_manager

    return task_manager(openllm, tmp_path_factory.mktemp("work"))


def test_every_task_resolves_in_lm_evals_registry(openllm, registry):
    from lm_eval.tasks._index import Kind

    index = registry.task_index
    for spec in openllm.tasks:
        assert spec.lm_eval_task in index, spec.lm_eval_task
    assert index["mmlu"].kind == Kind.GROUP
    assert str(index["arc_challenge"].yaml_path).endswith("arc/arc_challenge.yaml")
    assert str(index["arc_challenge_gen"].yaml_path).endswith("ift/evaluate/tasks/openllm/arc_gen.yaml")
    assert [spec.metric for spec in openllm.tasks] == ["acc_norm", "exact_match", "acc", "acc", "acc",
                                                      "exact_match"]


def test_suite_runs_one_call_per_shot_count(openllm):
    from ift.evaluate.suites import evaluation_calls

    assert evaluation_calls(openllm) == [
        (25, True, ["arc_challenge", "arc_challenge_gen"]),
        (5, True, ["mmlu", "winogrande", "gsm8k"]),
        (0, True, ["truthfulqa_mc2"]),
    ]


def test_the_cpu_generation_lane_gets_arc_gen_and_gsm8k_from_the_registry(openllm, registry):
    from ift.evaluate.leaderboard import split_generation_calls
    from ift.evaluate.suites import evaluation_calls

    likelihood, generation = split_generation_calls(evaluation_calls(openllm), registry)
    assert likelihood == [(25, True, ["arc_challenge"]), (5, True, ["mmlu", "winogrande"]),
                          (0, True, ["truthfulqa_mc2"])]
    assert generation == [(25, True, ["arc_challenge_gen"]), (5, True, ["gsm8k"])]


def _arc_gen_config():
    from lm_eval.tasks._yaml_loader import load_yaml

    from ift.evaluate.suites import TASKS_DIR

    return load_yaml(TASKS_DIR / "openllm" / "arc_gen.yaml")


def test_arc_gen_yaml_builds_the_lettered_prompt_and_targets():
    from lm_eval.api.task import TaskConfig
    from lm_eval.utils import apply_template

    cfg = _arc_gen_config()
    TaskConfig(**cfg)  # every key is one lm-eval knows
    assert (cfg["output_type"], cfg["dataset_path"], cfg["dataset_name"]) == (
        "generate_until", "allenai/ai2_arc", "ARC-Challenge")
    prompt = apply_template(cfg["doc_to_text"], ARC_CHALLENGE_ROWS[1])
    assert prompt == ("Which object is the best conductor of electricity?\nA. a wax crayon\nB. a plastic spoon\n"
                      "C. a rubber eraser\nD. an iron nail\nAnswer with the letter of the correct choice.")
    assert [apply_template(cfg["doc_to_target"], row) for row in ARC_CHALLENGE_ROWS] == ["C", "D"]
    assert apply_template(cfg["fewshot_config"]["doc_to_target"], ARC_CHALLENGE_ROWS[0]) == (
        "C. Planetary days will become shorter.")


@pytest.mark.parametrize("generation, letter", [
    ("C. Planetary days will become shorter.", "C"),
    ("The answer is D.", "D"),
    ("(B) a plastic spoon", "B"),
    ("A", "A"),
    ("A wax crayon is not a conductor; the answer is D", "D"),
    ("I am not sure.", "[invalid]"),
])
def test_arc_gen_extracts_the_answer_letter(generation, letter):
    from lm_eval.filters.extraction import RegexFilter

    (regex_step, take_first) = _arc_gen_config()["filter_list"][0]["filter"]
    assert take_first["function"] == "take_first"
    extract = RegexFilter(regex_pattern=regex_step["regex_pattern"], group_select=regex_step["group_select"])
    assert list(extract.apply([[generation]], [{}]))[0] == [letter]
    assert re.compile(regex_step["regex_pattern"])  # a valid Python regex, as lm-eval compiles it
