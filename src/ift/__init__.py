"""IFT replication pipeline: SFT, SFT+DPO, ORPO and Intuitive Fine-Tuning from one codebase.

Importing the package sets the offline defaults for every entry point (``python -m ift.*``):
nothing in the tiny profile may reach a hub or an API. Each is a default only: a user who wants the
hub (``profile=paper``) or online W&B exports the variable explicitly before running.

It also sets what every stage process shares: no third-party deprecation noise in the logs, and a fast exit.
"""

import atexit
import gc
import os
import warnings

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "DO_NOT_TRACK": "1",
    # ORPO's and CPO's (SimPO's) trainers live in trl.experimental; TRL is pinned and both are tested here.
    "TRL_EXPERIMENTAL_SILENCE": "1",
}
for _key, _value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

# Deprecations inside third-party code, printed by every stage, none about this project's calls: TRL reads
# transformers' deprecated `is_gradient_checkpointing` alias; alpaca_eval imports pkg_resources.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

# Speed only: at exit Python's final garbage collection walks every object torch, transformers and TRL created,
# 1.5-2.5 s per stage process (docs/pipeline.md). Frozen objects are skipped. This handler, registered at the first
# `import ift`, runs after every later-registered one (W&B's, logging's, weakref finalizers); everything a stage
# writes is closed before that. No number depends on it.
atexit.register(gc.freeze)

__version__ = "0.1.0"
