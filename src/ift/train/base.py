"""DVC stage `base`: ``python -m ift.train.base [profile=...]`` — pretrain the tiny base start point."""

from pathlib import Path

from ift.train.start_points import build_tiny_model, run, train_start_point

# "wrapped" packing = classic LM pretraining: documents joined with eos and cut into fixed blocks of the recipe's
# max_length, every token a label (no padding-free batches: each block is a row with an attention mask of ones).
PRETRAIN_SFT_KWARGS = dict(packing=True, packing_strategy="wrapped", dataset_text_field="text",
                           completion_only_loss=False)


def build_base(cfg) -> dict:
    """Pretrain the tiny base model on the world's corpus (plain text, no chat template)."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    world_tokenizer = Path(str(cfg.data.tokenizer))
    if not world_tokenizer.is_dir():  # else transformers reads the path as a hub repo id and says so, unhelpfully
        raise FileNotFoundError(f"the world's tokenizer is missing: {world_tokenizer} (run `dvc repro world` first)")
    tokenizer = AutoTokenizer.from_pretrained(str(world_tokenizer))
    model = build_tiny_model(cfg.model, tokenizer, int(cfg.seed))
    corpus = load_dataset("json", data_files={"train": str(Path(cfg.data.dir) / "corpus" / "train.jsonl")},
                          split="train")
    return train_start_point(cfg, stage="base", model=model, tokenizer=tokenizer, dataset=corpus,
                             sft_kwargs=PRETRAIN_SFT_KWARGS)


def main() -> None:
    run("base", build_base)


if __name__ == "__main__":
    main()
