"""Measured quality of the two start points, written by the `sft_beta` stage to ``quality.json``.

It answers "did the start points learn the world?" with numbers, not hopes:
* base: held-out pretraining loss (nats/token) next to the uniform-guess loss ln(V) for scale;
* both: fact recall, plain text: for every species and attribute (color, home, food, legs), is the true value the
  most likely of the attribute's values after "The <species> is / lives in / eats / has"? Split into train and
  held-out species (held-out facts are the knowledge the leaderboard analogs ask about);
* both: lettered multiple choice, the skill the MMLU and ARC-Gen analogs score: on the chat set's lettered rows (the
  "A. ... D." questions; train rows are sft_beta's own fine-tuning data), is the gold letter the most likely first
  answer token among A-D? With the share of each predicted letter: a model that always says "A" scores the share
  of gold "A", not 0.25;
* both: the fraction of well-formed answers on held-out chat prompts (generation stopped at eos AND the answer
  follows its kind's format, judged by the world's checker) and gsm8k-analog exact match (zero-shot, chat template).
The bar (issue: Foundation) is sft_beta well-formed >= 0.9 and sft_beta exact match clearly above base.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

WELLFORMED_BAR = 0.9


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def heldout_lm_loss(model, tokenizer, texts: list[str], *, batch_size: int = 32, max_length: int = 512) -> float:
    """Token-mean next-token cross-entropy over documents (each followed by eos), in nats per token."""
    import torch

    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(texts), batch_size):
        chunk = [text + tokenizer.eos_token for text in texts[start : start + batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                        add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.no_grad():
            logits = model(**enc).logits[:, :-1].float()
        targets = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((targets != -100).sum())
    return total / max(count, 1)


def _recall_template(attribute: str) -> tuple[str, str]:
    """The corpus's first paraphrase of the fact, cut at the value: ("The {s} has", " legs.")."""
    from ift.world.phrases import FACT_PARAPHRASES

    prompt, suffix = FACT_PARAPHRASES[attribute][0].split(" {v}")
    return prompt, suffix


def fact_recall(model, tokenizer, world_dir: Path) -> dict:
    """Share of (species, attribute) facts whose true value scores highest among all the attribute's values
    (sum of log-probabilities of " <value><suffix>" after the prompt), per species group and attribute."""
    import torch

    from ift.world.entities import ATTRIBUTE_VALUES

    species = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))["species"]
    hits: dict[str, dict[str, list[bool]]] = {"train": {}, "heldout": {}}
    model.eval()
    for attribute, values in ATTRIBUTE_VALUES.items():
        prompt, suffix = _recall_template(attribute)
        options = [tokenizer(f" {v}{suffix}", add_special_tokens=False)["input_ids"] for v in values]
        for creature in species:
            context = tokenizer(prompt.format(s=creature["name"]), add_special_tokens=False)["input_ids"]
            width = len(context) + max(map(len, options))
            ids = torch.tensor(
                [context + o + [tokenizer.pad_token_id] * (width - len(context) - len(o)) for o in options]
            )
            with torch.no_grad():
                logps = model(input_ids=ids).logits.float().log_softmax(-1)
            scores = [
                sum(float(logps[row, pos - 1, ids[row, pos]]) for pos in range(len(context), len(context) + len(o)))
                for row, o in enumerate(options)
            ]
            best = values[max(range(len(scores)), key=scores.__getitem__)]
            group = "heldout" if creature["heldout"] else "train"
            hits[group].setdefault(attribute, []).append(best == str(creature[attribute]))
    return {
        group: {
            "all": sum(sum(h) for h in per.values()) / max(sum(len(h) for h in per.values()), 1),
            **{attribute: sum(h) / len(h) for attribute, h in per.items()},
        }
        for group, per in hits.items()
    }


def lettered_choice_accuracy(model, tokenizer, world_dir: Path, *, n_rows: int) -> dict:
    """Per chat split (train: train species, the fine-tuning data; heldout: held-out species): over the first
    ``n_rows`` lettered multiple-choice rows, the share whose gold letter is the argmax of the first answer token's
    log-probability among the four letters (question as the user turn, chat template, generation prompt), and the
    shares of predicted and gold letters."""
    import torch

    from ift.world.phrases import LETTERS, MC_INSTRUCTION

    letter_ids = []
    for letter in LETTERS:
        ids = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"lettered_choice_accuracy needs single-token letters; {letter!r} is {ids}")
        letter_ids.append(ids[0])
    model.eval()
    result = {}
    for group, split in (("train", "train"), ("heldout", "test")):
        rows = [row for row in _read_jsonl(world_dir / "chat" / f"{split}.jsonl")
                if row["messages"][0]["content"].endswith(MC_INSTRUCTION)][:n_rows]
        predicted, gold = [], []
        for row in rows:
            prompt = tokenizer.apply_chat_template(row["messages"][:1], add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
            predicted.append(LETTERS[int(logits[letter_ids].argmax())])
            gold.append(row["messages"][1]["content"].strip()[0])
        n = len(rows)
        result[group] = {  # no lettered rows in the split: nothing measured, so null rather than 0
            "accuracy": sum(p == g for p, g in zip(predicted, gold)) / n if n else None,
            "n": n,
            "predicted_shares": {letter: predicted.count(letter) / n for letter in LETTERS} if n else None,
            "gold_shares": {letter: gold.count(letter) / n for letter in LETTERS} if n else None,
        }
    return result


def answer_quality(model, tokenizer, world_dir: Path, *, n_chat: int, n_gsm8k: int, max_new_tokens: int) -> dict:
    """Well-formed fraction on held-out chat prompts and gsm8k-analog exact match for one model."""
    from ift.generation import generate_chat
    from ift.world.judge import check_answer, gsm8k_exact_match, gsm8k_extract

    chat_rows = _read_jsonl(world_dir / "chat" / "test.jsonl")[:n_chat]
    keys = {row["prompt_id"]: row for row in _read_jsonl(world_dir / "chat" / "test_keys.jsonl")}
    outputs = generate_chat(model, tokenizer, [row["messages"][:-1] for row in chat_rows],
                            max_new_tokens=max_new_tokens)
    wellformed = [
        check_answer(keys[row["prompt_id"]], out.text, ended_at_eos=out.ended_with_eos)["well_formed"]
        for row, out in zip(chat_rows, outputs)
    ]
    gsm_rows = _read_jsonl(world_dir / "tasks" / "gsm8k" / "test.jsonl")[:n_gsm8k]
    gsm_out = generate_chat(model, tokenizer, [[{"role": "user", "content": row["question"]}] for row in gsm_rows],
                            max_new_tokens=max_new_tokens)
    exact = [gsm8k_exact_match(out.text, gsm8k_extract(row["answer"])) for row, out in zip(gsm_rows, gsm_out)]
    return {
        "wellformed_fraction": sum(wellformed) / max(len(wellformed), 1),
        "ended_with_eos_fraction": sum(o.ended_with_eos for o in outputs) / max(len(outputs), 1),
        "gsm8k_exact_match": sum(exact) / max(len(exact), 1),
        "n_chat_prompts": len(chat_rows),
        "n_gsm8k": len(gsm_rows),
        "examples": [{"prompt": row["messages"][-2]["content"], "answer": out.text}
                     for row, out in list(zip(chat_rows, outputs))[:5]],
    }


def measure_start_points(cfg, *, base_dir: Path, sft_beta_dir: Path) -> dict:
    """Measure base and sft_beta; returns the dict written to quality.json (with the bar and whether it passes)."""
    from ift.checkpoints import load_causal_lm

    world_dir = Path(cfg.data.dir)
    q = cfg.data.quality
    valid_texts = [row["text"] for row in _read_jsonl(world_dir / "corpus" / "valid.jsonl")][: int(q.n_valid_docs)]
    report: dict = {}
    for name, path in (("base", base_dir), ("sft_beta", sft_beta_dir)):
        model, tokenizer = load_causal_lm(path, what=f"{name} start point")
        entry = {"heldout_pretrain_loss": heldout_lm_loss(model, tokenizer, valid_texts),
                 "fact_recall": fact_recall(model, tokenizer, world_dir),
                 "lettered_choice": lettered_choice_accuracy(model, tokenizer, world_dir,
                                                             n_rows=int(q.n_lettered))}
        entry.update(answer_quality(model, tokenizer, world_dir, n_chat=int(q.n_chat), n_gsm8k=int(q.n_gsm8k),
                                    max_new_tokens=int(q.max_new_tokens)))
        report[name] = entry
        vocab = len(tokenizer)
    report["uniform_guess_loss"] = math.log(vocab)
    report["bar"] = {
        "sft_beta_wellformed_min": WELLFORMED_BAR,
        "sft_beta_wellformed_ok": report["sft_beta"]["wellformed_fraction"] >= WELLFORMED_BAR,
        "sft_beta_exact_match_above_base": report["sft_beta"]["gsm8k_exact_match"]
        > report["base"]["gsm8k_exact_match"],
    }

    def both(figure) -> str:
        """One figure of both start points, e.g. "base 0.86 sft_beta 0.97" (n/a where nothing was measured)."""
        return " ".join(f"{name} " + ("n/a" if (v := figure(report[name])) is None else f"{v:.2f}")
                        for name in ("base", "sft_beta"))

    print(
        f"[quality] base held-out loss {report['base']['heldout_pretrain_loss']:.3f} "
        f"(uniform {report['uniform_guess_loss']:.3f}); well-formed {both(lambda r: r['wellformed_fraction'])}; "
        f"gsm8k EM {both(lambda r: r['gsm8k_exact_match'])}; fact recall train "
        f"{both(lambda r: r['fact_recall']['train']['all'])}, "
        f"held-out {both(lambda r: r['fact_recall']['heldout']['all'])}; "
        f"lettered choice train {both(lambda r: r['lettered_choice']['train']['accuracy'])}, held-out "
        f"{both(lambda r: r['lettered_choice']['heldout']['accuracy'])}"
    )
    return report
