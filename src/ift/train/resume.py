"""What a killed run may resume from, and what a resumed run reports (issue #20, items 5, 6 and 11).

* :func:`resume_point`: the last complete checkpoint of a killed run whose stamp matches (:func:`config_hash` of
  what determines its numbers, and :func:`checkpoint_digest`); stale work is wiped.
* :func:`checkpoint_digest`: the content of the checkpoint a run starts from. A run's work directory is stamped
  with :func:`run_fingerprint` (its config and this digest), so replacing the start point, ``init_from`` or the
  SFT half of ``sft_dpo`` at the same path makes the next run start fresh instead of resuming the old work.
* :class:`RunLossSum`: carries the sum of the per-step training losses through the Trainer's checkpoints, so a
  resumed run's ``train_loss`` is the mean over the whole run, as an uninterrupted run's is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ift.io import write_text_atomic

# Files the pipeline writes beside a checkpoint's weights that do not change what is loaded from it (their times and
# paths differ between two trainings that give the same weights).
RECORD_FILES = frozenset({"config.yaml", "train_metrics.json", "data.json", "quality.json", "data_skips.json"})

_PARTS = {
    "config": "the run's config differs",
    "init": "the checkpoint it starts from has other contents (weights, model config or tokenizer files)",
}


def config_hash(cfg) -> str:
    """Hash of everything that determines the run's numbers (not paths, not logging)."""
    from omegaconf import OmegaConf

    relevant = {key: OmegaConf.to_container(cfg[key], resolve=True)
                for key in ("method", "start", "model", "data", "trainer") if key in cfg}
    relevant.update(seed=int(cfg.seed), init_from=cfg.get("init_from"), profile=cfg.profile)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def resume_point(work_dir: Path, fingerprint: str, accelerator=None) -> str | None:
    """The last Trainer checkpoint of an interrupted run with the same config; stale work is wiped.

    With several processes only the main one touches the directory; the others wait, then read the same answer.
    """
    stamp = work_dir / "fingerprint.txt"
    if accelerator is None or accelerator.is_main_process:
        if work_dir.exists() and (not stamp.exists() or stamp.read_text().strip() != fingerprint):
            if any(work_dir.glob("checkpoint-*")):
                why = fingerprint_change(stamp.read_text().strip() if stamp.exists() else "", fingerprint)
                print(f"[train] the checkpoints in {work_dir} are not resumed: {why}; starting fresh")
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(stamp, fingerprint + "\n")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    checkpoints = sorted(work_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for checkpoint in reversed(checkpoints):
        if _complete_checkpoint(checkpoint):
            return str(checkpoint)
    return None


def _complete_checkpoint(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint is complete when that file is there and parses. An
    empty or cut one (a kill while it was written) is passed over with a warning, for the checkpoint before it."""
    state = checkpoint / "trainer_state.json"
    if not state.exists():
        return False
    try:
        json.loads(state.read_text())
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        print(f"[train] WARNING: {state} is not valid JSON ({err}): checkpoint {checkpoint.name} is incomplete, "
              "resuming from the checkpoint before it (or from the start)")
        return False
    return True


def checkpoint_digest(ref: str | Path) -> str:
    """sha256 over the name, size and bytes of every top-level file of a local checkpoint directory except the
    pipeline's records (RECORD_FILES); subdirectories (``sft_half/``) are other checkpoints. A hub id (paper profile)
    stands for itself: its files are not local."""
    from ift.checkpoints import is_hub_id

    ref = str(ref)
    if is_hub_id(ref):
        return f"hub:{ref}"
    digest = hashlib.sha256()
    for path in sorted(path for path in Path(ref).iterdir() if path.is_file() and path.name not in RECORD_FILES):
        with open(path, "rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{path.name}\0{path.stat().st_size}\0{content}\n".encode())
    return digest.hexdigest()


def run_fingerprint(config_hash: str, init_digest: str) -> str:
    """The stamp of a run's work directory: what determines its numbers (config) and what it starts from (init)."""
    return f"config={config_hash} init={init_digest}"


def stamp_parts(stamp: str) -> dict[str, str]:
    """A stamp's ``key=value`` tokens as a dict (``config=... init=...``)."""
    return dict(token.split("=", 1) for token in stamp.split() if "=" in token)


def fingerprint_change(old: str, new: str) -> str:
    """Why work stamped ``old`` is not the work of a run stamped ``new``, in words for the log."""
    before, after = stamp_parts(old), stamp_parts(new)
    if not old:
        return "no fingerprint was recorded for it"
    if before.keys() != after.keys():
        return "its fingerprint was written by other code"
    return " and ".join(_PARTS.get(key, key) for key in after if before[key] != after[key]) or "it is the same"


class RunLossSum(TrainerCallback, ExportableState):
    """The sum of the per-step losses since step 0, saved in every checkpoint's trainer_state.json
    (``stateful_callbacks``) and read back when a run resumes from it.

    transformers restarts its loss sum at each ``train()`` call: a run resumed at step k reports as ``train_loss``
    the mean over the steps after k (and 0.0 when k is the final step). The sum through a checkpoint is the
    Trainer's logged sum (``_total_loss_scalar``) plus the not yet logged part (``_tr_loss``), as transformers itself
    adds them up at the end of training; the whole run's mean is then that sum over all steps. A checkpoint written
    without it (older code) gives None, and so does every later checkpoint of that run.
    """

    def __init__(self, trainer=None):
        self.trainer = trainer
        self.carried: float | None = 0.0  # the sum over the steps before this train() call
        self.resumed_at = 0  # the global step this train() call started from

    def resume_from(self, checkpoint: str | None) -> None:
        """Take the sum through ``checkpoint`` (None: a fresh run, nothing carried)."""
        if checkpoint is None:
            self.carried = 0.0
            return
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        saved = (state.get("stateful_callbacks") or {}).get(type(self).__name__)
        self.carried = saved.get("attributes", {}).get("loss_sum") if isinstance(saved, dict) else None

    def _tracking(self) -> bool:
        """The Trainer keeps the attributes this callback reads (transformers 5's training loop sets them)."""
        return hasattr(self.trainer, "_total_loss_scalar") and hasattr(self.trainer, "_tr_loss")

    def state(self) -> dict:
        # Called when the TrainerState is created (before training starts; the value is replaced at every save)
        # and at every checkpoint save, after that step's loss was added.
        if self.carried is None or not self._tracking():
            return {"args": {}, "attributes": {"loss_sum": None}}
        total = self.carried + self.trainer._total_loss_scalar + self.trainer._tr_loss.item()
        return {"args": {}, "attributes": {"loss_sum": total}}

    def on_train_begin(self, args, state, control, **kwargs):
        self.resumed_at = int(state.global_step)
        if not self._tracking():
            self.carried = None
        # A resumed state from a checkpoint written without this callback has no entry, and the Trainer's save
        # would fail looking it up.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def whole_run_loss(self) -> float | None:
        """After training: the mean loss over every step of the run, or None if it cannot be known."""
        steps = int(self.trainer.state.global_step)
        if self.carried is None or not self._tracking() or steps == 0:
            return None
        return (self.carried + self.trainer._total_loss_scalar) / steps


def resumed_loss_entries(trainer, reported: float | None) -> dict:
    """train_metrics.json's loss entries for a resumed run; ``reported``: the Trainer's own ``train_loss``.

    With the sum carried through the checkpoints, ``train_loss`` is the whole run's mean, as an uninterrupted run
    reports it. Otherwise ``train_loss`` is null and the Trainer's mean is recorded under the name of what it is,
    ``train_loss_since_resume``, with ``resumed_at_step`` (null when no step ran after the resume).
    """
    carried = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, RunLossSum)), None)
    whole = carried.whole_run_loss() if carried is not None else None
    if whole is not None:
        return {"train_loss": whole}
    resumed_at = carried.resumed_at if carried is not None else None
    ran = resumed_at is not None and int(trainer.state.global_step) > resumed_at
    return {"train_loss": None, "train_loss_since_resume": reported if ran else None, "resumed_at_step": resumed_at}
