"""A diverging run stops at the first non-finite logged loss, naming the step and the last good checkpoint."""

from __future__ import annotations

import math

import pytest

from ift.train.guards import NonFiniteLossError
from ift.train.trainers import build_trainer
from tiny_lm import qa_rows, tiny_model, tiny_tokenizer


@pytest.mark.parametrize("method", [{"name": "sft"}, {"name": "sft", "reduction": "sequence_mean"}, {"name": "ift"}],
                         ids=["sft", "sft-sequence_mean", "ift"])
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, method):
    from datasets import Dataset
    from trl import SFTTrainer

    from ift.train.sequence_mean import SequenceMeanSFTTrainer

    tok = tiny_tokenizer()
    model = tiny_model(tok)
    common = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=40, learning_rate=1e-3,
                  optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, use_cpu=True, bf16=False,
                  report_to="none", activation_checkpointing=False, logging_steps=1, logging_nan_inf_filter=False,
                  save_strategy="steps", save_steps=2, save_total_limit=1, seed=0)
    trainer = build_trainer(method, model=model, tokenizer=tok, dataset=Dataset.from_list(qa_rows(80)),
                            common_args=common, max_length=64)
    assert isinstance(trainer, SFTTrainer)
    assert isinstance(trainer, SequenceMeanSFTTrainer) == (method.get("reduction") == "sequence_mean")

    from transformers import TrainerCallback

    class Poison(TrainerCallback):  # corrupt the weights after step 4, as a divergence would
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 4:
                for p in trainer.model.parameters():
                    p.data.fill_(math.nan)

    trainer.add_callback(Poison())
    with pytest.raises(NonFiniteLossError, match=r"step 5.*checkpoint-4"):
        trainer.train()
    assert not (tmp_path / "checkpoint-6").exists()  # nothing saved after the divergence
    assert (tmp_path / "checkpoint-4" / "trainer_state.json").exists()
