"""``python -m ift.train``: see ift.train.cell."""

from ift.train.cell import main

if __name__ == "__main__":
    main()
