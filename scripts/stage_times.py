"""Where a `dvc repro`'s time goes, stage by stage: start-up, work, and exit plus DVC's bookkeeping.

    python scripts/stage_times.py --run -- dvc repro        # run it, timestamping every line into stage_times.log
    python scripts/stage_times.py --run -- bash scripts/smoke.sh
    python scripts/stage_times.py stage_times.log           # the table again, from a saved log

Each stage is split at its own output lines (docs/pipeline.md, "Where a stage's time goes"):

* start-up: from DVC's ``Running stage`` to the command's first output line (imports, Hydra, config checks);
* work: from that line to the command's last output line (loading, training or evaluating, saving);
* after: from the last line to the next stage's ``Running stage`` (the process's exit, then DVC hashing the outputs
  and rewriting dvc.lock).

A stage that prints little has a short "work" and a long "start-up"; the split is by output lines, so read it as an
upper bound on start-up. The log's lines are ``<unix time> <text>``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

STAGE_START = "Running stage '"
# Lines DVC prints itself between stages; they are not the command's output.
DVC_LINES = ("Updating lock file", "> ", "Use `dvc push`", "To track the changes", "dvc config core.autostage",
             "git add ", "Stage '")


@dataclass
class Stage:
    name: str
    start: float
    first: float | None = None  # the command's first output line
    last: float | None = None  # the command's last output line
    end: float | None = None  # the next stage's start, or the log's last line

    @property
    def startup(self) -> float:
        return (self.first if self.first is not None else self.end) - self.start

    @property
    def work(self) -> float:
        return self.last - self.first if self.first is not None else 0.0

    @property
    def after(self) -> float:
        return self.end - (self.last if self.last is not None else self.start)

    @property
    def total(self) -> float:
        return self.end - self.start


def parse_log(lines) -> list[Stage]:
    """The stages of a timestamped log, in order."""
    stages: list[Stage] = []
    last_time = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        stamp, _, text = line.rstrip("\n").partition(" ")
        try:
            when = float(stamp)
        except ValueError:
            raise SystemExit(f"line {number}: expected '<unix time> <text>', got {line[:80]!r}") from None
        last_time = when
        text = text.strip()
        if text.startswith(STAGE_START):
            if stages:
                stages[-1].end = when
            stages.append(Stage(name=text[len(STAGE_START):].split("'")[0], start=when))
        elif stages and text and not text.startswith(DVC_LINES):
            stage = stages[-1]
            if stage.first is None:
                stage.first = when
            stage.last = when
    if stages:
        stages[-1].end = last_time
    return stages


def kind(name: str) -> str:
    """``train_chain@ift-base-1`` -> ``train_chain``: stages of one matrix share a kind. The grid's files
    (``grid/cells/dvc.yaml:train@ift-base-0``) are part of the default pipeline, so their prefix is dropped."""
    if name.startswith("grid/"):
        name = name.split(":", 1)[1]
    return name.split("@")[0]


def table(stages: list[Stage]) -> str:
    rows = ["| stage | start-up s | work s | after s | total s |", "|---|---|---|---|---|"]
    rows += [f"| {s.name} | {s.startup:.1f} | {s.work:.1f} | {s.after:.1f} | {s.total:.1f} |" for s in stages]
    groups: dict[str, list[Stage]] = defaultdict(list)
    for stage in stages:
        groups[kind(stage.name)].append(stage)
    rows += ["", "| kind | stages | mean start-up s | mean work s | mean after s | total s |", "|---|---|---|---|---|---|"]
    for name, group in groups.items():
        n = len(group)
        rows.append(f"| {name} | {n} | {sum(s.startup for s in group) / n:.1f} | {sum(s.work for s in group) / n:.1f} "
                    f"| {sum(s.after for s in group) / n:.1f} | {sum(s.total for s in group):.1f} |")
    span = stages[-1].end - stages[0].start if stages else 0.0
    rows.append("")
    rows.append(f"{len(stages)} stages, {span:.0f} s from the first stage's start to the last line: start-up "
                f"{sum(s.startup for s in stages):.0f} s, work {sum(s.work for s in stages):.0f} s, after "
                f"{sum(s.after for s in stages):.0f} s")
    return "\n".join(rows)


def run(command: list[str], log_path: Path) -> int:
    """Run ``command``, echoing its output and writing every line with its time to ``log_path``."""
    with open(log_path, "w") as log, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                        text=True, errors="replace", bufsize=1) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(f"{time.time():.3f} {line}")
            log.flush()
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command: list[str] = []
    if "--run" in argv:  # everything after --run (and an optional --) is the command, whatever its options
        at = argv.index("--run")
        argv, command = argv[:at], argv[at + 1:]
        command = command[1:] if command[:1] == ["--"] else command
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="--run [--] CMD...: run CMD first, writing LOG")
    parser.add_argument("log", nargs="?", type=Path, default=Path("stage_times.log"))
    args = parser.parse_args(argv)
    code = run(command, args.log) if command else 0
    if not args.log.is_file():
        parser.error(f"no log at {args.log}")
    # bytes, then "\n" only: a progress bar's carriage returns stay inside the line that carries its time
    stages = parse_log(args.log.read_bytes().decode("utf-8", "replace").split("\n"))
    if not stages:
        print(f"{args.log}: no 'Running stage' line (was this a dvc repro log?)", file=sys.stderr)
        return code or 1
    print(table(stages))
    return code


if __name__ == "__main__":
    sys.exit(main())
