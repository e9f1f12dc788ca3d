"""The toy leaderboard tasks score right: fake LMs plugged into lm-eval through the real suite and runner.

An oracle LM that knows the answers from the world's task files (read here, independently of lm-eval) must score
1.0 on every task; a seeded random LM must score near chance, where chance is computed from the same files. Both
run on the tiny world (the sizes and shot counts the pipeline uses), from a foreign working directory (the
rendered YAMLs must not depend on it), and the oracle also checks that every prompt fits the tiny model's window.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import build_world, compose

WINDOW = 512  # conf/model/tiny.yaml max_position_embeddings


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return build_world("tiny", tmp_path_factory.mktemp("tiny_world") / "world")


@pytest.fixture(scope="module")
def suite(tiny_world):
    from ift.evaluate.suites import suite_from_config

    cfg = compose(["profile=tiny", f"paths.world={tiny_world}"])
    return suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _identity(doc) -> str:
    return json.dumps(dict(doc), sort_keys=True)


class WorldAnswers:
    """The right answer of every test item, straight from the task files (HF schemas), by item identity."""

    def __init__(self, world: Path):
        tasks = world / "tasks"
        self.rows = {name: {_identity(r): r for r in _rows(tasks / name / "test.jsonl")}
                     for name in ("arc", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")}

    def row(self, task: str, doc) -> dict:
        return self.rows[task][_identity(doc)]

    def is_right_loglikelihood(self, task_name: str, doc, context: str, continuation: str) -> bool:
        if task_name == "toy_arc":
            row = self.row("arc", doc)
            return continuation == row["choices"]["text"][row["choices"]["label"].index(row["answerKey"])]
        if task_name == "toy_mmlu":
            return continuation == "ABCD"[self.row("mmlu", doc)["answer"]]
        if task_name == "toy_truthfulqa_mc2":
            targets = self.row("truthfulqa_mc2", doc)["mc2_targets"]
            return continuation in [c for c, label in zip(targets["choices"], targets["labels"]) if label == 1]
        if task_name == "toy_winogrande":
            row = self.row("winogrande", doc)
            right = row["option1"] if row["answer"] == "1" else row["option2"]
            return (last_user_turn(context) if "<|user|>" in context else context).endswith(f" {right}")
        raise AssertionError(f"unexpected loglikelihood task {task_name}")

    def generation(self, task_name: str, doc) -> str:
        if task_name == "toy_arc_gen":
            row = self.row("arc", doc)
            text = row["choices"]["text"][row["choices"]["label"].index(row["answerKey"])]
            return f"{row['answerKey']}. {text}"
        if task_name == "toy_gsm8k":
            return self.row("gsm8k", doc)["answer"]
        raise AssertionError(f"unexpected generation task {task_name}")


def last_user_turn(context: str) -> str:
    """The last user message of a prompt rendered with the world's chat template."""
    return context.rsplit("<|user|>\n", 1)[1].split("</s>", 1)[0]


def make_fake_lm(tokenizer, respond_ll, respond_gen, *, measure: bool = False):
    """An lm_eval LM whose answers come from plain functions; it renders the world's chat template and, with
    ``measure``, records the longest prompt of each task in tokens."""
    from lm_eval.api.model import LM

    class FakeLM(LM):
        def __init__(self):
            super().__init__()
            self.longest = {}  # task -> longest prompt in tokens (+ generation budget)

        def _note(self, task, text, extra=0):
            if measure:
                n_tokens = len(tokenizer(text, add_special_tokens=False).input_ids) + extra
                self.longest[task] = max(self.longest.get(task, 0), n_tokens)

        def loglikelihood(self, requests, disable_tqdm=False):
            out = []
            for req in requests:
                context, continuation = req.args
                self._note(req.task_name, context + continuation)
                out.append(respond_ll(req, context, continuation))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for req in requests:
                context, gen_kwargs = req.args
                self._note(req.task_name, context, extra=gen_kwargs.get("max_gen_toks", 256))
                out.append(respond_gen(req, context))
            return out

        @property
        def tokenizer_name(self) -> str:
            return "toy_world"

        def chat_template(self, chat_template=False):
            return tokenizer.chat_template

        def apply_chat_template(self, chat_history, add_generation_prompt=True):
            return tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                 add_generation_prompt=add_generation_prompt)

    return FakeLM()


def _run(lm, suite, tmp_path, monkeypatch):
    from ift.evaluate.leaderboard import evaluate_leaderboard

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # relative data_files would break here
    record, _ = evaluate_leaderboard(lm, suite, tmp_path / "work", model_dir="fake")
    return record


@pytest.fixture(scope="module")
def world_tokenizer(tiny_world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_world / "tokenizer")


def test_oracle_scores_one_on_every_task_and_every_prompt_fits(tiny_world, suite, world_tokenizer, tmp_path,
                                                              monkeypatch):
    answers = WorldAnswers(tiny_world)
    gsm8k_prompts = []

    def respond_gen(req, ctx):
        if req.task_name == "toy_gsm8k":
            gsm8k_prompts.append((ctx, answers.row("gsm8k", req.doc)["question"]))
        return answers.generation(req.task_name, req.doc)

    lm = make_fake_lm(
        world_tokenizer,
        lambda req, ctx, cont: (0.0, True) if answers.is_right_loglikelihood(req.task_name, req.doc, ctx, cont)
        else (-1000.0, False),
        respond_gen,
        measure=True,
    )
    record = _run(lm, suite, tmp_path, monkeypatch)
    assert list(record["tasks"]) == ["arc", "arc_gen", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"]
    for key, row in record["tasks"].items():
        assert row["value"] == pytest.approx(1.0), key
        assert row["n"] == len(_rows(tiny_world / "tasks" / ("arc" if key == "arc_gen" else key) / "test.jsonl"))
        assert row["num_fewshot"] == suite.task(key).num_fewshot
    assert record["avg"] == pytest.approx(1.0)
    # The shot counts leave every prompt (and the generation budget) inside the tiny model's window.
    assert set(lm.longest) == {spec.lm_eval_task for spec in suite.tasks}
    assert max(lm.longest.values()) <= WINDOW, lm.longest
    # GSM8K is asked as the chat data asks: the question alone as the only user turn (no "Question:", no shots)
    assert gsm8k_prompts and all(ctx.count("<|user|>") == 1 and last_user_turn(ctx) == question
                                 for ctx, question in gsm8k_prompts)


def _chance(world: Path) -> dict[str, float]:
    """Expected score of a uniform guesser, from the task files."""
    tasks = world / "tasks"
    arc = _rows(tasks / "arc" / "test.jsonl")
    mc2 = [r["mc2_targets"]["labels"] for r in _rows(tasks / "truthfulqa_mc2" / "test.jsonl")]
    gsm = [int(r["answer"].rsplit("#### ", 1)[1]) for r in _rows(tasks / "gsm8k" / "test.jsonl")]
    return {
        "arc": sum(1 / len(r["choices"]["text"]) for r in arc) / len(arc),
        "arc_gen": sum(1 / len(r["choices"]["text"]) for r in arc) / len(arc),
        "mmlu": 0.25,
        # i.i.d. log-likelihoods: by symmetry the expected probability mass on the true answers is their share
        "truthfulqa_mc2": sum(sum(labels) / len(labels) for labels in mc2) / len(mc2),
        "winogrande": 0.5,
        "gsm8k": sum(0 <= truth < 100 for truth in gsm) / len(gsm) / 100,
    }


def test_random_lm_scores_near_chance(tiny_world, suite, world_tokenizer, tmp_path, monkeypatch):
    chance = _chance(tiny_world)
    totals = dict.fromkeys(chance, 0.0)
    counts = dict.fromkeys(chance, 0)
    seeds = (0, 1, 2)
    for seed in seeds:
        rng = random.Random(seed)
        lm = make_fake_lm(
            world_tokenizer,
            lambda req, ctx, cont, rng=rng: (rng.uniform(-20.0, 0.0), False),
            lambda req, ctx, rng=rng: rng.choice("ABCD") + "." if req.task_name == "toy_arc_gen"
            else f"So the answer is:\n#### {rng.randrange(100)}",
        )
        record = _run(lm, suite, tmp_path / f"s{seed}", monkeypatch)
        for key, row in record["tasks"].items():
            totals[key] += row["value"] * row["n"]
            counts[key] += row["n"]
    for key, p in chance.items():
        observed = totals[key] / counts[key]
        sigma = math.sqrt(max(p * (1 - p), 0.01) / counts[key])  # binomial spread of the pooled items
        print(f"{key}: random {observed:.3f}, chance {p:.3f} (4 sigma = {4 * sigma:.3f})")
        assert abs(observed - p) < 4 * sigma, (key, observed, p)


def test_rendered_yamls_are_absolute_and_carry_the_shot_counts(suite, tmp_path):
    from ift.evaluate.suites import render_toy_tasks

    out = render_toy_tasks(suite, tmp_path / "tasks")
    for spec in suite.tasks:
        text = (out / f"{spec.key}.yaml").read_text()
        assert "@" not in re.sub(r"#.*", "", text), "unrendered placeholder"
        assert f"num_fewshot: {spec.num_fewshot}" in text
        for path in re.findall(r'"(/[^"]+\.(?:jsonl|yaml|_yaml))"', text):
            assert Path(path).is_absolute() and Path(path).exists(), path
        assert "include:" in text  # lm-eval's own task definition underneath


def test_too_many_shots_for_the_pool_fails_before_running(tiny_world, tmp_path):
    from ift.evaluate.suites import SuiteError, render_toy_tasks, suite_from_config

    cfg = compose(["profile=tiny", f"paths.world={tiny_world}", "suite.tasks.gsm8k.num_fewshot=1000"])
    bad = suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True))
    with pytest.raises(SuiteError, match="gsm8k.*pool"):
        render_toy_tasks(bad, tmp_path / "tasks")


# MMLU leaves of a registry-shaped result: (accuracy, stderr, items). lm-eval's group value weighs them by size.
MMLU_LEAVES = {"mmlu_anatomy": (0.3, 0.04, 135), "mmlu_virology": (0.6, 0.03, 166), "mmlu_nutrition": (0.9, 0.02, 306)}
MMLU_BY_SIZE = sum(acc * n for acc, _, n in MMLU_LEAVES.values()) / sum(n for _, _, n in MMLU_LEAVES.values())


def _registry_results(suite):
    """An lm-eval results dict shaped like a registry run of ``suite`` (MMLU as a group of groups)."""
    values = {"arc_challenge": 0.6, "arc_challenge_gen": 0.1, "mmlu": MMLU_BY_SIZE, "truthfulqa_mc2": 0.4,
              "winogrande": 0.7, "gsm8k": 0.2}
    results = {"results": {}, "n-samples": {}, "n-shot": {},
               "group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_other"], "mmlu_stem": ["mmlu_anatomy"],
                                  "mmlu_other": ["mmlu_virology", "mmlu_nutrition"]}}
    for spec in suite.tasks:
        results["results"][spec.lm_eval_task] = {spec.result_key: values[spec.lm_eval_task],
                                                 f"{spec.metric}_stderr,{spec.filter}": "N/A"}
        if spec.key != "mmlu":
            results["n-samples"][spec.lm_eval_task] = {"effective": 100, "original": 100}
            results["n-shot"][spec.lm_eval_task] = spec.num_fewshot
    for leaf, (acc, stderr, n) in MMLU_LEAVES.items():
        results["results"][leaf] = {"acc,none": acc, "acc_stderr,none": stderr}
        results["n-samples"][leaf] = {"effective": n, "original": n}
    return results


def test_paper_mmlu_is_the_unweighted_mean_of_its_subjects_like_the_open_llm_leaderboard():
    """suite=openllm reports MMLU as the mean over subjects (leaderboard v1), not lm-eval's size-weighted group."""
    import math

    from ift.evaluate.leaderboard import summarize
    from ift.evaluate.suites import SuiteError, suite_from_config

    openllm = suite_from_config(OmegaConf.to_container(compose(["profile=paper"]).suite, resolve=True))
    row = summarize(_registry_results(openllm), openllm)["tasks"]["mmlu"]
    assert row["value"] == pytest.approx((0.3 + 0.6 + 0.9) / 3) and MMLU_BY_SIZE == pytest.approx(0.6845, abs=1e-4)
    assert row["stderr"] == pytest.approx(math.sqrt(0.04**2 + 0.03**2 + 0.02**2) / 3)
    assert row["n"] == 135 + 166 + 306

    weighted = suite_from_config(OmegaConf.to_container(
        compose(["profile=paper", "suite.tasks.mmlu.subtask_mean=false"]).suite, resolve=True))
    assert summarize(_registry_results(weighted), weighted)["tasks"]["mmlu"]["value"] == pytest.approx(MMLU_BY_SIZE)

    missing = _registry_results(openllm)
    del missing["results"]["mmlu_virology"]["acc,none"]
    with pytest.raises(KeyError, match="mmlu_virology"):
        summarize(missing, openllm)
    with pytest.raises(SuiteError, match="subtask_mean"):
        suite_from_config(OmegaConf.to_container(
            compose(["profile=paper", "suite.tasks.mmlu.subtask_mean=maybe"]).suite, resolve=True))


def test_summary_reads_groups_and_averages_the_five():
    """The flat table from an lm-eval results dict shaped like a registry run (MMLU as a group of groups)."""
    from ift.evaluate.leaderboard import summarize
    from ift.evaluate.suites import TaskSpec, suite_from_config

    openllm = suite_from_config(OmegaConf.to_container(compose(["profile=paper"]).suite, resolve=True))
    table = summarize(_registry_results(openllm), openllm)
    assert table["tasks"]["mmlu"]["n"] == 135 + 166 + 306
    assert table["tasks"]["mmlu"]["num_fewshot"] == 5
    assert table["tasks"]["arc"]["stderr"] is None
    assert table["avg"] == pytest.approx((0.6 + 0.6 + 0.4 + 0.7 + 0.2) / 5)  # MMLU's subject mean; ARC-Gen left out
    assert isinstance(openllm.task("gsm8k"), TaskSpec)


@pytest.mark.parametrize("suite_default", [True, False])
def test_each_task_is_prompted_in_its_own_format(tiny_world, world_tokenizer, tmp_path, monkeypatch, suite_default):
    """A task's chat_template (the suite's unless the task sets one; toy WinoGrande: false) decides its prompts: the
    model's chat template with few-shot examples as turns, or plain text. leaderboard.json records it per task."""
    from ift.evaluate.suites import suite_from_config

    cfg = compose(["profile=tiny", f"paths.world={tiny_world}", f"suite.chat_template={str(suite_default).lower()}"])
    toy = suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True))
    expected = {spec.lm_eval_task: spec.chat_template for spec in toy.tasks}
    assert expected["toy_winogrande"] is False
    assert all(v is suite_default for task, v in expected.items() if task != "toy_winogrande")
    contexts: dict[str, list[str]] = {}

    def note_ll(req, ctx, cont):
        contexts.setdefault(req.task_name, []).append(ctx)
        return (0.0, False)

    def note_gen(req, ctx):
        contexts.setdefault(req.task_name, []).append(ctx)
        return "A."

    record = _run(make_fake_lm(world_tokenizer, note_ll, note_gen), toy, tmp_path, monkeypatch)
    assert set(contexts) == set(expected)
    for task, prompts in contexts.items():
        # MMLU's description line becomes the system turn
        templated = [p for p in prompts
                     if p.startswith(("<|system|>\n", "<|user|>\n")) and p.endswith("<|assistant|>\n")]
        plain = [p for p in prompts if "<|user|>" not in p and "</s>" not in p]
        assert len(templated if expected[task] else plain) == len(prompts), (task, prompts[0])
    for spec in toy.tasks:
        assert record["tasks"][spec.key]["chat_template"] is spec.chat_template


@pytest.mark.parametrize("value", ["yes", "1", "null"])
def test_suite_chat_template_must_be_a_boolean(tiny_world, value):
    from ift.evaluate.suites import SuiteError, suite_from_config

    for where in ("suite.chat_template", "suite.tasks.arc.chat_template"):
        cfg = compose(["profile=tiny", f"paths.world={tiny_world}", f"+{where}={value}" if "tasks" in where
                       else f"{where}={value}"])
        with pytest.raises(SuiteError, match=where.replace(".", r"\.")):
            suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True))


def test_paper_suite_uses_the_chat_template_like_the_papers_evaluation():
    from ift.evaluate.suites import suite_from_config

    openllm = suite_from_config(OmegaConf.to_container(compose(["profile=paper"]).suite, resolve=True))
    toy = suite_from_config(OmegaConf.to_container(compose(["profile=tiny"]).suite, resolve=True))
    assert {spec.chat_template for spec in openllm.tasks} == {True}
    plain = suite_from_config(OmegaConf.to_container(
        compose(["profile=paper", "suite.chat_template=false"]).suite, resolve=True))
    assert {spec.chat_template for spec in plain.tasks} == {False}  # the leaderboard's own plain-text protocol
    assert {spec.key for spec in toy.tasks if not spec.chat_template} == {"winogrande"}


def test_generation_tasks_are_split_off_each_call_in_its_own_prompt_format():
    from types import SimpleNamespace

    from ift.evaluate.leaderboard import split_generation_calls

    index = {"arc": SimpleNamespace(cfg={"output_type": "multiple_choice"}),
             "arc_gen": SimpleNamespace(cfg={"output_type": "generate_until"}),
             "gsm8k": SimpleNamespace(cfg={"output_type": "generate_until"}),
             "mmlu": SimpleNamespace(cfg={"group": "mmlu", "task": ["mmlu_stem"]}),  # a group: stays
             "bare": SimpleNamespace(cfg=None)}
    manager = SimpleNamespace(task_index=index)
    calls = [(25, True, ["arc", "arc_gen"]), (5, True, ["mmlu", "gsm8k", "bare", "unknown"]), (0, False, ["gsm8k"])]
    likelihood, generation = split_generation_calls(calls, manager)
    assert likelihood == [(25, True, ["arc"]), (5, True, ["mmlu", "bare", "unknown"])]
    assert generation == [(25, True, ["arc_gen"]), (5, True, ["gsm8k"]), (0, False, ["gsm8k"])]


def test_make_lm_drops_only_lm_evals_passed_model_notices(caplog):
    """lm-eval warns twice whenever it is handed a loaded model (how every evaluation here calls it); make_lm drops
    exactly those records while building the LM and leaves the logger as it found it."""
    import logging

    from ift.evaluate.leaderboard import PASSED_MODEL_WARNINGS, make_lm
    from tiny_lm import tiny_model, tiny_tokenizer

    logger = logging.getLogger("lm_eval.models.huggingface")
    tokenizer = tiny_tokenizer()
    with caplog.at_level(logging.WARNING, logger="lm_eval.models.huggingface"):
        lm = make_lm(tiny_model(tokenizer), tokenizer, batch_size=2)
        logger.warning("`pretrained` model kwarg is not of type `str` (after make_lm: kept)")
    assert lm.truncated == {"loglikelihood": 0, "generate_until": 0}
    messages = [record.getMessage() for record in caplog.records if record.name == logger.name]
    assert messages == ["`pretrained` model kwarg is not of type `str` (after make_lm: kept)"]
    assert not logger.filters
    assert all(isinstance(prefix, str) for prefix in PASSED_MODEL_WARNINGS)
