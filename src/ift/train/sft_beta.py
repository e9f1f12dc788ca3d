"""DVC stage `sft_beta`: ``python -m ift.train.sft_beta [profile=...]`` — SFT base on the chat set, measure both."""

from ift.io import write_json_atomic
from ift.train.start_points import run, start_point_dir, train_start_point

SFT_BETA_SFT_KWARGS = dict(completion_only_loss=True)  # the loss on the assistant's answer only, as a grid cell's SFT


def build_sft_beta(cfg) -> dict:
    """SFT the base model on the whole chat train set, then measure both start points."""
    from ift.checkpoints import load_causal_lm
    from ift.data import load_chat_for_sft
    from ift.train.quality import measure_start_points

    base_dir = start_point_dir(cfg, "base")  # this chain's base
    model, tokenizer = load_causal_lm(base_dir, what="base start point",
                                      hint=f"run `dvc repro {'base' if base_dir.name == 'base' else 'base_chain'}` first")
    dataset, skips = load_chat_for_sft(cfg.data, tokenizer=tokenizer, seed=int(cfg.seed),
                                       max_length=int(cfg.trainer.sft_beta.max_length))
    metrics = train_start_point(cfg, stage="sft_beta", model=model, tokenizer=tokenizer, dataset=dataset,
                                sft_kwargs=SFT_BETA_SFT_KWARGS)
    out_dir = start_point_dir(cfg, "sft_beta")
    write_json_atomic(out_dir / "data_skips.json", skips.to_dict())
    quality = measure_start_points(cfg, base_dir=base_dir, sft_beta_dir=out_dir)
    write_json_atomic(out_dir / "quality.json", quality)
    return metrics


def main() -> None:
    run("sft_beta", build_sft_beta)


if __name__ == "__main__":
    main()
