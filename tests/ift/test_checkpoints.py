"""Saved checkpoints: a directory that loads back as it was used."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ift.checkpoints import load_causal_lm, save_checkpoint
from ift.train.start_points import build_tiny_model
from ift.world.tokenizer import train_tokenizer

TEXTS = ["the fox sat on the mat", "a cat and a dog", "one two three four five six seven"] * 20


def _model(tokenizer, window: int):
    shape = OmegaConf.create({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": window,
                              "rope_theta": 10000.0, "tie_word_embeddings": False})
    return build_tiny_model(shape, tokenizer, seed=0)


@pytest.mark.parametrize(("tokenizer_length", "window", "saved"), [(256, 512, 512), (1024, 512, 1024)])
def test_the_saved_tokenizer_holds_the_window_the_evaluation_reads_with(tmp_path, tokenizer_length, window, saved):
    """The world tokenizer says 256 (the training length) and the tiny model reads 512: the checkpoint says 512, so
    `lm_eval` on the directory by hand sees what ift.evaluate sees. A wider tokenizer value is never lowered, and the
    tokenizer object in memory keeps its own value (a run may go on tokenising with it)."""
    tokenizer = train_tokenizer(TEXTS, vocab_size=2000, max_length=tokenizer_length)
    save_checkpoint(_model(tokenizer, window), tokenizer, tmp_path / "ckpt")
    assert tokenizer.model_max_length == tokenizer_length
    assert json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())["model_max_length"] == saved
    _, reloaded = load_causal_lm(tmp_path / "ckpt")
    assert reloaded.model_max_length == saved
