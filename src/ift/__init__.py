"""IFT replication pipeline: SFT, SFT+DPO, ORPO and Intuitive Fine-Tuning from one codebase.

Importing the package sets the offline defaults for every entry point (``python -m ift.*``):
nothing in the tiny profile may reach a hub or an API. Each is a default only: a user who wants the
hub (``profile=paper``) or online W&B exports the variable explicitly before running.
"""

import os

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "DO_NOT_TRACK": "1",
}
for _key, _value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
