"""Shared test setup: offline, single-threaded, repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
import ift  # noqa: E402,F401  (sets the offline defaults before any HF import)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Parallel test workers share 2 cores: one torch thread each (10-40x slower otherwise)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def compose(overrides: list[str] | None = None, root: Path | None = None):
    """Compose the repo's Hydra config as the entry points do (paths rooted at ``root``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import ift.paths  # noqa: F401  (registers the config's start_point resolver, as every entry point does)

    overrides = list(overrides or [])
    if root is not None:
        overrides.append(f"paths.root={root}")
    else:
        overrides.append(f"paths.root={REPO_ROOT}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=overrides)


def build_world(profile: str, directory: Path, root: Path | None = None) -> Path:
    """Generate the ``profile``'s miniature world into ``directory`` with the real stage code; returns it."""
    from omegaconf import OmegaConf

    from ift.world import generate_world

    cfg = compose([f"profile={profile}"], root=root)
    generate_world(OmegaConf.to_container(cfg.data.world, resolve=True), directory)
    return Path(directory)


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    """A repo-like root with the smoke world and both smoke start points, built by the real stage code.

    Session-scoped and shared by every test marked ``xdist_group("smoke_pipeline")`` (one worker builds it once).
    """
    from ift.train.base import build_base
    from ift.train.sft_beta import build_sft_beta

    root = tmp_path_factory.mktemp("smoke_root")
    cfg = compose(["profile=smoke", "logger=none"], root=root)
    build_world("smoke", cfg.paths.world, root=root)
    build_base(cfg)
    build_sft_beta(cfg)
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (the tiny profile must stay offline).

    Local inter-process sockets (AF_UNIX: the offline W&B service, accelerate) are not network and stay allowed.
    """
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    def guarded(method):
        def connect(self, *args, **kwargs):
            if self.family == getattr(socket, "AF_UNIX", None):
                return method(self, *args, **kwargs)
            return refuse(self, *args)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def restore_wandb_env():
    """Each test gets its own W&B service: an earlier in-process evaluation in this worker (tests/ift/evaluate/test_checkpoint_eval.py)
    may have left one behind whose socket is gone."""
    import wandb

    wandb.teardown()
    saved = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    yield
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Keeps the datasets cache of the data tests out of the user's ~/.cache."""
    return str(tmp_path_factory.mktemp("hf_datasets_cache"))
