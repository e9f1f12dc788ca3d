"""Where the repository's Hydra configs live, for every ``python -m ift.*`` entry point.

An absolute path works however the entry point is reached (``python -m``, an import from a test, a console
script); Hydra's relative config_path would resolve against the package when the app is defined in an imported
module. The package is installed editable from the repo (``make setup``), so the repo's ``conf/`` is at hand.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = str(REPO_ROOT / "conf")


def start_point_name(start: str, chain: int = 0) -> str:
    """The directory name of start point ``start`` in whole-chain replicate ``chain``: ``base`` / ``sft_beta`` for
    chain 0 (the ``base`` and ``sft_beta`` stages), ``base-chain1`` ... for chain c >= 1, which retrains ``base`` with
    seed c and ``sft_beta`` from it (params.yaml ``chains``, docs/reproducibility.md)."""
    chain = int(chain)
    if chain < 0:
        raise ValueError(f"chain={chain}: a chain replicate is a whole number >= 0")
    return str(start) if chain == 0 else f"{start}-chain{chain}"


def _register_resolvers() -> None:
    """``${start_point:<start>,<chain>}`` in conf/: the start point's directory name (start_point_name)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("start_point"):
        OmegaConf.register_new_resolver("start_point", start_point_name)


_register_resolvers()
