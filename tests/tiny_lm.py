"""A self-contained tiny tokenizer + Mistral model for trainer tests (no world, no download, < 1 s to build)."""

from __future__ import annotations

import random

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|assistant|>\\n' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
WORDS = "the a zorb blick is red green blue big small what color how many legs has four six two eight".split()
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "\n"]


def tiny_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS + ["?", "."])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"), pre_tokenizers.WhitespaceSplit(),
         pre_tokenizers.Split(Regex(r"[?.]"), behavior="isolated")]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", additional_special_tokens=["<|system|>", "<|user|>",
                                                                                "<|assistant|>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_model(tokenizer, seed: int = 0, tie: bool = False):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           tie_word_embeddings=tie, sliding_window=None, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    return MistralForCausalLM(config)


def qa_rows(n: int, seed: int = 0) -> list[dict]:
    """Prompt/completion rows (TRL conversational format) with ragged answer lengths."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        animal = rng.choice(["zorb", "blick"])
        color = rng.choice(["red", "green", "blue"])
        answer = " ".join(["the", animal, "is", color] + ["big"] * rng.randint(0, 5)) + " ."
        rows.append({
            "prompt": [{"role": "user", "content": f"what color is the {animal} ?"}],
            "completion": [{"role": "assistant", "content": answer}],
        })
    return rows


def pref_rows(n: int, seed: int = 0) -> list[dict]:
    """Preference rows (TRL conversational format): chosen states the color, rejected rambles."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        animal, color = rng.choice(["zorb", "blick"]), rng.choice(["red", "green", "blue"])
        wrong = rng.choice([c for c in ["red", "green", "blue"] if c != color])
        rows.append({
            "prompt": [{"role": "user", "content": f"what color is the {animal} ?"}],
            "chosen": [{"role": "assistant", "content": f"the {animal} is {color} ."}],
            "rejected": [{"role": "assistant", "content": f"the {animal} is {wrong} {'big ' * rng.randint(0, 3)}."}],
        })
    return rows
