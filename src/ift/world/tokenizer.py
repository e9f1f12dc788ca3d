"""The world's tokenizer: byte-level BPE trained on train-side text only, with a Zephyr-like chat template.

Byte-level (every string round-trips, unseen unicode included), digits split one per token (so arithmetic
is learnable digit by digit; a space before a digit stays with it), no normalizer (so decode(encode(s)) == s), and no automatic bos/eos.
The chat template is the format of HuggingFaceH4/mistral-7b-sft-beta, with `{% generation %}` markers so
TRL's assistant-only loss masks work.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)  # ids 0..5, in this order
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
MIN_VOCAB, MAX_VOCAB = 2000, 4096  # the range the tiny models are designed for


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """What CHAT_TEMPLATE renders, in plain Python: fast enough to measure thousands of items."""
    parts = []
    for message in messages:
        parts.append(f"<|{message['role']}|>\n{message['content']}{EOS}\n")
    return "".join(parts) + ("<|assistant|>\n" if add_generation_prompt else "")


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """Train deterministically on `texts` (train-side text only) and wrap for transformers."""
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be in {MIN_VOCAB}..{MAX_VOCAB}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # One digit per token, a leading space kept with its digit (" 7" is one token, like " seven"):
            # the word before a number then predicts it directly, so copying a quantity is one-token induction.
            pre_tokenizers.Split(Regex(" ?[0-9]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,  # else decode() would eat spaces before punctuation
        model_max_length=max_length,
    )
