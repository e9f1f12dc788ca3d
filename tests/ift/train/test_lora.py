"""LoRA (method.peft, ift.train.lora) and the activation_checkpointing switch, on the tiny model (no extra needed).

One LoRA step per method on the real model is in tests/integration/test_real_model.py.
"""

from __future__ import annotations

import pytest
import torch

from ift.train import lora
from tiny_lm import qa_rows, tiny_model, tiny_tokenizer

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}


def _ids(tok):
    return tok("<|user|>\nwhat color is the zorb ?</s>\n<|assistant|>\nthe zorb is red .</s>",
               return_tensors="pt", add_special_tokens=False).input_ids


def test_no_peft_key_or_null_means_the_model_itself():
    model = tiny_model(tiny_tokenizer())
    assert lora.wrap(model, {"name": "sft"}) is model
    assert lora.wrap(model, {"name": "sft", "peft": None}) is model
    assert lora.lora_settings(None) is None


def test_lora_with_its_adapters_at_zero_gives_the_base_models_logits():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    ids = _ids(tok)
    with torch.no_grad():
        base = model(ids).logits.clone()
    wrapped = lora.wrap(model, {"name": "sft", "peft": LORA})
    assert lora.is_peft(wrapped)
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)  # only the adapters train
    with torch.no_grad():
        assert torch.equal(wrapped(ids).logits, base)


def test_the_merged_checkpoint_computes_what_the_lora_model_does(tmp_path):
    """W + (alpha/r)·B·A from the full state dict (the path FSDP's gathered state dict takes) = peft's own merge;
    the saved checkpoint is plain and the loader takes it unchanged."""
    from ift.checkpoints import load_causal_lm, save_checkpoint

    tok = tiny_tokenizer()
    wrapped = lora.wrap(tiny_model(tok), {"name": "sft", "peft": LORA})
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # adapters away from zero, as after training
    ids = _ids(tok)
    with torch.no_grad():
        expected = wrapped(ids).logits.clone()
    plain, state_dict = lora.checkpoint_parts(wrapped, None)
    assert not lora.is_peft(plain) and not any("lora_" in k or "base_layer" in k for k in state_dict)
    plain.save_pretrained(tmp_path / "ckpt", state_dict=state_dict)
    tok.save_pretrained(tmp_path / "ckpt")
    model, _ = load_causal_lm(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)
    assert save_checkpoint  # the same writer the train app uses (write_checkpoint) takes (model, state_dict)


def test_a_plain_model_is_saved_as_it_is():
    model = tiny_model(tiny_tokenizer())
    state = {"x": torch.zeros(1)}
    assert lora.checkpoint_parts(model, state) == (model, state)


@pytest.mark.parametrize("peft, message", [
    ("r8", "method.peft must be null or a mapping"),
    ({"r": 0}, "method.peft.r"),
    ({"r": 8, "alpha": 0}, "method.peft.alpha"),
    ({"dropout": 1.0}, "method.peft.dropout"),
    ({"target_modules": []}, "method.peft.target_modules"),
    ({"rank": 8}, "unknown key"),
])
def test_bad_peft_settings_are_errors_naming_the_key(peft, message):
    with pytest.raises(lora.LoraConfigError, match=message):
        lora.lora_settings({"name": "sft", "peft": peft})


def test_a_target_module_the_model_lacks_is_named():
    with pytest.raises(lora.LoraConfigError, match="c_attn"):
        lora.wrap(tiny_model(tiny_tokenizer()), {"name": "sft", "peft": {"target_modules": ["c_attn"]}})


def test_ift_refuses_lora_on_the_embeddings_or_head():
    with pytest.raises(lora.LoraConfigError, match="IFT reads the embedding table"):
        lora.lora_settings({"name": "ift", "peft": {"target_modules": ["q_proj", "lm_head"]}})
    assert lora.lora_settings({"name": "sft", "memory_efficient": False, "peft": {"target_modules": ["lm_head"]}})


@pytest.mark.parametrize("method", [
    {"name": "sft"}, {"name": "dpo", "memory_efficient": True}, {"name": "orpo"}, {"name": "simpo"},
    {"name": "sft_dpo", "sft": {"memory_efficient": False}, "dpo": {}},
])
def test_the_lean_lm_head_refuses_lora_on_the_head(method):
    """memory_efficient (default true) reads lm_head's weight directly: an adapter there would be ignored."""
    with pytest.raises(lora.LoraConfigError, match="memory_efficient"):
        lora.lora_settings({**method, "peft": {"target_modules": ["q_proj", "lm_head"]}})
    assert lora.lora_settings({**method, "peft": {"target_modules": ["q_proj"]}})


def test_tdpo_takes_lora_on_the_head():
    """TDPO has no lean head (its KL reads the full logits, through the adapted head), so nothing refuses it there."""
    settings = lora.lora_settings({"name": "tdpo", "peft": {"target_modules": ["q_proj", "lm_head"]}})
    assert settings["target_modules"] == ["q_proj", "lm_head"]


def test_the_train_config_check_rejects_bad_peft_before_any_model_loads():
    from conftest import compose
    from ift.train.config_checks import ConfigError, validate_train_config

    cfg = compose(["method=ift", "+method.peft={r: 0}"])
    with pytest.raises(ConfigError, match="method.peft.r"):
        validate_train_config(cfg)


def test_the_lora_preset_composes_under_method_peft():
    from omegaconf import OmegaConf

    from conftest import compose

    cfg = compose(["method=sft_dpo", "+lora@method.peft=default"])
    settings = lora.lora_settings(OmegaConf.to_container(cfg.method, resolve=True))
    assert settings["r"] == 8 and "down_proj" in settings["target_modules"]
    assert "peft" not in compose(["method=sft_dpo"]).method  # absent by default: saved configs are unchanged


def _ift_trainer(model, tok, tmp_path, **args):
    import datasets

    from ift.train.trainers import build_trainer

    common = dict(output_dir=str(tmp_path / "work"), use_cpu=True, report_to="none", max_steps=1,
                  per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1, save_strategy="no", seed=0,
                  **args)
    method = {"name": "ift", "max_lambda": 0.2, "min_lambda": 0.2, "gamma": 0.95}
    return build_trainer(method, model=model, tokenizer=tok, dataset=datasets.Dataset.from_list(qa_rows(4)),
                         common_args=common, max_length=64)


def _loss_and_batch(trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    return loss, batch


@pytest.mark.parametrize("tie", [False, True])
def test_ift_hooks_unwrap_peft_same_loss_at_zero_adapters_and_gradients_reach_the_adapters(tmp_path, tie):
    """IFT's intuition (embedding hook) and chunked LM head (decoder hook) read the base model's modules through
    PEFT: with adapters at zero the loss equals the plain model's, and the adapters get gradients."""
    tok = tiny_tokenizer()
    plain_loss, _ = _loss_and_batch(_ift_trainer(tiny_model(tok, tie=tie), tok, tmp_path / "a"))
    wrapped = lora.wrap(tiny_model(tok, tie=tie), {"name": "ift", "peft": LORA})
    trainer = _ift_trainer(wrapped, tok, tmp_path / "b")
    assert lora.is_peft(trainer.model)  # the trainer received the PEFT model
    peft_loss, _ = _loss_and_batch(trainer)
    torch.testing.assert_close(peft_loss, plain_loss, rtol=0, atol=0)
    peft_loss.backward()
    grads = {n: p.grad for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


@pytest.mark.parametrize("use_lora", [False, True])
def test_activation_checkpointing_is_a_switch_that_changes_no_number(tmp_path, use_lora):
    """trainer.activation_checkpointing=true turns checkpointing on in the model the trainer trains (also through
    PEFT, where TRL makes the inputs require grad so the adapters still get gradients) and one optimiser step gives
    the same weights as without it."""
    tok = tiny_tokenizer()

    def run(checkpointing: bool, where: str):
        model = tiny_model(tok)
        if use_lora:
            model = lora.wrap(model, {"name": "ift", "peft": LORA})
        trainer = _ift_trainer(model, tok, tmp_path / where, activation_checkpointing=checkpointing)
        trainer.train()
        base = trainer.model.get_base_model() if use_lora else trainer.model
        trained = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        return base.is_activation_checkpointing, trained

    on, weights_on = run(True, "on")
    off, weights_off = run(False, "off")
    start = {n: p for n, p in (lora.wrap(tiny_model(tok), {"name": "ift", "peft": LORA}) if use_lora
                               else tiny_model(tok)).named_parameters() if p.requires_grad}
    assert on and not off
    assert weights_on.keys() == weights_off.keys() == start.keys()
    assert any(not torch.equal(weights_on[n], start[n]) for n in start)  # the step moved the trained weights
    for name in weights_on:
        torch.testing.assert_close(weights_on[name], weights_off[name], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_lora_under_fsdp2_saves_the_merged_checkpoint_of_one_process(tmp_path):
    """Two FSDP2 processes (the repo's accelerate config, fp32, CPU) train LoRA adapters and write the same merged
    plain checkpoint as one process: the merge works on the state dict gathered from the shards."""
    import os
    import socket
    import subprocess
    import sys

    from conftest import REPO_ROOT

    worker = REPO_ROOT / "tests" / "helpers" / "dist_train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IFT_TEST_LORA": "1"}

    def run(command):
        done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run([sys.executable, worker, tmp_path, "8", "sft,ift"])
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", REPO_ROOT / "conf/accelerate/fsdp.yaml",
         "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port),
         worker, tmp_path, "8", "sft,ift", "2"])
    one, two = torch.load(tmp_path / "result-1-lora.pt"), torch.load(tmp_path / "result-fsdp-2-lora.pt")
    for method in ("sft", "ift"):
        assert two[method]["sharded"], f"{method}: nothing was sharded"
        saved_one, saved_two = one[method]["saved"], two[method]["saved"]
        assert set(saved_one) == set(saved_two) and not any("lora" in k for k in saved_one)
        base = one[method]["params"]["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
        assert not torch.allclose(saved_one["model.layers.0.self_attn.q_proj.weight"], base)  # B·A merged in
        for name, value in saved_one.items():
            torch.testing.assert_close(saved_two[name], value, rtol=1e-5, atol=1e-5,
                                       msg=f"{method}: merged {name} differs between FSDP2 and 1 process")
