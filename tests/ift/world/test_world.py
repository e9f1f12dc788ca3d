"""Tests of the miniature world (ift.world): determinism, no leaks, schemas, tokenizer, judge, sizes.

Everything runs on the smoke sizes of conf/data/toyworld_smoke.yaml. Checks are made against independent
references: answers recomputed from the question text, lm-eval's own regex filter, the real chat template.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ift.world import check_answer, generate_world, gsm8k_extract, judge
from ift.world.arithmetic import heldout_pairs
from ift.world.build import resolve_config
from ift.world.phrases import multiple_choice_prompt
from ift.world.storage import read_jsonl, relative_files
from ift.world.tokenizer import SPECIAL_TOKENS, render_chat, train_tokenizer

REPO = Path(__file__).resolve().parents[3]
CONF = REPO / "conf"
STEP = re.compile(r"\b(\d+) (plus|minus|times) (\d+)\b")


def smoke_config(**changes) -> dict:
    """The `world` node of data=toyworld_smoke, composed as Hydra would (defaults: [toyworld, _self_])."""
    base = OmegaConf.load(CONF / "data" / "toyworld.yaml")
    smoke = OmegaConf.load(CONF / "data" / "toyworld_smoke.yaml")
    data = OmegaConf.merge(base, {k: v for k, v in smoke.items() if k != "defaults"})
    data.world.max_length = data.max_length
    config = OmegaConf.to_container(data.world, resolve=True)
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "world"
    generate_world(smoke_config(), out)
    return out


@pytest.fixture(scope="module")
def tokenizer(world_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(world_dir / "tokenizer"))


@pytest.fixture(scope="module")
def facts(world_dir) -> dict:
    return json.loads((world_dir / "world.json").read_text())


def rows(world_dir: Path, relative: str) -> list[dict]:
    path = world_dir / relative
    return json.loads(path.read_text()) if path.suffix == ".json" else read_jsonl(path)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def species_in(text: str, names: set[str]) -> set[str]:
    """Species named in a text, singular or plural."""
    return {w.removesuffix("s") if w.removesuffix("s") in names else w for w in words(text)} & names


def train_side_texts(world_dir: Path) -> list[str]:
    """Pretraining and fine-tuning text (everything a model may learn from before evaluation)."""
    texts = [r["text"] for r in rows(world_dir, "corpus/train.jsonl") + rows(world_dir, "corpus/valid.jsonl")]
    texts += [m["content"] for r in rows(world_dir, "chat/train.jsonl") for m in r["messages"]]
    texts += [m["content"] for r in rows(world_dir, "prefs/train.jsonl") for m in r["chosen"] + r["rejected"]]
    return texts


# ----------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(world_dir, tmp_path):
    generate_world(smoke_config(), tmp_path / "again")
    generate_world(smoke_config(seed=99), tmp_path / "other")
    files = relative_files(world_dir)
    assert files == relative_files(tmp_path / "again")
    assert "tokenizer/tokenizer.json" in files and "manifest.json" in files
    for name in files:
        assert (world_dir / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for name in ("corpus/train.jsonl", "chat/train.jsonl", "tasks/arc/test.jsonl", "world.json"):
        assert (world_dir / name).read_bytes() != (tmp_path / "other" / name).read_bytes(), name


def test_generation_is_identical_in_a_fresh_process(world_dir, tmp_path):
    """Hash randomisation (Python's or the tokenizer's Rust maps) must not leak into the files."""
    script = (
        "import json, sys; from ift.world import generate_world; "
        "generate_world(json.loads(sys.argv[1]), sys.argv[2])"
    )
    subprocess.run(
        [sys.executable, "-c", script, json.dumps(smoke_config()), str(tmp_path / "fresh")],
        check=True,
        env={
            "PYTHONHASHSEED": "12345",
            "OMP_NUM_THREADS": "1",
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO / "src"),
        },
    )
    for name in relative_files(world_dir):
        assert (world_dir / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name


def test_manifest_lists_every_file_with_its_hash_and_count(world_dir):
    manifest = json.loads((world_dir / "manifest.json").read_text())
    expected = {
        n: hashlib.sha256((world_dir / n).read_bytes()).hexdigest()
        for n in relative_files(world_dir)
        if n != "manifest.json"
    }
    assert manifest["sha256"] == expected
    assert manifest["counts"]["chat/train.jsonl"] == len(rows(world_dir, "chat/train.jsonl")) == 600
    assert manifest["counts"]["alpaca/eval.json"] == len(rows(world_dir, "alpaca/eval.json")) == 32
    assert manifest["seed"] == smoke_config()["seed"] and manifest["world_version"]


def test_an_interrupted_generation_leaves_the_previous_world_untouched(world_dir, tmp_path, monkeypatch):
    import ift.world.build as generate

    out = tmp_path / "world"
    generate_world(smoke_config(corpus={"train_docs": 50, "valid_docs": 5}), out)
    before = {n: (out / n).read_bytes() for n in relative_files(out)}

    def crash(path):
        raise OSError("disk full")

    monkeypatch.setattr(generate, "sha256_file", crash)
    with pytest.raises(OSError, match="disk full"):
        generate_world(smoke_config(seed=7), out)
    assert {n: (out / n).read_bytes() for n in relative_files(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no staging directory left behind


def test_bad_config_is_refused():
    with pytest.raises(KeyError, match="corpus"):
        resolve_config({"corpus": {"train_doc": 5}})
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b c"], vocab_size=100, max_length=64)


# --------------------------------------------------------------------------------------------- leaks


def test_heldout_species_never_reach_fine_tuning_data(world_dir, facts):
    heldout = {s["name"] for s in facts["species"] if s["heldout"]}
    assert len(heldout) == 24
    for name in ("chat/train.jsonl", "prefs/train.jsonl"):
        for row in rows(world_dir, name):
            assert not species_in(json.dumps(row), heldout), row["prompt"]


def test_evaluation_items_use_only_heldout_species(world_dir, facts):
    heldout = {s["name"] for s in facts["species"] if s["heldout"]}
    fewshot = {s["name"] for s in facts["species"] if s["fewshot"]}
    everyone = {s["name"] for s in facts["species"]}
    for task in ("arc", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"):
        for split, allowed in (("train", fewshot), ("test", heldout - fewshot)):
            for row in rows(world_dir, f"tasks/{task}/{split}.jsonl"):
                assert species_in(json.dumps(row), everyone) <= allowed, (task, split, row)
    prompts = [r["prompt"] for r in rows(world_dir, "chat/test.jsonl") + rows(world_dir, "prefs/test.jsonl")]
    prompts += [r["instruction"] for r in rows(world_dir, "alpaca/eval.json")]
    for prompt in prompts:
        assert species_in(prompt, everyone) <= heldout, prompt


def fine_tuning_texts(world_dir: Path) -> list[str]:
    """Every text of the fine-tuning data (chat and preference train), rejected answers included."""
    texts = [m["content"] for r in rows(world_dir, "chat/train.jsonl") for m in r["messages"]]
    texts += [m["content"] for r in rows(world_dir, "prefs/train.jsonl") for m in r["chosen"] + r["rejected"]]
    return texts


def held_out_operations(texts: list[str], pairs: set) -> list[tuple[str, str, str]]:
    return [
        (a, op, b)
        for text in texts
        for a, op, b in STEP.findall(text)
        if tuple(sorted((int(a), int(b)))) in pairs
    ]


def test_heldout_number_pairs_never_appear_as_operands_in_fine_tuning_data(world_dir, facts):
    config = smoke_config()
    pairs = heldout_pairs(config["seed"], config["max_operand"], config["heldout_pair_fraction"])
    assert {tuple(p) for p in facts["heldout_pairs"]} == pairs
    universe = [
        (a, b) for a in range(2, config["max_operand"] + 1) for b in range(a, config["max_operand"] + 1)
    ]
    assert len(pairs) == round(len(universe) * config["heldout_pair_fraction"]) >= 5
    assert all(2 <= a <= b <= config["max_operand"] for a, b in pairs)  # 0 and 1 only make identities
    texts = fine_tuning_texts(world_dir)
    assert sum(len(STEP.findall(text)) for text in texts) > 150
    assert held_out_operations(texts, pairs) == []


def test_corpus_states_heldout_facts_only_as_plain_arithmetic_statements(world_dir, facts):
    """Pretraining may know 5 times 3 (like the held-out species' facts): held-out pairs appear in the corpus,
    but only in plain arithmetic statements, never in a worked word problem (so no corpus text is an
    evaluation item, not even with other names)."""
    pairs = {tuple(p) for p in facts["heldout_pairs"]}
    statement = re.compile(r"(\d+ (plus|minus|times) \d+ is \d+|\d+ is (more|less) than \d+)\.")
    stated = set()
    for document in [r["text"] for r in rows(world_dir, "corpus/train.jsonl")]:
        operations = held_out_operations([document], pairs)
        if not operations:
            continue
        worked, answer, statements = document.rpartition("The answer is")
        if answer:  # a worked word problem, then plain statements
            assert held_out_operations([worked], pairs) == [], document
            statements = statements.split(".", 1)[1]
        assert statement.sub("", statements).strip() == "", document
        stated |= {(int(a), op, int(b)) for a, op, b in operations}
    max_factor = smoke_config()["max_factor"]
    ordered = {(x, y) for a, b in pairs for x, y in ((a, b), (b, a))}
    heldout_facts = {(x, "plus", y) for x, y in ordered}
    heldout_facts |= {(x, "times", y) for x, y in ordered if max(x, y) <= max_factor}
    assert len(stated & heldout_facts) >= 0.9 * len(heldout_facts)  # the smoke corpus states nearly all


def test_every_worked_step_is_a_correct_fact_of_the_arithmetic_table(world_dir):
    from ift.world.arithmetic import Step, in_table

    config = smoke_config()
    texts = [r["text"] for r in rows(world_dir, "corpus/train.jsonl")]
    texts += [m["content"] for r in rows(world_dir, "chat/train.jsonl") for m in r["messages"]]
    texts += [m["content"] for r in rows(world_dir, "prefs/train.jsonl") for m in r["chosen"]]
    texts += [r["answer"] for r in rows(world_dir, "tasks/gsm8k/test.jsonl")]
    steps = [m for text in texts for m in re.findall(r"(\d+) (plus|minus|times) (\d+) is (\d+)", text)]
    assert len(steps) > 3000
    for a, op, b, result in steps:
        step = Step(int(a), op, int(b))
        assert in_table(step, config["max_operand"], config["max_factor"]) and step.result == int(result), (
            step
        )


def test_evaluation_arithmetic_uses_heldout_pairs(world_dir, facts):
    pairs = {tuple(p) for p in facts["heldout_pairs"]}
    keys = [k for k in rows(world_dir, "chat/test_keys.jsonl") if k["kind"] == "arithmetic"]
    keys += [k for k in rows(world_dir, "alpaca/answer_key.json").values() if k["kind"] == "arithmetic"]
    assert keys and all(tuple(sorted((k["a"], k["b"]))) in pairs for k in keys)
    for split in ("train", "test"):
        for row in rows(world_dir, f"tasks/gsm8k/{split}.jsonl"):
            a, _, b = STEP.search(row["answer"]).groups()
            assert tuple(sorted((int(a), int(b)))) in pairs, row["question"]


def test_no_evaluation_item_appears_verbatim_in_training_data(world_dir):
    train_prompts = {
        r["prompt"] for r in rows(world_dir, "chat/train.jsonl") + rows(world_dir, "prefs/train.jsonl")
    }
    corpus = "\n".join(train_side_texts(world_dir))
    items = [r["prompt"] for r in rows(world_dir, "chat/test.jsonl") + rows(world_dir, "prefs/test.jsonl")]
    items += [r["instruction"] for r in rows(world_dir, "alpaca/eval.json")]
    items += [
        multiple_choice_prompt(r["question"], r["choices"]["text"])
        for r in rows(world_dir, "tasks/arc/test.jsonl")
    ]
    items += [
        multiple_choice_prompt(r["question"], r["choices"]) for r in rows(world_dir, "tasks/mmlu/test.jsonl")
    ]
    items += [r["question"] for r in rows(world_dir, "tasks/truthfulqa_mc2/test.jsonl")]
    items += [r["sentence"] for r in rows(world_dir, "tasks/winogrande/test.jsonl")]
    items += [r["question"] for r in rows(world_dir, "tasks/gsm8k/test.jsonl")]
    assert len(items) > 200
    assert [i for i in items if i in train_prompts or i in corpus] == []


def test_task_fewshot_pools_are_disjoint_from_test_items(world_dir):
    for task in ("arc", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"):

        def identity(row):
            return json.dumps({k: v for k, v in row.items() if k != "id"}, sort_keys=True)

        train = {identity(r) for r in rows(world_dir, f"tasks/{task}/train.jsonl")}
        test = [identity(r) for r in rows(world_dir, f"tasks/{task}/test.jsonl")]
        assert len(set(test)) == len(test) == 32 and not train & set(test)


# ------------------------------------------------------------------------------------------ contents


def test_corpus_states_every_fact_and_repeats_myths_more_than_truth(world_dir, facts):
    documents = [r["text"] for r in rows(world_dir, "corpus/train.jsonl")]
    assert all(set(r) == {"text"} for r in rows(world_dir, "corpus/train.jsonl"))
    assert not any("<|" in d or "</s>" in d for d in documents)
    by_species: dict[str, list[str]] = {}
    for document in documents:
        for name in species_in(document, {s["name"] for s in facts["species"]}):
            by_species.setdefault(name, []).append(document)
    for species in facts["species"]:
        mentions = by_species[species["name"]]
        for attribute, suffix in (("home", ""), ("food", ""), ("legs", " legs"), ("weight", " kilograms")):
            assert any(f"{species[attribute]}{suffix}" in d for d in mentions), (species["name"], attribute)
        assert any(re.search(rf"\b{species['color']}\b", d) for d in mentions), species["name"]
        if species["myth_color"]:
            myth = sum(bool(re.search(rf"\b{species['myth_color']}\.", d)) for d in mentions)
            truth = sum(f"{species['color']}, not {species['myth_color']}" in d for d in mentions)
            assert myth > truth > 0, species["name"]


def test_chat_rows_have_the_ultrachat_schema(world_dir):
    for split in ("train", "test"):
        chat = rows(world_dir, f"chat/{split}.jsonl")
        two_turn = 0
        for row in chat:
            assert list(row) == ["prompt", "prompt_id", "messages"]
            assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
            roles = [m["role"] for m in row["messages"]]
            assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) in (2, 4)
            assert row["messages"][0]["content"] == row["prompt"]
            assert all(set(m) == {"role", "content"} and m["content"].strip() for m in row["messages"])
            two_turn += len(roles) == 4
        assert len({r["prompt_id"] for r in chat}) == len(chat)
        assert 0.05 <= two_turn / len(chat) <= 0.3, two_turn / len(chat)
    keys = rows(world_dir, "chat/test_keys.jsonl")
    assert [k["prompt_id"] for k in keys] == [r["prompt_id"] for r in rows(world_dir, "chat/test.jsonl")]


def test_preference_rows_have_the_ultrafeedback_schema(world_dir):
    for split in ("train", "test"):
        prefs = rows(world_dir, f"prefs/{split}.jsonl")
        flaws = {k["rejected_kind"] for k in rows(world_dir, f"prefs/{split}_keys.jsonl")}
        assert flaws == {"wrong_result", "broken_format", "rambling", "misconception"}
        for row in prefs:
            assert list(row) == [
                "prompt",
                "prompt_id",
                "chosen",
                "rejected",
                "messages",
                "score_chosen",
                "score_rejected",
            ]
            assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
            assert row["chosen"][0] == row["rejected"][0] == {"role": "user", "content": row["prompt"]}
            assert (
                [m["role"] for m in row["chosen"]]
                == [m["role"] for m in row["rejected"]]
                == ["user", "assistant"]
            )
            assert row["messages"] == row["chosen"] and row["chosen"] != row["rejected"]
            assert isinstance(row["score_chosen"], float) and isinstance(row["score_rejected"], float)
            assert 1.0 <= row["score_rejected"] < row["score_chosen"] <= 10.0


def test_task_files_have_the_real_dataset_schemas(world_dir):
    for split in ("train", "test"):
        for row in rows(world_dir, f"tasks/arc/{split}.jsonl"):
            assert list(row) == ["id", "question", "choices", "answerKey"] and isinstance(row["id"], str)
            assert row["choices"]["label"] == ["A", "B", "C", "D"] and len(set(row["choices"]["text"])) == 4
            assert row["answerKey"] in row["choices"]["label"]
        for row in rows(world_dir, f"tasks/mmlu/{split}.jsonl"):
            assert list(row) == ["question", "subject", "choices", "answer"]
            assert len(set(row["choices"])) == 4 and row["answer"] in range(4) and type(row["answer"]) is int
        for row in rows(world_dir, f"tasks/truthfulqa_mc2/{split}.jsonl"):
            assert list(row) == ["question", "mc1_targets", "mc2_targets"]
            assert row["mc1_targets"]["labels"] == [1, 0, 0, 0]
            labels = row["mc2_targets"]["labels"]
            assert labels == sorted(labels, reverse=True) and 1 in labels and 0 in labels  # trues first
            assert len(labels) == len(row["mc2_targets"]["choices"])
        for row in rows(world_dir, f"tasks/winogrande/{split}.jsonl"):
            assert list(row) == ["sentence", "option1", "option2", "answer"]
            assert row["sentence"].count("_") == 1 and row["answer"] in ("1", "2")
        for row in rows(world_dir, f"tasks/gsm8k/{split}.jsonl"):
            assert list(row) == ["question", "answer"]


def test_task_answers_are_right_by_the_world_facts(world_dir, facts):
    """Recomputed from world.json, independently of the generators."""
    by_name = {s["name"]: s for s in facts["species"]}
    answer_forms = {  # "The X is red." -> color, ...: the world's sentence answers, parsed here independently
        "color": r"The (\w+) is (\w+)\.",
        "home": r"The (\w+) lives in (\w+)\.",
        "food": r"The (\w+) eats (\w+)\.",
        "legs": r"The (\w+) has (\d+) legs\.",
    }
    for row in rows(world_dir, "tasks/arc/test.jsonl"):
        species = species_in(row["question"], set(by_name))
        assert len(species) == 1, row
        creature = by_name[species.pop()]
        parsed = [
            next((a, m.groups()) for a, form in answer_forms.items() if (m := re.fullmatch(form, c)))
            for c in row["choices"]["text"]
        ]
        attribute = parsed[0][0]
        assert {a for a, _ in parsed} == {attribute} and {name for _, (name, _) in parsed} == {creature["name"]}
        truths = [i for i, (_, (_, value)) in enumerate(parsed) if value == str(creature[attribute])]
        assert truths == [row["choices"]["label"].index(row["answerKey"])], row
        assert not (attribute == "color" and creature["myth_color"]), row  # myths belong to TruthfulQA
    for row in rows(world_dir, "tasks/mmlu/test.jsonl"):
        answer = row["choices"][row["answer"]]
        attribute = row["subject"].removeprefix("creature_")
        named = species_in(row["question"], set(by_name))
        if named:  # "What color is the X?"
            assert str(by_name[named.pop()][attribute]) == answer
        else:  # "Which of these creatures eats fish?"
            holders = [
                c for c in row["choices"] if re.search(rf"\b{by_name[c][attribute]}\b", row["question"])
            ]
            assert holders == [answer], row
    for row in rows(world_dir, "tasks/winogrande/test.jsonl"):  # "Of the X and the Y, the _ lives in Odrel."
        options = (by_name[row["option1"]], by_name[row["option2"]])
        fact = "The _" + row["sentence"].split(" _", 1)[1]
        attribute, (blank, value) = next(
            (a, m.groups()) for a, form in answer_forms.items() if (m := re.fullmatch(form.replace(r"(\w+)", "(_)", 1), fact))
        )
        holders = [str(i + 1) for i, o in enumerate(options) if str(o[attribute]) == value]
        assert holders == [row["answer"]], row  # exactly one of the two creatures holds the fact: the answer
        assert not (attribute == "color" and any(o["myth_color"] for o in options)), row
    for row in rows(world_dir, "tasks/truthfulqa_mc2/test.jsonl"):
        species = by_name[species_in(row["question"], set(by_name)).pop()]
        assert species["myth_color"]
        for choice, label in zip(row["mc2_targets"]["choices"], row["mc2_targets"]["labels"]):
            denial = re.search(r"\bis not (\w+)|It is a myth that the \w+ is (\w+)", choice)
            if denial:  # true exactly when it denies the myth
                truthful = species["myth_color"] in denial.groups()
            else:  # true exactly when the color it asserts is the real one
                truthful = re.search(r"\bis (\w+)", choice).group(1) == species["color"]
            assert truthful == bool(label), choice


def solve_word_problem(question: str) -> int:
    """The answer computed straight from the question text, one regex per story."""
    if m := re.search(r"has (\d+) \w+\. \w+ finds (\d+) more \w+\. Then \w+ gives (\d+)", question):
        a, b, c = map(int, m.groups())
        return a + b - c
    if m := re.search(
        r"has (\d+) baskets\. \w+ gives (\d+) baskets to a \w+\. Each basket holds (\d+)", question
    ):
        a, c, d = map(int, m.groups())
        return (a - c) * d
    if m := re.search(r"feeds (\d+) \w+\. Then (\d+) more \w+ come\. Each \w+ eats (\d+)", question):
        a, b, d = map(int, m.groups())
        return (a + b) * d
    if m := re.search(
        r"sees (\d+) \w+\. Then (\d+) more \w+ arrive\. Then (\d+) \w+ walk away\. Each \w+ has (\d+) legs",
        question,
    ):
        a, b, c, legs = map(int, m.groups())
        return (a + b - c) * legs
    raise AssertionError(f"unknown word problem: {question}")


def test_gsm8k_answers_are_worked_correctly(world_dir, facts):
    legs = {s["name"]: s["legs"] for s in facts["species"]}
    for split in ("train", "test"):
        for row in rows(world_dir, f"tasks/gsm8k/{split}.jsonl"):
            lines = row["answer"].split("\n")
            assert re.fullmatch(r"#### \d+", lines[-1]) and len(lines) >= 3
            assert int(lines[-1][5:]) == solve_word_problem(row["question"])
            for a, op, b, result in re.findall(r"(\d+) (plus|minus|times) (\d+) is (\d+)", row["answer"]):
                assert {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[
                    op
                ] == int(result)
            for name, count in re.findall(r"each (\w+) has (\d+) legs", row["question"], flags=re.I):
                assert legs[name] == int(count)


def test_gsm8k_answers_are_spread_so_a_guess_rarely_scores(world_dir):
    from collections import Counter

    answers = [r["answer"].rsplit("#### ", 1)[1] for r in rows(world_dir, "tasks/gsm8k/test.jsonl")]
    assert Counter(answers).most_common(1)[0][1] <= 0.2 * len(answers) and len(set(answers)) >= 12


def test_worked_solutions_restate_each_quantity_next_to_where_it_is_used(world_dir):
    """Each line restates story sentences word for word, then works one step whose operands are either in
    that line already or results of earlier steps: copying a number never needs a long reach back."""
    solutions = [(r["question"], r["answer"]) for r in rows(world_dir, "tasks/gsm8k/test.jsonl")]
    for row in rows(world_dir, "chat/train.jsonl"):
        if "\n#### " in row["messages"][1]["content"]:
            solutions.append((row["prompt"], row["messages"][1]["content"]))
    assert len(solutions) > 50
    for question, solution in solutions:
        story = [s + "." for s in question.rsplit(". ", 1)[0].split(". ")]
        results: list[int] = []
        restated = []
        for line in solution.split("\n")[:-1]:
            step = re.search(r"(\d+) (plus|minus|times) (\d+) is (\d+)", line)
            before = line[: step.start()]
            restated += [s for s in story if s in before]
            for operand in (step.group(1), step.group(3)):
                assert re.search(rf"\b{operand}\b", before) or int(operand) in results, (line, operand)
            results.append(int(step.group(4)))
        assert restated == story, (question, solution)  # every sentence of the story, once, in order


def test_alpaca_eval_set_has_the_schema_and_an_imperfect_reference(world_dir):
    evaluation, answer_key = rows(world_dir, "alpaca/eval.json"), rows(world_dir, "alpaca/answer_key.json")
    assert all(list(r) == ["instruction", "output", "generator", "dataset"] for r in evaluation)
    assert {r["generator"] for r in evaluation} == {"toy_reference"} and {
        r["dataset"] for r in evaluation
    } == {"toyworld"}
    assert [r["instruction"] for r in evaluation] == list(answer_key)
    checks = [check_answer(answer_key[r["instruction"]], r["output"]) for r in evaluation]
    correct = sum(c["correct"] for c in checks) / len(checks)
    assert 0.6 <= correct < 1.0  # mostly right, sometimes wrong: a good model can beat it
    assert len({r["instruction"].split()[0] for r in evaluation}) >= 5  # mixed kinds


# ------------------------------------------------------------------------------------------- tokenizer


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=80))
def test_tokenizer_round_trips_any_string(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.bos_token_id not in ids or "<s>" in text  # nothing added automatically


def test_tokenizer_splits_digits_and_keeps_special_tokens_whole(tokenizer, world_dir):
    for digit in "0123456789":
        assert len(tokenizer(digit)["input_ids"]) == 1
        assert len(tokenizer(" " + digit)["input_ids"]) == 1  # the word before a number predicts it directly
    ids = tokenizer("in 2024 there were 350 zorbats")["input_ids"]
    digits = [tokenizer.decode([i]) for i in ids if tokenizer.decode([i]).strip().isdigit()]
    assert digits == [" 2", "0", "2", "4", " 3", "5", "0"]
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(6))
    for token in SPECIAL_TOKENS:
        assert tokenizer(token)["input_ids"] == [tokenizer.convert_tokens_to_ids(token)]
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == ("<pad>", "<s>", "</s>")
    manifest = json.loads((world_dir / "manifest.json").read_text())
    # The closed language saturates BPE below the requested 2048: every word is then a single token.
    assert 1000 <= len(tokenizer) == manifest["vocab_size"] <= manifest["config"]["tokenizer"]["vocab_size"]


def test_chat_template_prefix_property_and_python_renderer(tokenizer, world_dir):
    for row in rows(world_dir, "chat/train.jsonl")[:200]:
        messages = row["messages"]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        assert full == render_chat(messages)
        for end in range(1, len(messages), 2):  # every assistant turn
            prompt = tokenizer.apply_chat_template(messages[:end], tokenize=False, add_generation_prompt=True)
            assert tokenizer.apply_chat_template(messages[: end + 1], tokenize=False).startswith(prompt)


def test_assistant_mask_marks_exactly_the_assistant_text_and_eos(tokenizer, world_dir):
    chat = rows(world_dir, "chat/train.jsonl")
    for row in [r for r in chat if len(r["messages"]) == 4][:20] + chat[:40]:
        encoded = tokenizer.apply_chat_template(
            row["messages"], return_assistant_tokens_mask=True, return_dict=True
        )
        spans, current = [], []
        for token, masked in zip(encoded["input_ids"], encoded["assistant_masks"]):
            if masked:
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        spans += [current] if current else []
        expected = [m["content"] + "</s>" for m in row["messages"] if m["role"] == "assistant"]
        assert [tokenizer.decode(span) for span in spans] == expected


def task_items(world_dir: Path) -> list[tuple[str, str]]:
    """Each task item as one (question, answer) exchange: choices shown (ARC-Gen / MMLU layout), and for
    truthfulqa every candidate answer (lm-eval scores each after the question)."""
    items = []
    for row in rows(world_dir, "tasks/arc/test.jsonl"):
        items.append(
            (
                multiple_choice_prompt(row["question"], row["choices"]["text"]),
                "A. " + row["choices"]["text"][0],
            )
        )
    for row in rows(world_dir, "tasks/mmlu/test.jsonl"):
        items.append((multiple_choice_prompt(row["question"], row["choices"]), "A. " + row["choices"][0]))
    for row in rows(world_dir, "tasks/truthfulqa_mc2/test.jsonl"):
        items += [
            (row["question"], choice)
            for choice in row["mc1_targets"]["choices"] + row["mc2_targets"]["choices"]
        ]
    items += [(row["sentence"], row["option1"]) for row in rows(world_dir, "tasks/winogrande/test.jsonl")]
    items += [(row["question"], row["answer"]) for row in rows(world_dir, "tasks/gsm8k/test.jsonl")]
    return items


def test_every_item_fits_max_length_with_the_chat_template(tokenizer, world_dir):
    limit = smoke_config()["max_length"]
    conversations = [
        r["messages"] for r in rows(world_dir, "chat/train.jsonl") + rows(world_dir, "chat/test.jsonl")
    ]
    for split in ("train", "test"):
        conversations += [
            r[s] for r in rows(world_dir, f"prefs/{split}.jsonl") for s in ("chosen", "rejected")
        ]
    conversations += [
        [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
        for r in rows(world_dir, "alpaca/eval.json")
    ]
    for question, answer in task_items(world_dir):
        conversations.append(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        )
    lengths = [
        len(ids) for ids in tokenizer.apply_chat_template(conversations, return_dict=True)["input_ids"]
    ]
    lengths += [
        len(tokenizer("<s>" + r["text"] + "</s>")["input_ids"]) for r in rows(world_dir, "corpus/train.jsonl")
    ]
    assert len(lengths) > 3000 and max(lengths) <= limit, max(lengths)


# ----------------------------------------------------------------------------------------------- judge


def fact_key(**truth) -> dict:
    names = ["zorbat", "milawen"]
    sheets = {
        "zorbat": {"color": "green", "home": "Kelmora", "food": "fish", "legs": 6, "weight": 37},
        "milawen": {"color": "red", "home": "Tavisk", "food": "moss", "legs": 4, "weight": 12},
    }
    return {
        "kind": "fact",
        "species": "zorbat",
        "attribute": "color",
        "truth": "green",
        "facts": {"zorbat": sheets["zorbat"], "milawen": sheets["milawen"]},
        "names": names,
        **truth,
    }


def test_check_answer_reads_claims_the_way_the_world_writes_them():
    key = fact_key()
    assert check_answer(key, "The zorbat is green.") == {"correct": True, "well_formed": True, "n_words": 4}
    assert check_answer(key, "It is green, not red.")["correct"]
    assert not check_answer(key, "The zorbat is red, not green.")["correct"]
    assert not check_answer(key, "People say the zorbat is red.")["correct"]
    assert not check_answer(key, "The zorbat is green. It lives in Tavisk.")["correct"]  # contradicts a fact
    assert check_answer(key, "The zorbat is green and the milawen is red.")["correct"]  # other species' truth
    assert not check_answer(key, "The zorbat is green")["well_formed"]  # cut mid-sentence
    assert not check_answer(key, "The zorbat is green.", ended_at_eos=False)["well_formed"]
    assert not check_answer(key, "The zorbat is green. The zorbat is green.")["well_formed"]
    describe = fact_key(kind="describe")
    assert check_answer(describe, "The zorbat is a green creature from Kelmora. It has 6 legs.")["correct"]
    assert not check_answer(describe, "The zorbat is a green creature. It weighs 40 kilograms.")["correct"]
    arithmetic = {"kind": "arithmetic", "a": 7, "op": "plus", "b": 5, "truth": 12}
    assert check_answer(arithmetic, "7 plus 5 is 12.")["correct"]
    assert not check_answer(arithmetic, "7 plus 5 is 13.")["correct"]
    compare = fact_key(
        kind="compare", relation="heavier", truth="zorbat", heavier="zorbat", lighter="milawen", expected=None
    )
    assert check_answer(compare, "The zorbat weighs 37 kilograms, so the zorbat is heavier.")["correct"]
    assert not check_answer(compare, "The milawen is heavier than the zorbat.")["correct"]
    with pytest.raises(ValueError, match="unknown answer kind"):
        check_answer(fact_key(kind="poem"), "Roses are red.")


def test_gsm8k_extract_agrees_with_lm_eval_strict_match():
    from lm_eval.filters.extraction import RegexFilter

    strict = RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)", group_select=0, fallback="[invalid]")
    texts = [
        "3 plus 4 is 7.\n#### 7",
        "#### -12",
        "#### 1,234.",
        "The answer is 7.",
        "#### 5\n#### 6",
        "####7",
        "",
    ]
    reference = list(strict.apply([texts], [{}]))[0]
    assert [gsm8k_extract(t) or "[invalid]" for t in texts] == reference
    word_problem = {"kind": "word_problem", "truth": 1234}
    assert check_answer(word_problem, "a\n#### 1,234.")["correct"]


def test_judge_ties_identical_outputs_and_applies_the_concision_rule():
    key = fact_key()
    assert judge(key, "The zorbat is green.", "The zorbat is green.") == 1.5
    ten = "The zorbat is green, which is a color I like."  # 10 words
    twelve = "The zorbat is green, which is a color I like a lot."  # 12: not 20% longer
    thirteen = "The zorbat is green, which is a color I like a whole lot."  # 13: more than 20% longer
    assert judge(key, ten, twelve) == judge(key, twelve, ten) == 1.5
    assert (judge(key, ten, thirteen), judge(key, thirteen, ten)) == (1.0, 2.0)
    wrong = "The zorbat is red."
    assert (judge(key, thirteen, wrong), judge(key, wrong, thirteen)) == (1.0, 2.0)  # correctness first
    problem = {"kind": "word_problem", "truth": 8}
    worked, unformatted = (
        "7 plus 1 is 8, so Mira has 8 berries.\n#### 8",
        "7 plus 1 is 8, so Mira has 8 berries.",
    )
    assert (judge(problem, worked, unformatted), judge(problem, unformatted, worked)) == (1.0, 2.0)


def test_judge_prefers_every_chosen_answer_to_its_rejected_one_in_both_orders(world_dir):
    """Across all preference data: the judge agrees with the chosen/rejected labels, symmetrically."""
    for split in ("train", "test"):
        for row, key in zip(
            rows(world_dir, f"prefs/{split}.jsonl"), rows(world_dir, f"prefs/{split}_keys.jsonl")
        ):
            chosen, rejected = row["chosen"][1]["content"], row["rejected"][1]["content"]
            assert check_answer(key, chosen)["correct"] and check_answer(key, chosen)["well_formed"], chosen
            assert (judge(key, chosen, rejected), judge(key, rejected, chosen)) == (1.0, 2.0), (key, rejected)


def test_canonical_chat_answers_pass_their_keys(world_dir):
    for row, key in zip(rows(world_dir, "chat/test.jsonl"), rows(world_dir, "chat/test_keys.jsonl")):
        answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        for answer, turn_key in zip(answers, key["turn_keys"], strict=True):
            result = check_answer(turn_key, answer)
            assert result["correct"] and result["well_formed"], (turn_key["kind"], answer)
        top_level = {k: v for k, v in key.items() if k not in ("prompt_id", "turn_keys")}
        assert top_level == key["turn_keys"][-1]  # grades the answer generated from messages[:-1]


def test_judge_is_fast(world_dir):
    import time

    pairs = [
        (k, r["output"], r["output"] + " I hope this helps.")
        for r, k in zip(
            rows(world_dir, "alpaca/eval.json"), rows(world_dir, "alpaca/answer_key.json").values()
        )
    ]
    started = time.perf_counter()
    for _ in range(10):
        for key, first, second in pairs:
            assert judge(key, first, second) + judge(key, second, first) == 3.0
    assert time.perf_counter() - started < 2.0  # 640 judgements


# ------------------------------------------------------------------------------------------- hydra app


def test_hydra_configs_compose_for_tiny_and_smoke():
    from hydra import compose, initialize_config_dir

    config = OmegaConf.load(CONF / "config.yaml")
    missing = [
        f"{g}/{c}"
        for d in config.defaults
        if isinstance(d, dict)
        for g, c in d.items()
        if not (CONF / g / f"{c}.yaml").exists()
    ]
    if missing:
        pytest.skip(f"config groups not written yet: {missing}")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        for overrides, docs in (([], 9000), (["data=toyworld_smoke"], 2250), (["profile=smoke"], 2250)):
            cfg = compose(config_name="config", overrides=[*overrides, f"paths.root={REPO}"])
            world = OmegaConf.to_container(cfg.data.world, resolve=True)
            assert world["corpus"]["train_docs"] == docs and world["max_length"] == cfg.data.max_length
            assert resolve_config(world)["seed"] == 1234  # every key is known to the generator
            assert cfg.data.chat_train == f"{REPO}/outputs/world/chat/train.jsonl"


def test_arc_and_winogrande_items_skip_myth_species_and_say_when_none_is_left():
    """Color questions (whose corpus answer is mostly the myth for myth species) draw only non-myth species; a side
    of myth species only has no ARC color item: Unavailable, which task_split skips, not a crash."""
    import random
    from dataclasses import replace

    from ift.world.arithmetic import heldout_pairs
    from ift.world.entities import build_world
    from ift.world.multiple_choice import Unavailable, answer_sentences
    from ift.world.side import make_sides

    c = smoke_config()
    world = build_world(c["seed"], c["n_species"], c["heldout_fraction"], c["myth_fraction"], c["n_fewshot_species"])
    side = make_sides(world, heldout_pairs(c["seed"], c["max_operand"], c["heldout_pair_fraction"]),
                      c["max_operand"], c["max_factor"])["task_test"]
    rng = random.Random(0)
    myths = {s.name for s in side.species if s.myth_color}
    assert myths and len(myths) < len(side.species)
    assert not {answer_sentences(rng, side, "color").species[0] for _ in range(200)} & myths
    only_myths = replace(side, species=tuple(s for s in side.species if s.myth_color))
    with pytest.raises(Unavailable, match="myth"):
        answer_sentences(rng, only_myths, "color")
    assert answer_sentences(rng, only_myths, "home").species[0] in myths  # other attributes still work
    from ift.world.tasks import winogrande_row

    lone = replace(side, species=side.species[:1])
    with pytest.raises(Unavailable, match="fewer than two"):
        winogrande_row(rng, lone)

