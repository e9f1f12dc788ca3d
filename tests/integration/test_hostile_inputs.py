"""Hostile inputs: random config values and broken checkpoint dirs end in a clear error naming what is wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import open_dict

from conftest import compose
from ift.checkpoints import CheckpointError, check_checkpoint_dir, load_causal_lm
from ift.train.config_checks import ConfigError, validate_train_config

IFT_KEYS = {
    "max_lambda": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3)),
    "min_lambda": st.floats(-2, 2),
    "gamma": st.one_of(st.floats(allow_nan=True), st.integers(-2, 2)),
    "propagation_type": st.sampled_from(["loss", "logps", "mask", "entropy", "", "LOSS"]),
    "propagation_side": st.sampled_from(["left", "right", "middle"]),
    "propagation_norm": st.sampled_from(["L1", "L2", "softmax", "log", "L0"]),
    "lambda_schedule": st.sampled_from([None, "linear", "cosine"]),
    "lambda_disturb": st.sampled_from([None, "normal", "uniform"]),
    "chunk_size": st.integers(-5, 5000),
}


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    """A composed method=ift config whose start checkpoint exists (a tiny saved model)."""
    from tiny_lm import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("hostile")
    tok = tiny_tokenizer()
    model_dir = root / "outputs" / "models" / "base"
    tiny_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return compose(["method=ift", "logger=none"], root=root)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(IFT_KEYS)), data=st.data())
def test_random_ift_values_are_accepted_or_rejected_naming_the_key(base_cfg, key, data):
    value = data.draw(IFT_KEYS[key])
    cfg = base_cfg.copy()
    with open_dict(cfg):
        cfg.method[key] = value
    try:
        validate_train_config(cfg)
    except ConfigError as err:
        assert key in str(err) or key.split("_")[-1] in str(err), str(err)
    else:  # accepted values are really valid
        if key in ("max_lambda", "min_lambda", "gamma"):
            assert 0.0 <= float(value) <= 1.0


def _broken(tmp_path, kind):
    from tiny_lm import tiny_model, tiny_tokenizer

    path = tmp_path / kind
    path.mkdir()
    if kind == "empty":
        return path, "no config.json"
    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(path)
    tok.save_pretrained(path)
    if kind == "truncated_weights":
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        return path, "could not load"
    if kind == "other_architecture":
        config = json.loads((path / "config.json").read_text())
        config["model_type"] = "bert"
        (path / "config.json").write_text(json.dumps(config))
        return path, "model_type='bert'"
    if kind == "no_weights":
        (path / "model.safetensors").unlink()
        return path, "no \\*.safetensors"
    if kind == "bad_config_json":
        (path / "config.json").write_text("{not json")
        return path, "not valid JSON"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty", "truncated_weights", "other_architecture", "no_weights", "bad_config_json"])
def test_broken_checkpoint_dirs_fail_with_a_clear_message(tmp_path, kind):
    path, message = _broken(tmp_path, kind)
    with pytest.raises(CheckpointError, match=message) as info:
        load_causal_lm(path)
    assert str(path) in str(info.value)


def test_missing_checkpoint_dir(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        check_checkpoint_dir(tmp_path / "nope")


def test_the_paper_base_model_without_chat_template_gets_the_zephyr_template():
    """Mistral-7B-v0.1 ships no chat template; it is named in BASE_MODEL_TEMPLATES and gets Zephyr's, the format of
    mistral-7b-sft-beta (the paper's other start point)."""
    from ift.checkpoints import ensure_chat_template
    from ift.world.tokenizer import CHAT_TEMPLATE
    from tiny_lm import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = None
    ensure_chat_template(tok, "mistralai/Mistral-7B-v0.1")
    assert tok.chat_template == CHAT_TEMPLATE
    rendered = tok.apply_chat_template([{"role": "user", "content": "what color is the zorb ?"}],
                                       add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|user|>\n") and rendered.endswith("<|assistant|>\n")


def test_any_other_checkpoint_without_chat_template_is_an_error_naming_it(tmp_path):
    """No silent fallback: a checkpoint that is not a known base model must bring its own template."""
    from tiny_lm import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = None
    tiny_model(tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="has no chat template") as info:
        load_causal_lm(tmp_path)
    assert str(tmp_path) in str(info.value)
