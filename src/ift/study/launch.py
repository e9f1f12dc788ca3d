"""``python -m ift.study study=<name> [--dry-run | --report-only] [overrides ...]``: run a study, then tabulate it.

    python -m ift.study study=ablation                           # locally: Hydra's basic launcher, one cell at a time
    python -m ift.study study=lambda profile=smoke logger=none   # any override is passed on to every cell
    python -m ift.study study=recipe hydra/launcher=slurm hydra.launcher.partition=gpu   # one SLURM job per cell
    python -m ift.study study=ablation --dry-run                 # print the multirun commands and cells, run nothing
    python -m ift.study study=ablation --report-only             # tabulate what exists (missing cells are named)
    python -m ift.study study=path/to/mine.yaml                  # a study of your own (conf/study/*.yaml as models)

Every cell's config is composed first, as its job will compose it, so a typo in a key, a bad value or a missing start
point fails here in seconds, naming it. Then each variant is one Hydra multirun of ``python -m ift.study.job``
(ift.study.job: train then evaluate, skipping what is done) over start points x replicates x its sweep, in the
order of the study's YAML. A variant whose multirun fails does not stop the others; the report names the cells it
lacks and the command exits non-zero.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ift.methods import ConfigError
from ift.study import report as study_report
from ift.study import spec as study_spec

FLAGS = ("--dry-run", "--report-only")
USAGE = ("usage: python -m ift.study study=<name or .yaml path> [--dry-run | --report-only] [hydra overrides ...]; "
         "the studies in conf/study/: ")


def parse_args(argv: Sequence[str]) -> tuple[str, set[str], list[str]]:
    """(study reference, flags, overrides passed on to every cell)."""
    refs = [arg.split("=", 1)[1] for arg in argv if arg.startswith("study=")]
    flags = {arg for arg in argv if arg.startswith("--")}
    unknown = sorted(flags - set(FLAGS))
    if len(refs) != 1 or unknown or flags >= set(FLAGS):
        problem = (f"unknown option {unknown[0]}" if unknown else "--dry-run and --report-only exclude each other"
                   if flags >= set(FLAGS) else "give exactly one study=<name>")
        raise ConfigError(f"{problem}. {USAGE}{', '.join(study_spec.known_studies())}")
    passthrough = [arg for arg in argv if not arg.startswith("study=") and not arg.startswith("--")]
    return refs[0], flags, passthrough


def multirun_command(study: study_spec.Study, variant: study_spec.Variant, passthrough: Sequence[str]) -> list[str]:
    """``python -m ift.study.job --multirun <variant's overrides>``: Hydra's own sweeper and launcher (basic, or the
    one ``hydra/launcher=...`` in ``passthrough`` picks) run one job per cell."""
    from ift.study import job

    return [sys.executable, "-m", job.__name__, "--multirun", *study_spec.multirun_overrides(study, variant, passthrough)]


def compose(*override_lists: Sequence[str]) -> list:
    """The repository's Hydra config composed with each list of overrides, as an app would (hydra.* resolvable)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from ift.paths import CONF_DIR

    GlobalHydra.instance().clear()
    configs = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        for overrides in override_lists:
            try:
                configs.append(hydra_compose(config_name="config", overrides=list(overrides),
                                             return_hydra_config=True))
            except HydraException as err:
                raise ConfigError(f"{err} (overrides: {' '.join(overrides)})") from err
    return configs


def root_override(root: str) -> str:
    """``paths.root=<root>`` as Hydra's override grammar reads it back exactly: quoted by Hydra's own QuotedString
    (unquoted, a comma would make a sweep and a backslash or quote would be parsed)."""
    from hydra.core.override_parser.types import Quote, QuotedString

    return f"paths.root={QuotedString(text=root, quote=Quote.single).with_quotes()}"


def resolvable(cfg):
    """``cfg`` with Hydra's own config set, so that ${hydra:...} (paths.root's default) resolves."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    return cfg


def preflight(study: study_spec.Study, passthrough: Sequence[str], *, start_points: bool = True) -> int:
    """Compose every cell's config as its job will; check its method keys (and, with ``start_points``, the whole
    training config, start checkpoints included) and that its run_name is the cell's name. Returns the cell count."""
    from ift.methods import check_method
    from ift.train.config_checks import validate_train_config

    cells = study.cells()
    try:
        configs = compose(*(study_spec.cell_overrides(study, cell, passthrough) for cell in cells))
    except ConfigError as err:
        raise ConfigError(f"study {study.name}: {err}") from err
    for cell, cfg in zip(cells, configs):
        try:
            resolvable(cfg)
            check_method(cfg.method)
            if start_points:
                validate_train_config(cfg)
            name = str(cfg.run_name)
        except ConfigError as err:
            raise ConfigError(f"study {study.name}, cell {cell.name}: {err}") from err
        if name != cell.name:  # the run_name interpolation and ift.study.spec.cell_name disagree on a value's form
            raise ConfigError(f"study {study.name}: the cell {cell.name} would run as {name}; write its value as "
                              f"Hydra reads it in {study.source} (a YAML float needs its dot: 1.0e-4, not 1e-4, "
                              "which YAML reads as a string)")
    return len(cells)


def main(argv: Sequence[str] | None = None) -> int:
    began = time.time()
    try:
        ref, flags, passthrough = parse_args(list(sys.argv[1:] if argv is None else argv))
        study = study_spec.load_study(ref)
        passthrough = list(study_spec.check_passthrough(passthrough))
        count = preflight(study, passthrough, start_points=not flags)  # only training needs the start points
    except ConfigError as err:
        print(f"[study] {err}", file=sys.stderr)
        return 2
    print(f"[study] {study.name}: {count} cells ({len(study.variants)} variants x their sweeps x "
          f"{len(study.starts)} start points x chains {list(study.chains)}) under outputs/studies/{study.name}/")
    cfg = resolvable(compose([*study_spec.layout_overrides(study), *passthrough])[0])
    if not any(arg.startswith("paths.root=") for arg in passthrough):
        # Hydra's sweeper resolves hydra.sweep.dir, hence paths.root, before any job's Hydra config exists, and
        # paths.root's default (${hydra:runtime.cwd}, also inside oc.env's default) cannot resolve then: every job
        # gets this run's root spelled out.
        passthrough.append(root_override(str(cfg.paths.root)))
    failed = []
    for variant in study.variants:
        command = multirun_command(study, variant, passthrough)
        print(f"[study] {study.name}/{variant.name}: {shlex.join(command)}", flush=True)
        if flags & set(FLAGS):
            continue
        started = time.time()
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(variant.name)
        print(f"[study] {study.name}/{variant.name}: {time.time() - started:.0f} s"
              + (" (FAILED)" if variant.name in failed else ""), flush=True)
    if "--dry-run" in flags:
        return 0
    result = study_report.write_study_report(study, cfg, out_dir=Path(str(cfg.paths.root)) / "report" / "studies")
    print(f"[study] {study.name}: report in {', '.join(str(p) for p in result['files'].values())}; "
          f"{len(result['missing'])} result files missing; {time.time() - began:.0f} s in all")
    if failed:
        print(f"[study] {study.name}: the multiruns of {', '.join(failed)} failed (see their logs above)",
              file=sys.stderr)
        return 1
    return 0
