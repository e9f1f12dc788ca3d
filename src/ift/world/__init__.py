"""The miniature world of the tiny profile: a seeded small language, its tokenizer and its judge.

`generate_world(cfg, out_dir)` writes the pretraining corpus, chat (UltraChat schema) and preference
(UltraFeedback schema) data, benchmark task files in the real HF schemas, the AlpacaEval analog, and a
byte-level BPE tokenizer. `check_answer`, `judge` and `gsm8k_extract` grade model outputs against the
world's ground truth. Run it as `python -m ift.world` (a Hydra app reading `data.world`).

Held out of all fine-tuning data: half of the species and a fraction of the operand pairs. Both appear in
pretraining (species facts; plain arithmetic statements covering the whole table, while the corpus's worked
word problems never use a held-out pair) and in every evaluation item; see `ift.world.arithmetic`.
"""

from ift.world.build import DEFAULT_CONFIG, WORLD_VERSION, generate_world
from ift.world.judge import check_answer, gsm8k_exact_match, gsm8k_extract, judge
from ift.world.tokenizer import CHAT_TEMPLATE, render_chat

__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_CONFIG",
    "WORLD_VERSION",
    "check_answer",
    "generate_world",
    "gsm8k_exact_match",
    "gsm8k_extract",
    "judge",
    "render_chat",
]
