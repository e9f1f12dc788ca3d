"""What a killed run may resume from (issue #20, items 5 and 6).

* :func:`checkpoint_digest`: the content of the checkpoint a run starts from. A run's work directory is stamped
  with :func:`run_fingerprint` (its config and this digest), so replacing the start point, ``init_from`` or the
  SFT half of ``sft_dpo`` at the same path makes the next run start fresh instead of resuming the old work.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files the pipeline writes beside a checkpoint's weights that do not change what is loaded from it (their times and
# paths differ between two trainings that give the same weights).
RECORD_FILES = frozenset({"config.yaml", "train_metrics.json", "data.json", "quality.json", "data_skips.json"})

_PARTS = {
    "config": "the run's config differs",
    "init": "the checkpoint it starts from has other contents (weights, model config or tokenizer files)",
}


def checkpoint_digest(ref: str | Path) -> str:
    """sha256 over the name, size and bytes of every top-level file of a local checkpoint directory except the
    pipeline's records (RECORD_FILES); subdirectories (``sft_half/``) are other checkpoints. A hub id (paper profile)
    stands for itself: its files are not local."""
    from ift.train.checkpoints import is_hub_id

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


def fingerprint_change(old: str, new: str) -> str:
    """Why work stamped ``old`` is not the work of a run stamped ``new``, in words for the log."""
    def parts(stamp: str) -> dict[str, str]:
        return dict(token.split("=", 1) for token in stamp.split() if "=" in token)

    before, after = parts(old), parts(new)
    if not old:
        return "no fingerprint was recorded for it"
    if before.keys() != after.keys():
        return "its fingerprint was written by other code"
    return " and ".join(_PARTS.get(key, key) for key in after if before[key] != after[key]) or "it is the same"

