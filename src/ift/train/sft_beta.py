"""DVC stage `sft_beta`: ``python -m ift.train.sft_beta [profile=...]`` — SFT base on the chat set, measure both."""

from ift.train.start_points import run


def main() -> None:
    run("sft_beta")


if __name__ == "__main__":
    main()
