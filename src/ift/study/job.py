"""``python -m ift.study.job``: one cell of a study, the Hydra app each study multirun runs per job.

It runs ``python -m ift.train`` and then ``python -m ift.evaluate`` with the job's own overrides, each in a fresh
process, exactly as the pipeline's train and eval stages do (the evaluation forks on CPU, which it may only do in a
process that has not trained yet: ift.evaluate.forked). A cell already done is skipped, recognised by the stamp the
existing resume logic computes (ift.train.resume):

* training: ``run_fingerprint(config_hash(cfg), checkpoint_digest(start point))``, written beside the finished run as
  ``runs/<name>.fingerprint`` (as SFT+DPO keeps its finished SFT half). A run directory with the same stamp is
  kept; one with another stamp (its config or its start point changed, or no stamp: killed before it was written) is
  trained again, and the log says why (``fingerprint_change``). A killed training resumes from its last checkpoint in
  ``work/<name>`` as every run does.
* evaluation: ``weights=<checkpoint_digest(run dir)> settings=<hash of suite, judge, eval, evals>`` beside the
  results as ``evals/<name>.fingerprint``: evaluated again when the weights or the evaluation settings changed.

Both stamps also carry ``code=<code_digest()>``, a digest of the package source that trains and evaluates: after a
code change every cell is trained and evaluated again, as DVC reruns every grid stage whose code changed. A finished
cell is never kept from other code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# The entry points a cell runs, imported for what they are: this module's code (and the DVC stage's dependency).
from ift.evaluate import checkpoint_eval  # also: RESULT_FILES
from ift.io import write_text_atomic
from ift.train import cell as train_cell  # noqa: F401
from ift.train.config_checks import validate_train_config
from ift.train.resume import checkpoint_digest, config_hash, fingerprint_change, run_fingerprint

TRAIN = ("-m", "ift.train")  # its __main__ runs ift.train.cell.main
EVALUATE = ("-m", "ift.evaluate")  # its __main__ runs ift.evaluate.checkpoint_eval.main
EVAL_KEYS = ("suite", "judge", "eval", "evals")  # what an evaluation's numbers depend on besides the weights


# Packages whose code cannot change a cell's weights or evaluation numbers: a change there keeps finished cells.
NOT_CELL_CODE = ("report", "frozen_lake", "bench", "study")


def code_digest() -> str:
    """sha256 (16 hex) over the ift package's Python source, without NOT_CELL_CODE: the code a cell ran."""
    import ift

    root = Path(ift.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in NOT_CELL_CODE:
            continue
        digest.update(f"{relative.as_posix()}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _with_code(stamp: str) -> str:
    return f"{stamp} code={code_digest()}"


def _change(why: Callable[[str, str], str]) -> Callable[[str, str], str]:
    """``why`` for stamps that also carry ``code=``: a code change is named first, in words."""
    def explain(old: str, new: str) -> str:
        code = {stamp: dict(t.split("=", 1) for t in stamp.split() if "=" in t).get("code") for stamp in (old, new)}
        if old and code[old] != code[new]:
            return "the ift source code it ran differs"
        strip = lambda stamp: " ".join(t for t in stamp.split() if not t.startswith("code="))  # noqa: E731
        return why(strip(old), strip(new))
    return explain


def stamp_of(directory: Path) -> Path:
    """The fingerprint file beside a finished run or evaluation directory."""
    return directory.with_name(f"{directory.name}.fingerprint")


def eval_stamp(cfg, run_dir: Path) -> str:
    """What an evaluation's numbers depend on: the weights it evaluates and its settings (EVAL_KEYS)."""
    from omegaconf import OmegaConf

    settings = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
                for key in EVAL_KEYS}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return _with_code(f"weights={checkpoint_digest(run_dir)} settings={digest}")


def _eval_change(old: str, new: str) -> str:
    """Why an evaluation stamped ``old`` is not the one stamped ``new`` (eval_stamp), in words for the log."""
    before, after = (dict(token.split("=", 1) for token in stamp.split() if "=" in token) for stamp in (old, new))
    changed = [f"its {part} changed" for part in ("weights", "settings") if before.get(part) != after[part]]
    return " and ".join(changed) if old else "no fingerprint was recorded for it"


def _done(stamp: Path, wanted: str, finished: bool, name: str, what: str, why: Callable[[str, str], str]) -> bool:
    """Whether the finished work stamped ``stamp`` is the work asked for (``wanted``); says why when it is not."""
    kept = stamp.read_text().strip() if stamp.is_file() else ""
    if finished and kept == wanted:
        print(f"[study] {name}: {what} already, with this config and input; not {what} again")
        return True
    if finished:
        print(f"[study] {name}: {what} before, but {why(kept, wanted)}: redoing it")
    return False


def run_cell(cfg, overrides: Sequence[str], *, log_dir: Path | None = None,
             run: Callable[..., object] = subprocess.run) -> dict:
    """Train and evaluate the cell ``cfg`` (the job's composed config; ``overrides``: the job's task overrides, passed
    on to both commands), skipping what is done. Returns {"name", "trained", "evaluated"}."""
    validate_train_config(cfg)  # names a bad key or a missing start point before any digest or process
    name = str(cfg.run_name)
    run_dir, out = Path(str(cfg.paths.runs)) / name, Path(str(cfg.out))
    # The study refuses init_from (ift.study.spec.OWNED): every cell starts from its start point.
    wanted = _with_code(run_fingerprint(config_hash(cfg), checkpoint_digest(str(cfg.start.checkpoint))))
    trained = not _done(stamp_of(run_dir), wanted, (run_dir / "train_metrics.json").is_file(), name, "trained",
                        _change(fingerprint_change))
    if trained:
        _command(run, TRAIN, overrides, log_dir, "train")
        write_text_atomic(stamp_of(run_dir), wanted + "\n")

    wanted = eval_stamp(cfg, run_dir)
    results = [out / checkpoint_eval.RESULT_FILES[e][0] for e in cfg.evals if e in checkpoint_eval.RESULT_FILES]
    evaluated = not _done(stamp_of(out), wanted, bool(results) and all(p.is_file() for p in results), name,
                          "evaluated", _change(_eval_change))
    if evaluated:
        _command(run, EVALUATE, overrides, log_dir, "evaluate")
        write_text_atomic(stamp_of(out), wanted + "\n")
    return {"name": name, "trained": trained, "evaluated": evaluated}


def _command(run, module: tuple[str, str], overrides: Sequence[str], log_dir: Path | None, step: str) -> None:
    """``python -m <module> <overrides>``, its Hydra logs in the job's own directory; a failure fails the job."""
    logs = [f"hydra.run.dir={log_dir / step}"] if log_dir is not None else []
    run([sys.executable, *module, *overrides, *logs], check=True)


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from ift.paths import CONF_DIR

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _app(cfg) -> dict:
        hydra_cfg = HydraConfig.get()
        return run_cell(cfg, list(hydra_cfg.overrides.task), log_dir=Path(hydra_cfg.runtime.output_dir))

    _app()


if __name__ == "__main__":
    main()
