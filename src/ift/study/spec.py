"""A study's config (``conf/study/<name>.yaml``): what it trains, the cells that makes, and the Hydra multirun
overrides that train them.

A study is a list of *variants* (the rungs of a ladder, the arms of a comparison). Each variant is one Hydra
multirun: its fixed overrides, times its own sweep (a product of swept keys), times the start points, times the
whole-chain replicates. Replicate c uses chain c's start points (``outputs/models/base`` and ``sft_beta`` for c = 0,
``base-chain<c>`` and ``sft_beta-chain<c>`` otherwise) and seed c: seeds and chains are paired, not crossed
(``seed=0,1,2 +chain=${seed}``).

A cell is named ``<variant>[-<label><value>...]-<start point>-s<seed>`` (``ift-lambda0.05-base-chain1-s1``); its run
and its evaluation share that name under ``outputs/studies/<study>/{runs,evals}``. Everything here is pure: it reads
the YAML and writes lists of strings; ift.study.launch runs them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ift.grid import STARTS
from ift.methods import ConfigError
from ift.paths import CONF_DIR, start_point_name

STUDY_DIR = Path(CONF_DIR) / "study"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # study, variant and sweep label names: they become parts of run names
VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")  # a swept string value: no Hydra syntax (commas, quotes, braces)
STUDY_KEYS = ("title", "knob", "reference", "starts", "chains", "variants")
VARIANT_KEYS = ("overrides", "sweep")
SWEEP_KEYS = ("key", "values")
REFERENCE_KEYS = ("variant", "at")
# Keys the study sets for every cell (layout, names, replicates): a variant or a command-line override that set them
# would break the pairing of names, seeds and start points.
OWNED = ("run_name", "start", "seed", "chain", "init_from", "model_dir", "out", "paths.outputs", "paths.runs",
         "logger.study", "hydra.sweep.dir", "hydra.sweep.subdir")


@dataclass(frozen=True)
class Sweep:
    """One swept key of a variant: its short label (in run names and tables), the config key and its values."""

    label: str
    key: str
    values: tuple


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]
    sweep: tuple[Sweep, ...] = ()

    def points(self) -> list[tuple[tuple[str, Any], ...]]:
        """Every combination of the sweep's values as ((label, value), ...); one empty combination without a sweep."""
        return [tuple(zip([s.label for s in self.sweep], combo)) for combo in
                itertools.product(*(s.values for s in self.sweep))]


@dataclass(frozen=True)
class Cell:
    """One trained and evaluated run of a study."""

    variant: str
    values: tuple[tuple[str, Any], ...]  # (label, value) of each swept key, in the variant's sweep order
    start: str
    chain: int  # the whole-chain replicate; its seed is the same number

    @property
    def name(self) -> str:
        return cell_name(self.variant, self.values, self.start, self.chain)

    @property
    def point(self) -> tuple[str, tuple[tuple[str, Any], ...], str]:
        """The table row this cell is a replicate of: (variant, values, start)."""
        return self.variant, self.values, self.start


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    knob: str  # "variant" (the variants, in order, are the x axis) or a sweep label
    reference: tuple[str, tuple[tuple[str, Any], ...]]  # (variant, its sweep values): the dashed line in the plots
    starts: tuple[str, ...]
    chains: tuple[int, ...]
    variants: tuple[Variant, ...]
    source: Path = field(default=Path("."), compare=False)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def labels(self) -> list[str]:
        """Every sweep label of the study, first seen first."""
        return list(dict.fromkeys(s.label for v in self.variants for s in v.sweep))

    def cells(self) -> list[Cell]:
        """Every cell, variant by variant (the order of the YAML), then sweep values, start point, replicate."""
        return [Cell(v.name, values, start, chain) for v in self.variants for values in v.points()
                for start in self.starts for chain in self.chains]


def cell_name(variant: str, values: Sequence[tuple[str, Any]], start: str, chain: int) -> str:
    """``<variant>[-<label><value>...]-<start point>-s<seed>``; a value is written as OmegaConf writes it into the
    run_name interpolation (str()), which ift.study.launch checks against the composed config of every cell."""
    tags = "".join(f"-{label}{value}" for label, value in values)
    return f"{variant}{tags}-{start_point_name(start, chain)}-s{chain}"


# --- reading and checking the YAML ---------------------------------------------------------------------------------


def study_file(ref: str) -> Path:
    """``ref``: a study's name (``conf/study/<name>.yaml``) or the path of a study YAML anywhere."""
    if ref.endswith((".yaml", ".yml")):
        return Path(ref)
    if not NAME.match(ref):
        raise ConfigError(f"study={ref!r}: a study's name is lower-case letters, digits and _ (or pass a .yaml path)")
    return STUDY_DIR / f"{ref}.yaml"


def known_studies() -> list[str]:
    return sorted(path.stem for path in STUDY_DIR.glob("*.yaml"))


def load_study(ref: str) -> Study:
    import yaml

    path = study_file(ref)
    if not path.is_file():
        raise ConfigError(f"study={ref!r}: {path} not found; the studies in conf/study/: {', '.join(known_studies())}")
    raw = yaml.safe_load(path.read_text())
    return parse_study(raw, name=path.stem, source=path)


def _mapping(value, key: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping with keys {', '.join(allowed)}, got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; the keys are {', '.join(allowed)}")
    absent = [k for k in required if k not in value]
    if absent:
        raise ConfigError(f"{key}.{absent[0]} is missing")
    return value


def _nonempty_list(value, key: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list, got {value!r}")
    if not value:
        raise ConfigError(f"{key} is empty: a study needs at least one")
    if len({str(v) for v in value}) != len(value):
        raise ConfigError(f"{key} repeats a value: {value!r}")
    return value


def _name(value, key: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ConfigError(f"{key}={value!r}: a name is lower-case letters, digits and _, starting with a letter "
                          "(it becomes part of run names)")
    return value


def _owned(key: str) -> bool:
    key = key.lstrip("+~")
    return any(key == owned or key.startswith(f"{owned}.") for owned in OWNED)


def check_overrides(overrides, key: str, *, allow_hydra: bool = False) -> tuple[str, ...]:
    """Fixed Hydra overrides: each parses, sweeps nothing (the study's own sweep names every run it makes) and sets
    no key the study sets itself (OWNED)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{key} must be a list of Hydra overrides (key=value strings), got {overrides!r}")
    parser = OverridesParser.create()
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except HydraException as err:
            raise ConfigError(f"{key}: {text!r} is not a Hydra override: {err}") from err
        name = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(f"{key}: {text!r} sweeps {name}; a study names every run it trains, so sweep it in the "
                              "study's YAML (a variant's `sweep`)")
        if _owned(name):
            raise ConfigError(f"{key}: {text!r} sets {name}, which the study sets for every cell ({', '.join(OWNED)})")
        if override.is_hydra_override() and not allow_hydra:
            raise ConfigError(f"{key}: {text!r} is a Hydra setting; pass it on the command line instead")
    return tuple(overrides)


def _value(value, key: str):
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key}: {value!r} must be a number or a plain string")
    if isinstance(value, str) and not VALUE.match(value):
        raise ConfigError(f"{key}: {value!r} has characters that Hydra or a run name cannot hold")
    return value


def _sweep(raw, key: str, fixed: Sequence[str]) -> tuple[Sweep, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{key} must be a non-empty mapping label -> {{key, values}}, got {raw!r}")
    fixed_keys = {o.split("=", 1)[0].lstrip("+~") for o in fixed}
    sweeps, swept = [], set()
    for label, entry in raw.items():
        where = f"{key}.{label}"
        _name(label, where)
        entry = _mapping(entry, where, SWEEP_KEYS, SWEEP_KEYS)
        config_key = entry["key"]
        if not isinstance(config_key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", config_key):
            raise ConfigError(f"{where}.key={config_key!r}: a config key such as trainer.finetune.learning_rate")
        if _owned(config_key) or config_key in fixed_keys or config_key in swept:
            raise ConfigError(f"{where}.key={config_key}: set elsewhere (by the study, the variant's overrides or "
                              "another sweep of this variant)")
        swept.add(config_key)
        values = _nonempty_list(entry["values"], f"{where}.values")
        sweeps.append(Sweep(label, config_key, tuple(_value(v, f"{where}.values") for v in values)))
    return tuple(sweeps)


def parse_study(raw, *, name: str, source: Path = Path(".")) -> Study:
    """A Study from the YAML's contents; a ConfigError naming the key for anything unknown, empty or impossible."""
    where = source.name if source != Path(".") else name
    _name(name, "study")
    raw = _mapping(raw, where, STUDY_KEYS, STUDY_KEYS)
    if not isinstance(raw["title"], str) or not raw["title"].strip():
        raise ConfigError(f"{where}: title must be a non-empty string")
    variants_raw = raw["variants"]
    if not isinstance(variants_raw, Mapping) or not variants_raw:
        raise ConfigError(f"{where}: variants is empty: a study needs at least one variant (name -> overrides, sweep)")
    variants = []
    for variant_name, body in variants_raw.items():
        key = f"variants.{variant_name}"
        _name(variant_name, key)
        body = _mapping(body if body is not None else {}, key, VARIANT_KEYS)
        overrides = check_overrides(body.get("overrides", []), f"{key}.overrides")
        variants.append(Variant(variant_name, overrides, _sweep(body.get("sweep"), f"{key}.sweep", overrides)))
    names = [v.name for v in variants]

    starts = _nonempty_list(raw["starts"], "starts")
    unknown = [s for s in starts if s not in STARTS]
    if unknown:
        raise ConfigError(f"starts: {unknown[0]!r} is not a start point; choose from {', '.join(STARTS)}")
    chains = _nonempty_list(raw["chains"], "chains")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in chains):
        raise ConfigError(f"chains must be whole numbers >= 0 (chain c is trained with seed c), got {chains!r}")

    labels = list(dict.fromkeys(s.label for v in variants for s in v.sweep))
    knob = raw["knob"]
    if knob != "variant" and knob not in labels:
        raise ConfigError(f"knob={knob!r}: the plot's x axis is `variant` or one of the sweep labels "
                          f"({', '.join(labels) or 'none'})")

    reference = _mapping(raw["reference"], "reference", REFERENCE_KEYS, ("variant",))
    ref_name = reference["variant"]
    if ref_name not in names:
        raise ConfigError(f"reference.variant={ref_name!r} is not a variant of this study; its variants: "
                          f"{', '.join(names)}")
    ref_variant = variants[names.index(ref_name)]
    at = reference.get("at") or {}
    at = _mapping(at, "reference.at", [s.label for s in ref_variant.sweep], [s.label for s in ref_variant.sweep])
    for sweep in ref_variant.sweep:
        if str(at[sweep.label]) not in {str(v) for v in sweep.values}:
            raise ConfigError(f"reference.at.{sweep.label}={at[sweep.label]!r} is not among the values of "
                              f"variants.{ref_name}.sweep.{sweep.label} {list(sweep.values)}")
    ref_values = tuple((s.label, next(v for v in s.values if str(v) == str(at[s.label]))) for s in ref_variant.sweep)
    return Study(name=name, title=raw["title"].strip(), knob=knob, reference=(ref_name, ref_values),
                 starts=tuple(starts), chains=tuple(chains), variants=tuple(variants), source=source)


# --- the overrides of the multiruns ---------------------------------------------------------------------------------


def layout_overrides(study: Study) -> list[str]:
    """Where a study's cells write (outputs/studies/<study>/{runs,evals,work,hydra}) and read (the pipeline's world
    and start points), and its W&B group (ift.tracking: ``logger.study``)."""
    return [f"paths.outputs=${{paths.root}}/outputs/studies/{study.name}",
            "paths.world=${paths.root}/outputs/world",
            "paths.models=${paths.root}/outputs/models",
            f"+logger.study={study.name}"]


def run_name_pattern(variant: Variant) -> str:
    """run_name as an interpolation of the swept keys, start point and seed (quoted: Hydra's grammar takes nested
    interpolations only inside quotes)."""
    tags = "".join(f"-{s.label}${{{s.key}}}" for s in variant.sweep)
    return f"run_name='{variant.name}{tags}-${{start_point:${{start.name}},${{chain}}}}-s${{seed}}'"


def _job_overrides(study: Study, variant: Variant) -> list[str]:
    return [*variant.overrides, *layout_overrides(study), run_name_pattern(variant),
            "model_dir=${paths.runs}/${run_name}", "out=${paths.outputs}/evals/${run_name}",
            f"hydra.sweep.dir=${{paths.outputs}}/hydra/{variant.name}", "hydra.sweep.subdir=${run_name}"]


def _values(values) -> str:
    return ",".join(str(v) for v in values)


def multirun_overrides(study: Study, variant: Variant, passthrough: Sequence[str] = ()) -> list[str]:
    """The command-line overrides of ``variant``'s Hydra multirun: every start point x replicate (seed c with
    chain c's start points) x the sweep's values. ``passthrough`` (checked by check_passthrough) comes last."""
    return [*_job_overrides(study, variant), f"start={_values(study.starts)}", f"seed={_values(study.chains)}",
            "+chain=${seed}", *(f"{s.key}={_values(s.values)}" for s in variant.sweep), *passthrough]


def cell_overrides(study: Study, cell: Cell, passthrough: Sequence[str] = ()) -> list[str]:
    """The overrides the multirun gives ``cell``'s job (one value of every swept key)."""
    variant = study.variant(cell.variant)
    keys = {s.label: s.key for s in variant.sweep}
    return [*_job_overrides(study, variant), f"start={cell.start}", f"seed={cell.chain}", "+chain=${seed}",
            *(f"{keys[label]}={value}" for label, value in cell.values), *passthrough]


def check_passthrough(passthrough: Sequence[str]) -> tuple[str, ...]:
    """Command-line overrides passed on to every cell (``profile=smoke``, ``logger=none``, ``hydra/launcher=slurm``,
    ``hydra.launcher.partition=gpu``): no sweeps, nothing the study sets itself."""
    return check_overrides(list(passthrough), "command line", allow_hydra=True)
