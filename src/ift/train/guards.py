"""Stop a run at the first non-finite loss, with a message that says where the last good checkpoint is.

transformers replaces NaN/inf losses in its logs by the running average (``logging_nan_inf_filter``), which would
let a diverged run continue and overwrite good checkpoints; the train app turns that filter off and adds this
callback. Losses are checked when they are logged, which happens before any checkpoint of the same step is saved
(the train app requires save_steps to be a multiple of logging_steps), so no checkpoint after the divergence is
ever written and the Trainer's last checkpoint in outputs/work/<run>/ is the last good one.
"""

from __future__ import annotations

import math
from pathlib import Path

from transformers import TrainerCallback


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class FiniteLossGuard(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            checkpoints = sorted(Path(args.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
            last = str(checkpoints[-1]) if checkpoints else "none yet (no checkpoint was saved before the failure)"
            raise NonFiniteLossError(
                f"loss became {loss} at step {state.global_step} (logged over the last {args.logging_steps} steps);"
                f" stopped. Last good checkpoint: {last}. Lower trainer.finetune.learning_rate or check the data."
            )
