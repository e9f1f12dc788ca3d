"""`generate_world`: build every file of the miniature world from one config, atomically.

A pure function of its config: each artifact draws from its own string-seeded random stream, so same
config => byte-identical files, and changing one size does not reshuffle unrelated files. Every item is
measured with the trained tokenizer; generation fails if one would not fit `max_length` tokens.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from ift.io import atomic_directory
from ift.world.arithmetic import heldout_pairs
from ift.world.chat import chat_rows
from ift.world.corpus import corpus_documents
from ift.world.entities import World, build_world
from ift.world.instructions import alpaca_eval_set
from ift.world.prefs import prefs_rows
from ift.world.qa import ITEM_KIND_WEIGHTS, distinct_items
from ift.world.side import make_sides
from ift.world.storage import relative_files, sha256_file, write_json, write_jsonl
from ift.world.tasks import TASKS, task_split
from ift.world.tokenizer import render_chat, train_tokenizer

WORLD_VERSION = "1.3"
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 1234,
    "n_species": 48,
    "heldout_fraction": 0.5,
    "myth_fraction": 0.25,
    "n_fewshot_species": 6,
    "max_operand": 9,
    "max_factor": 9,
    "heldout_pair_fraction": 0.2,
    "corpus": {"train_docs": 9000, "valid_docs": 450},
    "chat": {"train": 4000, "test": 200, "two_turn_fraction": 0.4},
    "prefs": {"train": 3000, "test": 200},
    "tasks": {
        "test": {"arc": 200, "mmlu": 200, "truthfulqa_mc2": 150, "winogrande": 200, "gsm8k": 150},
        "fewshot": 25,
    },
    "alpaca": {"eval": 128, "reference_wrong_rate": 0.2, "reference_verbose_rate": 0.2},
    "tokenizer": {"vocab_size": 2048},
    "max_length": 256,
}


def resolve_config(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """DEFAULT_CONFIG updated by `overrides`, recursively; an unknown key is an error (a typo in a size
    would otherwise silently use the default)."""

    def merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> dict[str, Any]:
        for key, value in update.items():
            if key not in base:
                raise KeyError(f"unknown world config key {where}{key!r}")
            is_node = isinstance(base[key], dict)
            base[key] = merge(base[key], value, f"{where}{key}.") if is_node else value
        return base

    return merge(copy.deepcopy(DEFAULT_CONFIG), overrides, "")


def _stream(config: Mapping[str, Any], name: str) -> random.Random:
    return random.Random(f"{config['seed']}:{name}")


def world_description(world: World, pairs: frozenset[tuple[int, int]]) -> dict[str, Any]:
    """world.json: every species with its facts and split, and the held-out operand pairs."""
    return {
        "species": [
            {
                "name": s.name,
                **s.facts(),
                "myth_color": s.myth_color,
                "heldout": s.heldout,
                "fewshot": s.fewshot,
            }
            for s in world.species
        ],
        "heldout_pairs": [list(p) for p in sorted(pairs)],
    }


def _strings(value: Any) -> list[str]:
    """All strings inside a JSON-like value (to bound a task row's length by all its text)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def item_texts(relative_path: str, rows: list[Any]) -> list[str]:
    """Each item of a file as the model would see it: plain documents get bos/eos, chat items the chat
    template; a task row is bounded by putting all its text in one conversation."""
    if relative_path.startswith("corpus/"):
        return [f"<s>{row['text']}</s>" for row in rows]
    if relative_path.startswith("chat/"):
        return [render_chat(row["messages"]) for row in rows]
    if relative_path.startswith("prefs/"):
        return [render_chat(row[side]) for row in rows for side in ("chosen", "rejected")]
    if relative_path.startswith("alpaca/"):
        return [
            render_chat(
                [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
            )
            for r in rows
        ]
    return [
        render_chat(
            [{"role": "user", "content": "\n".join(_strings(row))}, {"role": "assistant", "content": "A"}]
        )
        for row in rows
    ]


def _build_files(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(relative path -> rows for the data files, relative path -> JSON value for the other files)."""
    world = build_world(
        config["seed"],
        config["n_species"],
        config["heldout_fraction"],
        config["myth_fraction"],
        config["n_fewshot_species"],
    )
    pairs = heldout_pairs(config["seed"], config["max_operand"], config["heldout_pair_fraction"])
    sides = make_sides(world, pairs, config["max_operand"], config["max_factor"])
    corpus_cfg, chat_cfg, prefs_cfg = config["corpus"], config["chat"], config["prefs"]
    files: dict[str, Any] = {}
    for split in ("train", "valid"):
        documents = corpus_documents(_stream(config, f"corpus-{split}"), sides, corpus_cfg[f"{split}_docs"])
        files[f"corpus/{split}.jsonl"] = [{"text": d} for d in documents]
    for split, side in (("train", "train"), ("test", "eval")):
        # One pool of distinct questions dealt at random to chat and prefs: like UltraChat and UltraFeedback,
        # the two sets never share a prompt, yet both get every kind in the same proportions.
        rng = _stream(config, f"items-{split}")
        pool = distinct_items(rng, sides[side], chat_cfg[split] + prefs_cfg[split], ITEM_KIND_WEIGHTS)
        rng.shuffle(pool)
        rows, keys = chat_rows(rng, pool[: chat_cfg[split]], sides[side], chat_cfg["two_turn_fraction"])
        files[f"chat/{split}.jsonl"] = rows
        if split == "test":
            files["chat/test_keys.jsonl"] = keys
        rows, keys = prefs_rows(rng, pool[chat_cfg[split] :])
        files[f"prefs/{split}.jsonl"], files[f"prefs/{split}_keys.jsonl"] = rows, keys
    for task in TASKS:
        for split, side, count in (
            ("train", "task_fewshot", config["tasks"]["fewshot"]),
            ("test", "task_test", config["tasks"]["test"][task]),
        ):
            rng = _stream(config, f"task-{task}-{split}")
            files[f"tasks/{task}/{split}.jsonl"] = task_split(rng, task, sides[side], count, split)
    alpaca_cfg = config["alpaca"]
    alpaca_rows, answer_key = alpaca_eval_set(
        _stream(config, "alpaca"),
        sides["eval"],
        alpaca_cfg["eval"],
        alpaca_cfg["reference_wrong_rate"],
        alpaca_cfg["reference_verbose_rate"],
    )
    files["alpaca/eval.json"] = alpaca_rows
    extras = {"alpaca/answer_key.json": answer_key, "world.json": world_description(world, pairs)}
    return files, extras


def _train_side_texts(files: Mapping[str, Any]) -> list[str]:
    """The tokenizer's training text: corpus train, chat train and prefs train only (never eval text)."""
    texts = [row["text"] for row in files["corpus/train.jsonl"]]
    texts += [m["content"] for row in files["chat/train.jsonl"] for m in row["messages"]]
    texts += [m["content"] for row in files["prefs/train.jsonl"] for m in row["chosen"] + row["rejected"][1:]]
    return texts


def _max_tokens(
    tokenizer: PreTrainedTokenizerFast, files: Mapping[str, Any], max_length: int
) -> dict[str, int]:
    """Longest item of each data file in tokens; raises if any exceeds max_length."""
    longest = {}
    for path, rows in files.items():
        if path.endswith("_keys.jsonl") or not rows:
            continue
        longest[path] = max(
            len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(item_texts(path, rows))
        )
    too_long = {p: n for p, n in longest.items() if n > max_length}
    if too_long:
        raise ValueError(f"items longer than max_length={max_length} tokens: {too_long}")
    return longest


def generate_world(world_cfg: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Generate the whole world into `out_dir` (replacing it atomically) and return the manifest."""
    config = resolve_config(world_cfg)
    files, extras = _build_files(config)
    tokenizer = train_tokenizer(
        _train_side_texts(files), config["tokenizer"]["vocab_size"], config["max_length"]
    )
    max_tokens = _max_tokens(tokenizer, files, config["max_length"])
    corpus_tokens = {
        split: sum(len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch([r["text"] for r in rows]))
        for split, rows in (("train", files["corpus/train.jsonl"]), ("valid", files["corpus/valid.jsonl"]))
    }
    with atomic_directory(Path(out_dir)) as staging:
        counts: dict[str, int] = {}
        for path, rows in files.items():
            if path.endswith(".jsonl"):
                counts[path] = write_jsonl(staging / path, rows)
            else:
                write_json(staging / path, rows)
                counts[path] = len(rows)
        for path, value in extras.items():
            write_json(staging / path, value)
            counts[path] = len(value) if path != "world.json" else len(value["species"])
        tokenizer.save_pretrained(str(staging / "tokenizer"))
        manifest = {
            "world_version": WORLD_VERSION,
            "seed": config["seed"],
            "config": config,
            "counts": counts,
            "max_tokens": max_tokens,
            "corpus_tokens": corpus_tokens,
            "vocab_size": len(tokenizer),
            "sha256": {p: sha256_file(staging / p) for p in relative_files(staging)},
        }
        write_json(staging / "manifest.json", manifest)  # last: its presence means the world is complete
    return manifest
