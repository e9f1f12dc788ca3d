"""Every stage's dependencies cover the code it runs: the static import closure of its entry module.

DVC reruns a stage when one of its `deps` changes. A source file the stage imports but does not list (say the
evaluation's `ift.checkpoints`, which attaches the chat template) could change the stage's results without
DVC noticing. The closure follows every `import ift...` / `from ift... import ...` statement, at any depth
(function-level imports included), plus the package `__init__` files Python runs on the way.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
from dvc.repo import Repo

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src"


def module_file(name: str) -> Path | None:
    """The file of module ``name`` under src/ (a package's __init__.py), or None if it is not one of ours."""
    path = SRC.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def imported_modules(path: Path, package: str) -> set[str]:
    """Every ift module ``path`` may import (absolute and relative), with each ``from X import y`` as X and X.y."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name == "ift" or name.startswith("ift.")}


def closure(entry: str) -> set[Path]:
    """Files of every ift module reachable from ``entry`` (its package __init__ files included)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
            file = module_file(".".join(parts[:depth]))
            if file is None or file in seen:
                continue
            seen.add(file)
            package = ".".join(parts[:depth]) if file.name == "__init__.py" else ".".join(parts[: depth - 1])
            todo += sorted(imported_modules(file, package))
    return seen


def stage_entries(cmd: str) -> list[str]:
    """The modules the command's ``python -m`` calls run (a package's ``__main__``): one per call, as in
    ``python -m ift.selection && python -m ift.report ...``."""
    argv = shlex.split(cmd)
    names = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-m"]
    return [f"{name}.__main__" if module_file(name) and module_file(name).name == "__init__.py" else name
            for name in names]


def stage_closure(cmd: str) -> set[Path]:
    """The files of every module the stage's command runs, and of everything they import."""
    return set().union(*(closure(entry) for entry in stage_entries(cmd)))


@pytest.fixture(scope="module")
def stages():
    return list(Repo(str(REPO_ROOT)).index.stages)


def test_closure_follows_function_level_imports():
    files = {str(f.relative_to(SRC)) for f in stage_closure("python -m ift.evaluate out=x")}
    assert "ift/evaluate/__main__.py" in files and "ift/__init__.py" in files
    assert "ift/checkpoints.py" in files  # imported inside a function of ift.evaluate.checkpoint_eval


def test_every_stage_depends_on_every_source_file_it_imports(stages):
    problems = []
    for stage in stages:
        deps = [REPO_ROOT / dep.def_path for dep in stage.deps]
        for file in sorted(stage_closure(stage.cmd)):
            if not any(file == dep or dep in file.parents for dep in deps):
                problems.append(f"{stage.addressing}: {file.relative_to(REPO_ROOT)}")
    assert not problems, "stage imports a file its deps do not cover:\n" + "\n".join(problems)


def test_no_stage_depends_on_source_it_never_imports(stages):
    """A stale dep (code the stage no longer imports) reruns the stage, and everything after it, for nothing."""
    stale = []
    for stage in stages:
        files = stage_closure(stage.cmd)
        for dep in stage.deps:
            path = REPO_ROOT / dep.def_path
            if dep.def_path.startswith("src/") and not any(file == path or path in file.parents for file in files):
                stale.append(f"{stage.addressing}: {dep.def_path}")
    assert not stale, "stage depends on source it never imports:\n" + "\n".join(sorted(set(stale)))


def test_a_command_of_several_python_calls_counts_every_one():
    """The selection stage runs `python -m ift.selection && python -m ift.report ...`: both modules' code is its."""
    entries = stage_entries("A=1 python -m ift.selection profile=tiny && python -m ift.report paths.report=x")
    assert entries == ["ift.selection", "ift.report.__main__"]
    assert SRC / "ift" / "report" / "claims.py" in stage_closure("python -m ift.selection && python -m ift.report")
