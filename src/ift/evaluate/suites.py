"""The leaderboard suites: which lm-eval tasks make up a row of the paper's Table 2, and how lm-eval finds them.

Two suites, chosen by ``suite=`` (conf/suite/*.yaml):

* ``openllm`` (paper profile): lm-eval's registry tasks arc_challenge, mmlu, truthfulqa_mc2, winogrande, gsm8k
  plus our ARC-Gen (``tasks/openllm/arc_gen.yaml``, over the same ARC-Challenge data). Registry tasks take their
  shot counts from the ``num_fewshot`` argument of ``simple_evaluate``, so the suite is run as one call per shot
  count (25: ARC, ARC-Gen; 5: MMLU, WinoGrande, GSM8K; 0: TruthfulQA-mc2).
* ``toy`` (tiny and smoke profiles): the same six tasks over the miniature world's task files. Each template in
  ``tasks/toy/`` ``include``s lm-eval's own task YAML (so prompts, metrics and filters are lm-eval's) and swaps the
  data for the world's JSONL files. lm-eval resolves relative ``data_files`` against the working directory, and a
  task whose YAML says ``num_fewshot: 0`` ignores the call's override, so the templates are rendered at run time
  with absolute paths and the suite's shot counts written in (:func:`render_toy_tasks`), then found through
  ``TaskManager(include_path=...)`` without lm-eval's 14k built-in tasks (indexing those takes ~15 s).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # our templates: toy/*.yaml, openllm/arc_gen.yaml
TASK_KEYS = ("arc", "arc_gen", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")  # leaderboard.json "tasks" keys
AVERAGE_KEYS = ("arc", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")  # the paper's Avg leaves out ARC-Gen
SOURCES = ("world", "registry")
# The world's task file each toy task reads its few-shot pool from (ARC-Gen shares ARC's files).
WORLD_FILES = {"arc": "arc", "arc_gen": "arc", "mmlu": "mmlu", "truthfulqa_mc2": "truthfulqa_mc2",
               "winogrande": "winogrande", "gsm8k": "gsm8k"}


class SuiteError(ValueError):
    """A suite config that cannot run (unknown task, too many shots for the pool, missing world files)."""


@dataclass(frozen=True)
class TaskSpec:
    key: str           # our name, a key of leaderboard.json "tasks"
    lm_eval_task: str  # the task (or group) name lm-eval knows it by
    metric: str        # headline metric, e.g. acc_norm
    filter: str        # lm-eval filter the headline metric is read under ("none", "strict-match", "letter")
    num_fewshot: int
    chat_template: bool  # this task's prompt format: the suite's `chat_template` unless the task entry sets its own
    subtask_mean: bool = False  # a group's headline = unweighted mean over its leaf tasks (Open LLM Leaderboard v1's
                                # MMLU), instead of lm-eval's group aggregate (MMLU: weighted by subtask size)

    @property
    def result_key(self) -> str:
        return f"{self.metric},{self.filter}"


@dataclass(frozen=True)
class Suite:
    name: str
    source: str                   # "world": rendered toy templates; "registry": lm-eval's own tasks
    tasks: tuple[TaskSpec, ...]
    average: tuple[str, ...]
    world_tasks: Path | None = None  # the world's tasks/ dir (source "world")

    def task(self, key: str) -> TaskSpec:
        return next(spec for spec in self.tasks if spec.key == key)


def suite_from_config(cfg: Mapping[str, Any]) -> Suite:
    """Build a Suite from ``cfg.suite`` (a plain mapping), checking what can be checked without running."""
    source = str(cfg["source"])
    if source not in SOURCES:
        raise SuiteError(f"suite.source={source!r}: expected one of {SOURCES}")

    def flag(value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise SuiteError(f"{where}={value!r}: expected true or false")
        return value

    default_format = flag(cfg.get("chat_template"), "suite.chat_template")
    tasks = []
    for key, spec in cfg["tasks"].items():
        if key not in TASK_KEYS:
            raise SuiteError(f"suite.tasks.{key}: unknown task; expected keys {TASK_KEYS}")
        shots = int(spec["num_fewshot"])
        if shots < 0:
            raise SuiteError(f"suite.tasks.{key}.num_fewshot={shots} must be >= 0")
        chat_template = flag(spec.get("chat_template", default_format), f"suite.tasks.{key}.chat_template")
        subtask_mean = flag(spec.get("subtask_mean", False), f"suite.tasks.{key}.subtask_mean")
        tasks.append(TaskSpec(key=key, lm_eval_task=str(spec["lm_eval_task"]), metric=str(spec["metric"]),
                              filter=str(spec["filter"]), num_fewshot=shots, chat_template=chat_template,
                              subtask_mean=subtask_mean))
    average = tuple(cfg.get("average") or AVERAGE_KEYS)
    missing = set(average) - {t.key for t in tasks}
    if missing:
        raise SuiteError(f"suite.average names tasks the suite does not run: {sorted(missing)}")
    world_tasks = Path(cfg["world_tasks"]) if cfg.get("world_tasks") else None
    if source == "world" and world_tasks is None:
        raise SuiteError("suite.source=world needs suite.world_tasks (the world's tasks/ directory)")
    return Suite(name=str(cfg["name"]), source=source, tasks=tuple(tasks), average=average, world_tasks=world_tasks)


def lm_eval_tasks_dir() -> Path:
    """lm-eval's own task directory (the toy templates include its YAMLs by absolute path)."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _yaml_path(path: Path) -> str:
    """A path's text escaped for a double-quoted YAML string (JSON escapes are valid YAML escapes)."""
    return json.dumps(str(path))[1:-1]


def _count_rows(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def check_world_files(suite: Suite) -> None:
    """Every toy task's files exist and its few-shot pool holds at least ``num_fewshot`` examples."""
    assert suite.world_tasks is not None
    for spec in suite.tasks:
        folder = suite.world_tasks / WORLD_FILES[spec.key]
        test = folder / "test.jsonl"
        if not test.is_file():
            raise SuiteError(f"{spec.key}: {test} not found; generate the world first (python -m ift.world)")
        if spec.num_fewshot:
            train = folder / "train.jsonl"
            pool = _count_rows(train) if train.is_file() else 0
            if pool < spec.num_fewshot:
                raise SuiteError(f"suite.tasks.{spec.key}.num_fewshot={spec.num_fewshot} but the world's few-shot "
                                 f"pool {train} has {pool} examples")


def render_toy_tasks(suite: Suite, out_dir: Path) -> Path:
    """Write the toy task YAMLs with absolute paths and the suite's shot counts into ``out_dir``; return it."""
    check_world_files(suite)
    out_dir.mkdir(parents=True, exist_ok=True)
    replacements = {
        "@LM_EVAL_TASKS@": _yaml_path(lm_eval_tasks_dir()),
        "@IFT_TASKS@": _yaml_path(TASKS_DIR),
        "@WORLD_TASKS@": _yaml_path(suite.world_tasks.resolve()),
    }
    for spec in suite.tasks:
        text = (TASKS_DIR / "toy" / f"{spec.key}.yaml").read_text(encoding="utf-8")
        for placeholder, value in {**replacements, "@NUM_FEWSHOT@": str(spec.num_fewshot)}.items():
            text = text.replace(placeholder, value)
        (out_dir / f"{spec.key}.yaml").write_text(text, encoding="utf-8")
    return out_dir


def task_manager(suite: Suite, work_dir: Path):
    """An lm-eval TaskManager that knows the suite's tasks (toy: only them; openllm: the registry + ARC-Gen)."""
    from lm_eval.tasks import TaskManager

    if suite.source == "world":
        return TaskManager(include_path=str(render_toy_tasks(suite, work_dir / "tasks")), include_defaults=False)
    return TaskManager(include_path=str(TASKS_DIR / "openllm"))


def evaluation_calls(suite: Suite) -> list[tuple[int | None, bool, list[str]]]:
    """(num_fewshot argument, chat template or not, task names) for each ``simple_evaluate`` call the suite needs.

    The prompt format is one argument per call, so tasks are grouped by it. Toy tasks carry their shot counts in
    the rendered YAMLs (no override); registry tasks are also grouped by shot count. Groups keep the suite's
    order."""
    groups: dict[tuple[int | None, bool], list[str]] = {}
    for spec in suite.tasks:
        shots = None if suite.source == "world" else spec.num_fewshot
        groups.setdefault((shots, spec.chat_template), []).append(spec.lm_eval_task)
    return [(shots, chat_template, names) for (shots, chat_template), names in groups.items()]
