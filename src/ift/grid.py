"""The grid params.yaml asks for, and the names of its runs: which (method, start, seed, chain) each is.

A start point is ``<start>`` in chain 0 (``base``, ``sft_beta``) and ``<start>-chain<c>`` in whole-chain replicate c;
a trained cell is ``<method>-<start point>-s<seed>``. Its run (outputs/runs/) and its evaluation (outputs/evals/)
share that name. Training, selection and the report all read the grid and its names from here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ift.methods import METHODS
from ift.paths import start_point_name

STARTS = ("base", "sft_beta")  # the paper's two start points (Mistral-7B, Mistral-7B-sft-beta)
CELL_NAME = re.compile(r"^(?P<method>[a-z_]+)-(?P<start>base|sft_beta)(?:-chain(?P<chain>[1-9]\d*))?-s(?P<seed>\d+)$")
START_NAME = re.compile(r"^(?P<start>base|sft_beta)(?:-chain(?P<chain>[1-9]\d*))?$")


def methods_at(start: str, methods: Sequence[str], base_only: Sequence[str] = ()) -> list[str]:
    """The methods trained from ``start``: ``methods`` everywhere, ``base_only`` from base too; in the paper's row
    order (ift.methods.METHODS), unknown methods last in the order given."""
    chosen = list(dict.fromkeys([*methods, *(base_only if start == "base" else ())]))
    order = list(METHODS)
    return sorted(chosen, key=lambda m: order.index(m) if m in order else len(order))


def parse_name(name: str) -> tuple[str, str | None, int | None, int]:
    """(start, method, seed, chain) of an evaluation directory name; start points have method/seed None."""
    match = START_NAME.match(name)
    if match:
        return match["start"], None, None, int(match["chain"] or 0)
    match = CELL_NAME.match(name)
    if not match:
        raise ValueError(f"evaluation directory {name!r} is neither a start point (<start>[-chain<c>]) nor a cell "
                         "(<method>-<start>[-chain<c>]-s<seed>)")
    return match["start"], match["method"], int(match["seed"]), int(match["chain"] or 0)


def eval_name(start: str, method: str | None, seed: int | None, chain: int = 0) -> str:
    """The evaluation (and run) directory name of a start point (method None) or a cell, in chain ``chain``."""
    point = start_point_name(start, chain)
    return point if method is None else f"{method}-{point}-s{seed}"


def replicates(method: str | None, seeds: Sequence[int], chains: Sequence[int]) -> list[tuple[int, int | None, int | None]]:
    """(chain, seed, key) of the runs a table row averages over; ``key`` pairs them across rows (claims, deltas).

    With chains: chain 0's seed 0 and chain c's seed c, keyed by chain (a start point row: each chain's start point).
    Without: each fine-tuning seed, keyed by seed (a start point row: its one evaluation, key None, which pairs
    with every seed)."""
    if chains:
        return [(chain, None if method is None else chain, chain) for chain in (0, *chains)]
    if method is None:
        return [(0, None, None)]
    return [(0, seed, seed) for seed in seeds]


def check_chains(seeds: Sequence[int], chains: Sequence[int]) -> None:
    """Chains are whole numbers >= 1 without repeats, and chain 0's replicate is its seed-0 cell, so seeds holds 0."""
    if any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in chains) or len(set(chains)) != len(chains):
        raise ValueError(f"chains must be distinct whole numbers >= 1 (chain 0 is the base/sft_beta stages), "
                         f"got {list(chains)!r}")
    if chains and 0 not in seeds:
        raise ValueError(f"chains {list(chains)} need seed 0 in seeds {list(seeds)}: chain 0's replicate of a cell "
                         "is its seed-0 run")


class Grid(NamedTuple):
    """The grid params.yaml asks the pipeline for."""

    methods: list[str]
    starts: list[str]
    seeds: list[int]
    profile: str
    base_only: list[str]
    chains: list[int]


def _whole_numbers(values, minimum: int) -> bool:
    return all((isinstance(v, int) and not isinstance(v, bool) and v >= minimum)
               or (isinstance(v, str) and re.fullmatch(r"0|[1-9][0-9]*", v) and int(v) >= minimum) for v in values)


PAPER_FULL_METHODS = "paper_full_methods"  # params.yaml: the opt-in paper_full grid's methods (paper_full/dvc.yaml)


def load_grid(params_file: Path, paper_full: bool = False) -> Grid:
    """methods, starts, seeds, profile (tiny when absent), base_only_methods and chains (none when absent) from the
    pipeline's params.yaml; with ``paper_full``, methods also has its ``paper_full_methods`` (the opt-in grid of the
    paper's other baselines, trained from every start with the same seeds and chains)."""
    import yaml

    params = yaml.safe_load(params_file.read_text())
    try:
        methods, starts, seeds = params["methods"], params["starts"], params["seeds"]
        extra = params[PAPER_FULL_METHODS] if paper_full else []
    except KeyError as err:
        raise ValueError(f"{params_file} lacks {err}; it needs methods, starts and seeds"
                         + (f" (and {PAPER_FULL_METHODS} for the paper_full grid)" if paper_full else "")) from err
    base_only = params.get("base_only_methods") or []
    chains = params.get("chains") or []
    for key, value in (("methods", methods), ("starts", starts), ("seeds", seeds), ("base_only_methods", base_only),
                       ("chains", chains), (PAPER_FULL_METHODS, extra)):
        if not isinstance(value, list):  # list("10") would be seeds [1, 0]
            raise ValueError(f"{params_file}: {key} must be a list, e.g. {key}: [...], got {value!r}")
    for key, values in (("methods", methods), ("starts", starts), ("base_only_methods", base_only),
                        (PAPER_FULL_METHODS, extra)):
        if not all(isinstance(value, str) for value in values):
            raise ValueError(f"{params_file}: {key} must be a list of names, got {values!r}")
    if not _whole_numbers(seeds, 0):
        raise ValueError(f"{params_file}: seeds must be a list of whole numbers >= 0, got {seeds!r}")
    if not _whole_numbers(chains, 1):
        raise ValueError(f"{params_file}: chains must be a list of whole numbers >= 1 (chain 0 is the base and "
                         f"sft_beta stages), got {chains!r}")
    seeds, chains = [int(seed) for seed in seeds], [int(chain) for chain in chains]
    try:
        check_chains(seeds, chains)
    except ValueError as err:
        raise ValueError(f"{params_file}: {err}") from err
    overlap = sorted(set(extra) & {*methods, *base_only})
    if overlap:
        raise ValueError(f"{params_file}: {PAPER_FULL_METHODS} {overlap} are in the default grid already")
    return Grid([*methods, *extra], list(starts), seeds, str(params.get("profile", "tiny")), list(base_only), chains)
