"""Do two output trees hold the same results? Every file byte for byte, except JSON, compared value by value with the
wall-clock fields left out.

    python scripts/compare_outputs.py OLD_DIR NEW_DIR [--volatile KEY ...]

A refactor or a speed change must reproduce every ``model.safetensors`` byte for byte and every number: copy
``outputs/`` aside (``cp -al outputs /tmp/before``), rerun, and compare. Exit status 0 only when nothing but the
volatile fields differs; the differences are listed (a few per file) and counted, and the volatile fields that did
differ are counted too, so a reader sees what was left out of the comparison.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

# What a rerun cannot reproduce: wall-clock durations, rates and dates (train_metrics.json, transformers' log
# history, leaderboard.json's lm-eval record, alpaca.json, alpaca-eval's annotations), and lm-eval's record of where
# it read each task's YAML (a temporary directory) and of the checkout's commit.
VOLATILE_KEYS = frozenset({
    "seconds", "generation_seconds", "train_seconds", "tokens_per_second", "train_runtime",
    "train_samples_per_second", "train_steps_per_second", "train_tokens_per_second", "date", "preference_date",
    "total_evaluation_time_seconds", "start_time", "end_time", "config_source", "git_hash",
})
# A Python object's repr carries its memory address (lm-eval records task functions as '<function f at 0x7f...>').
ADDRESS = re.compile(r" at 0x[0-9a-f]+>")


def json_differences(old, new, volatile: frozenset[str], path: str = "$", skipped: Counter | None = None):
    """The paths where two parsed JSON values differ, ignoring dict keys in ``volatile`` (counted in ``skipped``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            where = f"{path}.{key}"
            if key in volatile:
                if skipped is not None and old.get(key) != new.get(key):
                    skipped[key] += 1
                continue
            if key not in old or key not in new:
                yield f"{where}: only in {'new' if key not in old else 'old'}"
            else:
                yield from json_differences(old[key], new[key], volatile, where, skipped)
    elif isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            yield f"{path}: {len(old)} items against {len(new)}"
        for index, (a, b) in enumerate(zip(old, new)):
            yield from json_differences(a, b, volatile, f"{path}[{index}]", skipped)
    elif isinstance(old, str) and isinstance(new, str) and ADDRESS.sub(">", old) == ADDRESS.sub(">", new):
        return
    elif type(old) is not type(new) or old != new:
        if not (isinstance(old, float) and isinstance(new, float) and old != old and new != new):  # NaN == NaN
            yield f"{path}: {old!r} -> {new!r}"


def compare_trees(old_root: Path, new_root: Path, volatile: frozenset[str] = VOLATILE_KEYS):
    """(differences {relative path: [what differs]}, the files compared, volatile fields that differed)."""
    files = {p.relative_to(old_root) for p in old_root.rglob("*") if p.is_file()}
    files |= {p.relative_to(new_root) for p in new_root.rglob("*") if p.is_file()}
    differences: dict[str, list[str]] = {}
    skipped: Counter = Counter()
    files = sorted(files)
    for rel in files:
        old, new = old_root / rel, new_root / rel
        if not old.is_file() or not new.is_file():
            differences[str(rel)] = [f"only in {'new' if not old.is_file() else 'old'}"]
            continue
        if rel.suffix == ".json":
            try:
                found = list(json_differences(json.loads(old.read_text()), json.loads(new.read_text()), volatile,
                                              skipped=skipped))
            except json.JSONDecodeError as error:
                found = [f"not valid JSON: {error}"]
        else:
            found = [] if old.read_bytes() == new.read_bytes() else ["bytes differ"]
        if found:
            differences[str(rel)] = found
    return differences, files, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--volatile", nargs="*", default=sorted(VOLATILE_KEYS),
                        help="JSON keys left out of the comparison (default: the wall-clock fields)")
    args = parser.parse_args(argv)
    for root in (args.old, args.new):
        if not root.is_dir():
            parser.error(f"{root} is not a directory")
    differences, files, skipped = compare_trees(args.old, args.new, frozenset(args.volatile))
    for rel, found in differences.items():
        print(f"DIFFERS {rel}: " + "; ".join(found[:3]) + (f"; ... {len(found) - 3} more" if len(found) > 3 else ""))
    weights = sum(1 for rel in files if rel.suffix == ".safetensors")
    print(f"{len(files)} files compared ({weights} weight files), {len(differences)} differ; volatile fields that "
          f"differed (left out): {dict(sorted(skipped.items())) or 'none'}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
