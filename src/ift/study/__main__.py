"""``python -m ift.study study=<name> [--dry-run | --report-only] [overrides ...]``: see ift.study.launch."""

import sys

from ift.study.launch import main

if __name__ == "__main__":
    sys.exit(main())
