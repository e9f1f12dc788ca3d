"""The start-point stages on the smoke profile: real world, real pretraining, real TRL SFT, real measurements."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import compose
from ift.checkpoints import CheckpointError, check_checkpoint_dir, load_causal_lm

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke_pipeline")]


def test_base_is_a_complete_checkpoint_whose_loss_fell(smoke_root):
    base = smoke_root / "outputs" / "models" / "base"
    check_checkpoint_dir(base)
    model, tokenizer = load_causal_lm(base)
    assert model.config.model_type == "mistral" and not model.config.tie_word_embeddings
    assert tokenizer.chat_template and "generation" in tokenizer.chat_template
    metrics = json.loads((base / "train_metrics.json").read_text())
    losses = [loss for _, loss in metrics["loss_curve"]]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert metrics["steps"] > 0 and metrics["tokens_seen"] > 0


def test_sft_beta_quality_report_is_measured_and_consistent(smoke_root):
    quality = json.loads((smoke_root / "outputs" / "models" / "sft_beta" / "quality.json").read_text())
    vocab = len(load_causal_lm(smoke_root / "outputs" / "models" / "sft_beta")[1])
    assert quality["uniform_guess_loss"] == pytest.approx(math.log(vocab))
    # even a briefly pretrained model beats guessing uniformly over the vocabulary
    assert quality["base"]["heldout_pretrain_loss"] < quality["uniform_guess_loss"]
    for name in ("base", "sft_beta"):
        entry = quality[name]
        assert 0.0 <= entry["wellformed_fraction"] <= 1.0 and 0.0 <= entry["gsm8k_exact_match"] <= 1.0
        assert entry["n_chat_prompts"] > 0 and entry["n_gsm8k"] > 0
    assert set(quality["bar"]) == {"sft_beta_wellformed_min", "sft_beta_wellformed_ok",
                                   "sft_beta_exact_match_above_base"}
    for name in ("base", "sft_beta"):
        recall = quality[name]["fact_recall"]
        assert set(recall) == {"train", "heldout"}
        for group in recall.values():
            assert set(group) == {"all", "color", "home", "food", "legs"}
            assert all(0.0 <= value <= 1.0 for value in group.values())
        for group in quality[name]["lettered_choice"].values():
            assert group["n"] > 0 and 0.0 <= group["accuracy"] <= 1.0
            assert sum(group["predicted_shares"].values()) == pytest.approx(1.0)
            assert sum(group["gold_shares"].values()) == pytest.approx(1.0)


class _OracleLM(torch.nn.Module):
    """Puts all probability on the next token of whichever of `sentences` the input so far begins: a model that
    knows exactly those sentences (used with the true facts, or with a wrong value for every fact)."""

    def __init__(self, sentences: list[list[int]], vocab: int):
        super().__init__()
        self.sentences, self.vocab = sentences, vocab

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for row, ids in enumerate(input_ids.tolist()):
            for pos in range(len(ids)):
                for sentence in self.sentences:
                    if len(sentence) > pos + 1 and sentence[: pos + 1] == ids[: pos + 1]:
                        logits[row, pos, sentence[pos + 1]] = 30.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("lying", [False, True])
def test_fact_recall_scores_an_oracle_one_and_a_liar_zero(smoke_root, lying):
    from ift.train.quality import fact_recall
    from ift.world.entities import ATTRIBUTE_VALUES
    from ift.world.phrases import FACT_PARAPHRASES

    world_dir = smoke_root / "outputs" / "world"
    tokenizer = load_causal_lm(smoke_root / "outputs" / "models" / "base")[1]
    species = json.loads((world_dir / "world.json").read_text())["species"]
    sentences = []
    for creature in species:
        for attribute, values in ATTRIBUTE_VALUES.items():
            truth = str(creature[attribute])
            value = next(v for v in values if v != truth) if lying else truth
            # the corpus's own first sentence for the fact, written independently of fact_recall's prompt
            text = FACT_PARAPHRASES[attribute][0].format(s=creature["name"], v=value)
            sentences.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    recall = fact_recall(_OracleLM(sentences, len(tokenizer)), tokenizer, world_dir)
    expected = 0.0 if lying else 1.0
    for group in ("train", "heldout"):
        assert recall[group] == {key: expected for key in ("all", "color", "home", "food", "legs")}


class _LetterLM(torch.nn.Module):
    """At the last position, all probability on one letter: the gold one for prompts it was told (an oracle), else
    on ``default`` (a model that always answers the same letter)."""

    def __init__(self, gold: dict[tuple[int, ...], int], default: int, vocab: int):
        super().__init__()
        self.gold, self.default, self.vocab = gold, default, vocab

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for row, ids in enumerate(input_ids.tolist()):
            logits[row, -1, self.gold.get(tuple(ids), self.default)] = 30.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("oracle", [True, False])
def test_lettered_choice_scores_an_oracle_one_and_a_constant_answer_its_gold_share(smoke_root, oracle):
    from ift.train.quality import lettered_choice_accuracy

    world_dir = smoke_root / "outputs" / "world"
    tokenizer = load_causal_lm(smoke_root / "outputs" / "models" / "base")[1]
    letter_id = {letter: tokenizer(letter, add_special_tokens=False)["input_ids"][0] for letter in "ABCD"}
    gold = {}
    if oracle:  # the gold letter of every chat row, read from the rendered conversation itself
        for split in ("train", "test"):
            for line in (world_dir / "chat" / f"{split}.jsonl").read_text().splitlines():
                messages = json.loads(line)["messages"]
                full = tokenizer.apply_chat_template(messages[:2], tokenize=True, return_dict=True)["input_ids"]
                prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"]
                gold[tuple(prompt)] = full[len(prompt)]
    result = lettered_choice_accuracy(_LetterLM(gold, letter_id["A"], len(tokenizer)), tokenizer, world_dir,
                                      n_rows=15)
    for group in ("train", "heldout"):
        assert result[group]["n"] > 0
        if oracle:
            assert result[group]["accuracy"] == 1.0
            assert result[group]["predicted_shares"] == result[group]["gold_shares"]
        else:
            assert result[group]["predicted_shares"]["A"] == 1.0
            assert result[group]["accuracy"] == pytest.approx(result[group]["gold_shares"]["A"])
    assert result["train"]["n"] == 15


def test_lettered_choice_refuses_a_tokenizer_that_splits_letters(tmp_path):
    from ift.train.quality import lettered_choice_accuracy

    def splitting_tokenizer(text, add_special_tokens=False):
        return {"input_ids": [7, 8]}  # every letter as two tokens: "first answer token" would be meaningless

    with pytest.raises(ValueError, match="single-token letters"):
        lettered_choice_accuracy(None, splitting_tokenizer, tmp_path, n_rows=5)


def test_lettered_choice_is_null_where_a_split_has_no_lettered_rows(tmp_path):
    from ift.train.quality import lettered_choice_accuracy

    (tmp_path / "chat").mkdir()
    row = {"messages": [{"role": "user", "content": "What color is the zorbat?"},
                        {"role": "assistant", "content": "The zorbat is red."}]}
    for split in ("train", "test"):
        (tmp_path / "chat" / f"{split}.jsonl").write_text(json.dumps(row) + "\n")

    def one_token_tokenizer(text, add_special_tokens=False):
        return {"input_ids": [ord(text[0])]}

    result = lettered_choice_accuracy(torch.nn.Identity(), one_token_tokenizer, tmp_path, n_rows=5)
    assert result["train"] == result["heldout"] == {"accuracy": None, "n": 0, "predicted_shares": None,
                                                    "gold_shares": None}


def test_sft_beta_without_base_fails_clearly(tmp_path):
    from ift.train.sft_beta import build_sft_beta

    cfg = compose(["profile=smoke", "logger=none"], root=tmp_path)
    with pytest.raises(CheckpointError, match=r"base start point not found.*dvc repro base"):
        build_sft_beta(cfg)


def test_paper_profile_stages_record_the_hub_ids(tmp_path):
    from ift.train.start_points import record_hub_start_point

    cfg = compose(["profile=paper"], root=tmp_path)
    for stage, hub_id in (("base", "mistralai/Mistral-7B-v0.1"), ("sft_beta", "HuggingFaceH4/mistral-7b-sft-beta")):
        record_hub_start_point(cfg, stage)
        assert json.loads((tmp_path / "outputs" / "models" / stage / "hub.json").read_text())["hub_id"] == hub_id


@pytest.mark.parametrize("profile", ["tiny", "smoke", "real"])
def test_every_training_profile_gives_both_start_points_the_lean_head(tmp_path, profile):
    from ift.train.lean_head import LeanOptions
    from ift.train.start_points import RECIPES, lean_options

    cfg = compose([f"profile={profile}"], root=tmp_path)
    assert {stage: lean_options(cfg, stage) for stage in RECIPES} == {stage: LeanOptions(True, 1024)
                                                                      for stage in RECIPES}
    absent = compose([f"profile={profile}", "~trainer.pretrain.memory_efficient", "~trainer.pretrain.chunk_size"],
                     root=tmp_path)
    assert lean_options(absent, "base") == LeanOptions(True, 1024)  # the defaults of ift.methods.lean_head


@pytest.mark.parametrize(("override", "stage"), [
    ("trainer.pretrain.memory_efficient=maybe", "base"),
    ("trainer.pretrain.chunk_size=0", "base"),
    ("trainer.sft_beta.chunk_size=1.5", "sft_beta"),
    ("trainer.sft_beta.memory_efficient=1", "sft_beta"),
])
def test_a_bad_lean_head_key_of_a_start_point_recipe_is_refused_naming_it(tmp_path, override, stage):
    """By start_points.lean_options, and by the stage's entry point before it loads any model or data.

    The entry point runs in its own process, as DVC runs it (Hydra's job logging, set up in-process, would keep
    a handle on the test's captured stream)."""
    import os
    import re
    import subprocess
    import sys

    from ift.methods import ConfigError
    from ift.train.start_points import lean_options

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(key)):
        lean_options(compose(["profile=smoke", override], root=tmp_path), stage)

    # tmp_path has no world: had the stage loaded its data or model before checking the recipe, it would fail
    # on the missing files instead of naming the key.
    proc = subprocess.run([sys.executable, "-m", f"ift.train.{stage}", "profile=smoke", "logger=none", override],
                          env={**os.environ, "IFT_ROOT": str(tmp_path)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and f"{key} must be" in proc.stderr, proc.stderr[-2000:]


def test_base_without_a_world_names_the_missing_tokenizer_and_the_stage_to_run(tmp_path):
    from ift.train.base import build_base

    with pytest.raises(FileNotFoundError, match=r"tokenizer is missing: .*outputs/world/tokenizer.*dvc repro world"):
        build_base(compose(["profile=smoke", "logger=none"], root=tmp_path))
