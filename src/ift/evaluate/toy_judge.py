"""The miniature world's judge as an alpaca-eval annotator.

alpaca-eval annotates through an annotator config (a ``configs.yaml`` naming a prompt template, a completion
function and a parser). Ours keeps alpaca-eval's machinery (pairing, seeded random order of the two outputs, tie on
identical outputs, parsing, metrics) and swaps the LLM call for a Python function: the prompt template packs the
instruction and both outputs, :func:`toy_judge_completions` unpacks them and returns
``ift.world.judge.judge(key, output_1, output_2)`` (1.0, 2.0 or 1.5) as the completion text, which alpaca-eval's
``eval_parser`` turns back into the preference. alpaca-eval's ``huggingface_local_completions`` is broken with
transformers 5, and an LLM judge would not know the world anyway.

The function cannot be named in the YAML (alpaca-eval only resolves its own decoder names), so the config
omits ``fn_completions`` and the function is passed to ``alpaca_eval.evaluate`` as an annotator keyword argument.
The config is written at run time into a scratch directory, never into the package or the results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import yaml

TOY_ANNOTATOR = "toy_world_judge"
# Between the three fields of the prompt. Any single character could come out of a (random, byte-level) model;
# this 34-character sentinel cannot in practice, and a prompt that does not split in three is an error.
SEPARATOR = "\x1e<<ift-toy-judge-field-break>>\x1e"
PROMPT_TEMPLATE = SEPARATOR.join(["{instruction}", "{output_1}", "{output_2}"])
ANNOTATOR_CONFIG = {
    TOY_ANNOTATOR: {
        "prompt_template": f"{TOY_ANNOTATOR}/prompt.txt",
        "fn_completion_parser": "eval_parser",  # "1.5" -> [1.5]
        "batch_size": 1,
        "is_randomize_output_order": True,      # alpaca-eval's default; the judge is symmetric anyway
        "pretty_name": "Miniature-world programmatic judge",
    }
}


def split_prompt(prompt: str) -> tuple[str, str, str]:
    parts = prompt.split(SEPARATOR)
    if len(parts) != 3:
        raise ValueError(f"toy judge prompt must hold instruction, output_1, output_2; got {len(parts)} parts")
    return parts[0], parts[1], parts[2]


def toy_judge_completions(prompts: Sequence[str], *, answer_key: Mapping[str, Mapping[str, Any]],
                          **_unused) -> dict[str, list]:
    """alpaca-eval ``fn_completions``: one preference per prompt, as text ("1.0", "2.0" or "1.5")."""
    from ift.world.judge import judge

    completions = []
    for prompt in prompts:
        instruction, output_1, output_2 = split_prompt(prompt)
        if instruction not in answer_key:
            raise KeyError(f"no answer key for instruction {instruction[:80]!r}: is the world out of date?")
        completions.append(repr(float(judge(answer_key[instruction], output_1, output_2))))
    zeros = [0.0] * len(completions)
    return {"completions": completions, "price_per_example": zeros, "time_per_example": zeros}


def load_answer_key(path: str | Path) -> dict[str, dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_annotator_config(directory: Path) -> Path:
    """Write ``<directory>/toy_world_judge/{configs.yaml,prompt.txt}``; return the config file's path."""
    folder = directory / TOY_ANNOTATOR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompt.txt").write_text(PROMPT_TEMPLATE, encoding="utf-8")
    config = folder / "configs.yaml"
    config.write_text(yaml.safe_dump(ANNOTATOR_CONFIG, sort_keys=False), encoding="utf-8")
    return config


def toy_annotator(answer_key_path: str | Path, directory: Path) -> tuple[Path, dict[str, Any]]:
    """(annotators_config path, keyword arguments for ``alpaca_eval.evaluate``) for the world's judge."""
    answer_key = load_answer_key(answer_key_path)
    return write_annotator_config(directory), {
        "fn_completions": partial(toy_judge_completions, answer_key=answer_key),
    }
