"""Where the repository's Hydra configs live, for every ``python -m ift.*`` entry point.

An absolute path works however the entry point is reached (``python -m``, an import from a test, a console
script); Hydra's relative config_path would resolve against the package when the app is defined in an imported
module. The package is installed editable from the repo (``make setup``), so the repo's ``conf/`` is at hand.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = str(REPO_ROOT / "conf")
