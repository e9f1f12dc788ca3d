"""The Hydra config composes for every profile and says what each profile promises."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import compose


@pytest.mark.parametrize("profile", ["tiny", "smoke", "paper", "real"])
def test_every_profile_composes_and_resolves(profile):
    cfg = compose([f"profile={profile}"])
    assert cfg.profile == profile
    # Every interpolation resolves (a typo in a key would raise here).
    OmegaConf.to_container(cfg, resolve=True)


def test_tiny_is_default_and_local():
    cfg = compose()
    assert cfg.profile == "tiny"
    assert cfg.model.name == "tiny"
    assert cfg.trainer.bf16 is False
    assert cfg.trainer.activation_checkpointing is False
    assert cfg.start.checkpoint.endswith("outputs/models/base")


def test_paper_profile_points_at_the_hub_start_points():
    cfg = compose(["profile=paper", "start=sft_beta"])
    assert cfg.start.checkpoint == "HuggingFaceH4/mistral-7b-sft-beta"
    cfg = compose(["profile=paper", "start=base"])
    assert cfg.start.checkpoint == "mistralai/Mistral-7B-v0.1"


def test_smoke_trains_less_than_tiny():
    tiny, smoke = compose(["profile=tiny"]), compose(["profile=smoke"])
    assert smoke.trainer.pretrain.num_train_epochs < tiny.trainer.pretrain.num_train_epochs
    assert smoke.trainer.sft_beta.num_train_epochs <= tiny.trainer.sft_beta.num_train_epochs


def test_offline_defaults_are_set_by_the_package():
    import os

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        assert os.environ[key] == "1"
    assert os.environ["WANDB_MODE"] in ("offline", "disabled")


def test_the_real_profile_starts_both_points_from_the_converted_checkpoint():
    cfg = compose(["profile=real", "start=sft_beta"])
    assert cfg.model.name == "smollm2" and cfg.trainer.bf16 is False
    assert cfg.start.checkpoint.endswith("outputs/models/smollm2")
    assert compose(["profile=real"]).start.checkpoint == cfg.start.checkpoint
    assert cfg.trainer.finetune.max_steps >= 1 and cfg.trainer.finetune.warmup_ratio == 0
    assert "peft" not in cfg.method  # LoRA is opt-in (+lora@method.peft=default)
