"""DVC stage `base`: ``python -m ift.train.base [profile=...]`` — pretrain the tiny base start point."""

from ift.train.start_points import run


def main() -> None:
    run("base")


if __name__ == "__main__":
    main()
