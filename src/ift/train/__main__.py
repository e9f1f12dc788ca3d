"""``python -m ift.train``: see ift.train.app."""

from ift.train.app import main

if __name__ == "__main__":
    main()
