"""The default pipeline's stages by name, whichever of its dvc.yaml files holds them.

`dvc repro` at the repository root runs the root dvc.yaml's stages and every stage they depend on; the grid's stages
live in grid/*/dvc.yaml (smaller dvc.lock files: see the root dvc.yaml's header). Tests name a default stage as DVC
names it inside its own file (``train@ift-base-0``) and an opt-in pipeline's stage by its full address
(``studies/dvc.yaml:study@lambda``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from conftest import REPO_ROOT


@cache
def default_pipeline_files() -> frozenset[str]:
    """The root dvc.yaml and grid/<part>/dvc.yaml, relative to the repository root (globbed once: every stage asks)."""
    grid = (str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "grid").glob("*/dvc.yaml"))
    return frozenset({"dvc.yaml", *grid})


def dvcfile(stage) -> str:
    """The dvc.yaml holding ``stage``, relative to the repository root (DVC's own relpath is relative to the cwd)."""
    return str(Path(stage.dvcfile.path).resolve().relative_to(REPO_ROOT))


def in_default_pipeline(stage) -> bool:
    return dvcfile(stage) in default_pipeline_files()


def stage_name(stage) -> str:
    """``train@ift-base-0`` for a stage of the default pipeline, ``<file>:<name>`` for any other."""
    return stage.name if in_default_pipeline(stage) else f"{dvcfile(stage)}:{stage.name}"
