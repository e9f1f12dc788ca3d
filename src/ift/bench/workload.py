"""What the benchmark trains: the machine, a tokenizer, random-token rows and the initial model every method loads."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.bench.settings import VARIANTS
from ift.paths import CONF_DIR


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on (no host names, no paths)."""
    import torch
    import transformers
    import trl

    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1_5_15_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
    }
    return info


def bench_tokenizer(vocab_size: int):
    """A word-level tokenizer whose vocabulary is ``<pad> <s> </s> <unk> w4 .. w{V-1}``: text <-> ids exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def random_rows(settings: Mapping, tokenizer) -> tuple[list[dict], list[list[int]], list[list[int]]]:
    """``batch_size`` rows of random tokens as text (prompt / chosen / rejected) and their exact id sequences.

    Every sequence is ``<s> prompt.. response.. </s>``, ``seq_len`` tokens. The BOS and EOS are written into the text
    so no trainer adds one of its own: every method trains on the very same token ids. SFT and IFT use prompt +
    chosen; DPO and ORPO the pairs (twice as many sequences per step).
    """
    import torch

    generator = torch.Generator().manual_seed(int(settings["seed"]) + 1)
    low, high = 4, int(settings["vocab_size"])  # skip the four special tokens
    prompt_len, seq_len = int(settings["prompt_len"]), int(settings["seq_len"])
    response_len = seq_len - prompt_len
    rows, chosen_ids, rejected_ids = [], [], []
    for _ in range(int(settings["batch_size"])):
        prompt = torch.randint(low, high, (prompt_len - 1,), generator=generator).tolist()
        chosen = torch.randint(low, high, (response_len - 1,), generator=generator).tolist()
        rejected = torch.randint(low, high, (response_len - 1,), generator=generator).tolist()

        def words(ids):
            return " ".join(f"w{i}" for i in ids)

        rows.append(
            {
                "prompt": f"{tokenizer.bos_token} {words(prompt)}",
                "chosen": f" {words(chosen)} {tokenizer.eos_token}",
                "rejected": f" {words(rejected)} {tokenizer.eos_token}",
            }
        )
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        chosen_ids.append([bos, *prompt, *chosen, eos])
        rejected_ids.append([bos, *prompt, *rejected, eos])
    return rows, chosen_ids, rejected_ids


def build_initial_model(settings: Mapping, tokenizer, directory: Path) -> int:
    """Random-init the shape's MistralForCausalLM (the start-point builder), save it; return its parameter count."""
    from omegaconf import OmegaConf

    from ift.train.start_points import build_tiny_model

    model = build_tiny_model(OmegaConf.create(dict(settings["model"])), tokenizer, int(settings["seed"]))
    n_params = sum(p.numel() for p in model.parameters())
    if settings["dtype"] == "bfloat16":
        import torch

        model = model.to(torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    return n_params


def method_config(name: str) -> dict[str, Any]:
    """The method node the training app would get: conf/method/<file>.yaml plus the variant's overrides."""
    from omegaconf import OmegaConf

    variant = VARIANTS[name]
    node = OmegaConf.to_container(
        OmegaConf.load(Path(CONF_DIR) / "method" / f"{variant.file}.yaml"), resolve=True
    )
    node.update(variant.overrides)
    return node
