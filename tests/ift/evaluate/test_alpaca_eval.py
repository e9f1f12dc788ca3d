"""AlpacaEval through alpaca-eval with the world's judge as the annotator, on hand-made outputs, offline.

The expected numbers come from calling ``ift.world.judge.judge`` on each pair directly; alpaca-eval's pairing,
random output order, parsing and win-rate code must reproduce them. The judge's own semantics (identical outputs
draw, correct beats wrong, swapping swaps) are tested in test_world.py.
"""

from __future__ import annotations

import json
import random
import re

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import build_world, compose

PADDING = " I hope this helps you. Let me know if you want to learn more about the creatures of this world."
WORD_PROBLEM_PADDING = "Let us solve this step by step.\n"


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory):
    return build_world("smoke", tmp_path_factory.mktemp("smoke_world") / "world")


def _world_judge_inputs(world):
    references = json.loads((world / "alpaca" / "eval.json").read_text())
    answer_key = json.loads((world / "alpaca" / "answer_key.json").read_text())
    return references, answer_key


def _annotate(outputs, references, answer_key_path, tmp_path):
    from ift.evaluate.alpaca_eval import annotate
    from ift.evaluate.toy_judge import toy_annotator

    config, kwargs = toy_annotator(answer_key_path, tmp_path / "annotators")
    return annotate(outputs, references, annotators_config=config, annotator_kwargs=kwargs)


def _as_model(rows, texts):
    return [{"instruction": r["instruction"], "output": t, "generator": "hand_made"} for r, t in zip(rows, texts)]


def test_references_as_outputs_tie_everywhere(smoke_world, tmp_path, no_network):
    references, _ = _world_judge_inputs(smoke_world)
    row, annotations = _annotate(_as_model(references, [r["output"] for r in references]), references,
                                 smoke_world / "alpaca" / "answer_key.json", tmp_path)
    assert row["win_rate"] == pytest.approx(50.0)
    assert row["n_draws"] == row["n_total"] == len(references)
    assert all(a["preference"] == 1.5 for a in annotations)


def _corrected(reference: str, key: dict) -> str:
    """A better answer than the reference where one is easy to write by hand, else the reference itself:
    a padded (wordy) reference loses its padding; a wrong arithmetic or word-problem result is fixed."""
    if reference.startswith(WORD_PROBLEM_PADDING):
        return reference[len(WORD_PROBLEM_PADDING):]
    if reference.endswith(PADDING):
        return reference[: -len(PADDING)]
    if key["kind"] == "word_problem" and not reference.endswith(f"#### {key['truth']}"):
        return re.sub(r"#### -?\d+$", f"#### {key['truth']}", reference)
    if key["kind"] == "arithmetic" and re.findall(r"-?\d+", reference)[-1] != str(key["truth"]):
        head, _, tail = reference.rpartition(re.findall(r"-?\d+", reference)[-1])
        return f"{head}{key['truth']}{tail}"
    return reference


def test_better_answers_win_exactly_where_the_judge_says(smoke_world, tmp_path, no_network):
    from ift.world.judge import judge

    references, answer_key = _world_judge_inputs(smoke_world)
    texts = [_corrected(r["output"], answer_key[r["instruction"]]) for r in references]
    changed = sum(t != r["output"] for t, r in zip(texts, references))
    assert changed >= 4, "the smoke world should have wordy and wrong references to beat"

    row, annotations = _annotate(_as_model(references, texts), references,
                                 smoke_world / "alpaca" / "answer_key.json", tmp_path)
    expected = [judge(answer_key[r["instruction"]], r["output"], t) for r, t in zip(references, texts)]
    # Unchanged answers tie; a fixed result always wins; a shortened one wins unless it is still within the
    # judge's concision margin (a word problem's padding is one line).
    assert all(p == 1.5 for p, t, r in zip(expected, texts, references) if t == r["output"])
    assert 4 <= expected.count(2.0) <= changed and 1.0 not in expected
    assert row["win_rate"] == pytest.approx(100 * sum(p - 1 for p in expected) / len(expected))
    assert row["win_rate"] > 50.0
    assert (row["n_wins"], row["n_wins_base"]) == (expected.count(2.0), 0)
    by_instruction = {a["instruction"]: a["preference"] for a in annotations}
    assert [by_instruction[r["instruction"]] for r in references] == expected


def test_empty_answers_lose_everything(smoke_world, tmp_path, no_network):
    """An empty answer is neither correct nor well formed: every reference, even a wrong one, beats it."""
    references, _ = _world_judge_inputs(smoke_world)
    row, _ = _annotate(_as_model(references, [""] * len(references)), references,
                       smoke_world / "alpaca" / "answer_key.json", tmp_path)
    assert row["win_rate"] == 0.0 and row["n_wins_base"] == len(references)


def _synthetic_annotations(n: int, seed: int) -> list[dict]:
    """Preferences that favour the longer output, as length-biased judges do."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ref_len, model_len = rng.randint(20, 200), rng.randint(20, 300)
        draw = rng.random()
        preference = 2.0 if (model_len > ref_len and draw < 0.7) or draw < 0.15 else (1.5 if draw > 0.9 else 1.0)
        rows.append({"instruction": f"q{i}", "output_1": "x" * ref_len, "output_2": "y" * model_len,
                     "preference": preference, "generator_1": "reference", "generator_2": "model",
                     "annotator": "toy_world_judge"})
    return rows


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn's notices about alpaca-eval's own call
def test_lc_minimal_is_alpaca_evals_minimal_glm_without_the_download(tmp_path, monkeypatch):
    """Same number as alpaca-eval's own get_length_controlled_winrate(glm_name="length_controlled_minimal"),
    whose hub download (instruction difficulties, unused by that formula) is replaced by a local dummy file."""
    from alpaca_eval.metrics import glm_winrate

    from ift.evaluate.alpaca_eval import lc_win_rate_minimal

    rows = _synthetic_annotations(80, seed=3)
    dummy = tmp_path / "df_gamed.csv"
    pd.DataFrame({"model": "gamed", "index": range(len(rows)), "instruction_difficulty": 0.0}).to_csv(dummy)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda *a, **k: str(dummy))
    official = glm_winrate.get_length_controlled_winrate(pd.DataFrame(rows), glm_name="length_controlled_minimal",
                                                         save_weights_dir=None)
    ours = lc_win_rate_minimal(rows)
    assert ours == pytest.approx(official["length_controlled_winrate"], abs=1e-9)
    assert ours < official["win_rate"]  # the length bias is taken out


def test_lc_minimal_edge_cases():
    from ift.evaluate.alpaca_eval import lc_win_rate_minimal

    rows = _synthetic_annotations(40, seed=1)
    assert lc_win_rate_minimal([dict(r, preference=1.0) for r in rows]) == 0.0    # lost everything
    assert lc_win_rate_minimal([dict(r, preference=2.0) for r in rows]) == 100.0  # won everything
    assert lc_win_rate_minimal(rows[:5]) is None                                  # too few to cross-validate
    same = [dict(r, output_2=r["output_1"]) for r in rows]                        # no length difference at all
    assert lc_win_rate_minimal(same) == pytest.approx(100 * sum(r["preference"] - 1 for r in same) / len(same))


@pytest.mark.parametrize("judge", ["alpaca_eval_2", "alpaca_eval_1"])
def test_paper_judges_resolve_in_alpaca_eval(judge):
    """The GPT-4 annotator configs exist in alpaca-eval and load (prompt, parser, decoder); no call is made."""
    from alpaca_eval.annotators import PairwiseAnnotator

    cfg = compose(["profile=paper", f"judge={judge}"])
    annotator = PairwiseAnnotator(annotators_config=cfg.judge.annotator, caching_path=None)
    assert list(annotator.annotators) == [cfg.judge.annotator]
    assert cfg.judge.references.repo_id == "tatsu-lab/alpaca_eval"
    assert cfg.judge.official_lc is (judge == "alpaca_eval_2")


def test_paper_references_are_read_as_json_not_through_the_dataset_script(tmp_path, monkeypatch):
    import huggingface_hub

    from ift.evaluate.alpaca_eval import load_references

    local = tmp_path / "alpaca_eval_gpt4_baseline.json"
    local.write_text(json.dumps([{"instruction": "Hi", "output": "Hello", "generator": "gpt4_turbo"}]))
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    cfg = compose(["profile=paper"])
    rows = load_references(OmegaConf.to_container(cfg.judge.references))
    assert rows[0]["output"] == "Hello"
    assert calls == [{"repo_id": "tatsu-lab/alpaca_eval", "filename": "alpaca_eval_gpt4_baseline.json",
                      "repo_type": "dataset"}]
