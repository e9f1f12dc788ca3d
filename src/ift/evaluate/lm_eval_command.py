"""``python -m ift.evaluate.lm_eval_command model_dir=<checkpoint> out=<dir>``: the ``lm_eval`` command lines that
rerun a checkpoint's leaderboard evaluation with lm-eval's own CLI, and the task files they read.

    python -m ift.evaluate.lm_eval_command model_dir=outputs/runs/ift-base-s0 out=/tmp/ift-base-s0-cli
    bash /tmp/ift-base-s0-cli/lm_eval_commands.sh      # lm_eval (the venv's) on PATH

``python -m ift.evaluate`` calls ``lm_eval.simple_evaluate`` from Python, over task YAMLs rendered into a temporary
directory that it deletes afterwards; this command writes down what it runs, using the same config (``profile=``,
``suite=``, ``eval.*`` overrides as for ``ift.evaluate``). It writes into ``out`` (a directory of its own, not the
evaluation's, whose files it leaves alone):

* ``tasks/``: the suite's task YAMLs as the evaluation renders them (suite=toy: :func:`ift.evaluate.suites.
  render_toy_tasks`, the world files' absolute paths and the shot counts written in; suite=openllm: our ARC-Gen
  YAML, the other tasks being lm-eval's registry tasks);
* ``lm_eval_commands.sh``: the environment the pipeline's evaluation stages run in (params.yaml's pinned CPU
  numerics, with ``OMP_NUM_THREADS`` set to ``eval.threads``, which the evaluation sets through
  ``torch.set_num_threads``; the hub offline or not as here), then one ``lm_eval`` line per ``simple_evaluate`` call
  of the evaluation (:func:`ift.evaluate.suites.evaluation_calls`: toy, the chat-template tasks in one call and
  the plain-text WinoGrande in another), with that call's arguments: its tasks, ``--include_path <out>/tasks``, its
  ``num_fewshot`` (registry suite; toy shot counts are in the YAMLs), ``--apply_chat_template --fewshot_as_multiturn``
  or ``--fewshot_as_multiturn false``, the batch size, the device, and ``--model_args pretrained=<checkpoint>,
  dtype=<dtype>,max_length=<window>``, the dtype and context window the evaluation's model runs with
  (:func:`model_args`); ``simple_evaluate``'s default seeds, which the evaluation uses, are written out. Line
  ``i`` writes lm-eval's results JSON under ``<out>/results/call_<i>/``.

Every metric of every task in those results equals the evaluation's ``leaderboard.json`` (its ``lm_eval.results``
and the headline values), tested on a smoke checkpoint (tests/ift/evaluate/test_lm_eval_command.py). The evaluation's lm-eval
model only counts over-long prompts (``truncated_requests``, ours, not lm-eval's); with ``eval.parallel`` its
generation tasks run in a forked process as a separate call, which changes no batch (lm-eval batches
log-likelihood and generation requests apart), so the lines follow the single-process calls. What the CLI cannot
express is refused rather than written wrong: a ``eval.bootstrap_iters`` other than ``simple_evaluate``'s
default, and a chat-template evaluation of a checkpoint whose tokenizer has no chat template (the evaluation then
uses the Zephyr template, :func:`ift.checkpoints.load_causal_lm`).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ift  # noqa: F401  (offline defaults before any HF import)
from ift.paths import REPO_ROOT

SCRIPT_NAME = "lm_eval_commands.sh"
TASKS_SUBDIR = "tasks"
RESULTS_SUBDIR = "results"
PARAMS_FILE = REPO_ROOT / "params.yaml"  # its cpu_numerics: what the pipeline's evaluation stages export
HUB_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")  # ift sets them to 1 unless exported (ift/__init__.py)
_PLAIN = re.compile(r"[A-Za-z0-9_./:+@-]+")  # a model_args value lm-eval's key=value form carries unchanged


class CommandError(ValueError):
    """The evaluation cannot be written as lm-eval CLI lines that reproduce its numbers."""


def simple_evaluate_defaults() -> dict[str, Any]:
    """The defaults of ``lm_eval.simple_evaluate`` that the evaluation relies on (it does not pass these)."""
    import lm_eval

    parameters = inspect.signature(lm_eval.simple_evaluate).parameters
    names = ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed", "bootstrap_iters")
    return {name: parameters[name].default for name in names}


@dataclass(frozen=True)
class ModelArgs:
    """What lm-eval's ``hf`` model needs to rebuild the evaluation's model, and what the checkpoint allows."""

    pretrained: str          # absolute checkpoint path, or the hub id
    dtype: str               # float32 | bfloat16 | float16
    max_length: int          # the context window the evaluation's lm-eval model uses
    device: str              # cpu | cuda
    has_chat_template: bool  # the tokenizer carries one (else the evaluation substitutes Zephyr's)

    def cli(self) -> str:
        """``--model_args``: lm-eval's ``key=value,...`` form, or JSON where a value would not survive it (a comma
        in a path)."""
        values = {"pretrained": self.pretrained, "dtype": self.dtype, "max_length": self.max_length}
        if all(_PLAIN.fullmatch(str(value)) for value in values.values()):
            return ",".join(f"{key}={value}" for key, value in values.items())
        return json.dumps(values)


def model_args(model_dir: str, eval_cfg: Mapping[str, Any]) -> ModelArgs:
    """lm-eval's ``hf`` model as the evaluation runs it: the checkpoint, the device and dtype
    :func:`ift.evaluate.checkpoint_eval.resolve_device` / ``resolve_dtype`` pick, and the context window of the evaluation's
    lm-eval model: ``eval.max_length`` when set, else what lm-eval resolves from the model config and the tokenizer
    as the evaluation hands it over (``model_max_length`` raised to the model's window,
    :func:`ift.checkpoints.widen_tokenizer_window`)."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoConfig, AutoTokenizer

    from ift.checkpoints import check_checkpoint_dir, is_hub_id, widen_tokenizer_window
    from ift.evaluate.checkpoint_eval import resolve_device, resolve_dtype

    ref = str(model_dir)
    if not is_hub_id(ref):
        ref = str(check_checkpoint_dir(ref, what="model_dir").resolve())
    device = resolve_device(str(eval_cfg.get("device", "auto")))
    dtype = str(resolve_dtype(str(eval_cfg.get("dtype", "auto")), device)).removeprefix("torch.")
    config = AutoConfig.from_pretrained(ref)
    tokenizer = AutoTokenizer.from_pretrained(ref)
    if eval_cfg.get("max_length"):
        window = int(eval_cfg["max_length"])
    else:
        widen_tokenizer_window(config, tokenizer)
        window = resolve_max_length(config, tokenizer, default=HFLM._DEFAULT_MAX_LENGTH)
    return ModelArgs(pretrained=ref, dtype=dtype, max_length=int(window), device=device,
                     has_chat_template=tokenizer.chat_template is not None)


def lm_eval_argv(call: tuple[int | None, bool, list[str]], *, index: int, args: ModelArgs,
                 eval_cfg: Mapping[str, Any], tasks_dir: Path, results_dir: Path) -> list[str]:
    """The ``lm_eval`` command line of one ``(num_fewshot, chat_template, task names)`` call
    (:func:`ift.evaluate.suites.evaluation_calls`), with the arguments :func:`ift.evaluate.leaderboard.run_lm_eval`
    and :func:`ift.evaluate.leaderboard.make_lm` pass."""
    num_fewshot, chat_template, names = call
    defaults = simple_evaluate_defaults()
    argv = ["lm_eval", "--model", "hf", "--model_args", args.cli(), "--tasks", ",".join(names),
            "--include_path", str(tasks_dir)]
    if num_fewshot is not None:
        argv += ["--num_fewshot", str(num_fewshot)]
    argv += ["--batch_size", str(eval_cfg.get("batch_size", 32)), "--device", args.device]
    # run_lm_eval: apply_chat_template=fewshot_as_multiturn=chat_template. The CLI turns fewshot_as_multiturn on with
    # the chat template by itself; it is written out both ways, `false` being simple_evaluate's False exactly.
    argv += ["--apply_chat_template", "--fewshot_as_multiturn"] if chat_template else ["--fewshot_as_multiturn", "false"]
    seeds = (defaults["random_seed"], defaults["numpy_random_seed"], defaults["torch_random_seed"],
             defaults["fewshot_random_seed"])
    argv += ["--seed", ",".join(str(seed) for seed in seeds)]
    if eval_cfg.get("log_samples"):
        argv.append("--log_samples")
    return argv + ["--output_path", str(results_dir / f"call_{index}")]


def cpu_numerics(params_file: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml's ``cpu_numerics`` (empty without a params.yaml: the package used outside the repository)."""
    if not Path(params_file).is_file():
        return {}
    from ift.numerics import load_settings

    return load_settings(Path(params_file))


def command_environment(eval_cfg: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, str]:
    """The variables the lines run under: the hub settings in force here, the pinned CPU numerics (``settings``:
    params.yaml's ``cpu_numerics``, as the evaluation stages export them) and, for the thread count, ``eval.threads``
    (the evaluation's ``torch.set_num_threads``, which overrides the exported ``OMP_NUM_THREADS``)."""
    from ift.numerics import env_for

    env = {var: os.environ[var] for var in HUB_VARIABLES if var in os.environ}
    env.update(env_for(settings))
    if eval_cfg.get("threads"):
        env["OMP_NUM_THREADS"] = str(int(eval_cfg["threads"]))
    return env


def write_task_files(suite, tasks_dir: Path) -> Path:
    """The suite's task files in ``tasks_dir`` (replacing what was there): toy, rendered exactly as the evaluation
    renders them; registry, a copy of the directory the evaluation adds to lm-eval's (our ARC-Gen YAML)."""
    from ift.evaluate.suites import TASKS_DIR, render_toy_tasks

    if tasks_dir.is_dir() and not tasks_dir.is_symlink():
        shutil.rmtree(tasks_dir)
    if suite.source == "world":
        return render_toy_tasks(suite, tasks_dir)
    shutil.copytree(TASKS_DIR / "openllm", tasks_dir)
    return tasks_dir


def check_reproducible(suite, eval_cfg: Mapping[str, Any], args: ModelArgs) -> None:
    """Refuse what lm-eval's CLI cannot express (it would give other numbers than the evaluation)."""
    bootstrap = int(eval_cfg.get("bootstrap_iters", 100000))
    default = simple_evaluate_defaults()["bootstrap_iters"]
    if bootstrap != default:
        raise CommandError(f"eval.bootstrap_iters={bootstrap}: lm-eval's CLI always uses simple_evaluate's "
                           f"default ({default}); evaluate with that to compare")
    if any(spec.chat_template for spec in suite.tasks) and not args.has_chat_template:
        raise CommandError(f"{args.pretrained}: its tokenizer has no chat template, so the evaluation formats "
                           "chats with the Zephyr template (ift.checkpoints.load_causal_lm), which lm-eval's CLI "
                           "cannot be given; save the checkpoint with its chat template first")


def script_text(argvs: Sequence[Sequence[str]], env: Mapping[str, str], *, model_dir: str, suite_name: str,
                out: Path) -> str:
    from importlib.metadata import version

    lines = [
        "#!/usr/bin/env bash",
        f"# lm-eval's own CLI rerun of the leaderboard evaluation of {model_dir} (suite={suite_name}): every metric of",
        "# the results equals leaderboard.json of `python -m ift.evaluate` (its lm_eval.results and headline values).",
        f"# Written by python -m ift.evaluate.lm_eval_command for lm-eval {version('lm_eval')} (`lm_eval` on PATH).",
        f"# One line per simple_evaluate call of the evaluation; line i writes its results JSON under "
        f"{out / RESULTS_SUBDIR}/call_<i>/.",
        f"# Task files: {out / TASKS_SUBDIR} (rendered as the evaluation renders them).",
        "set -euo pipefail",
    ]
    if env:
        lines += ["# The evaluation stages' environment: params.yaml cpu_numerics, OMP_NUM_THREADS = eval.threads "
                  "(the evaluation's torch.set_num_threads), hub access as when this was written.",
                  "export " + " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())]
    lines += [shlex.join(argv) for argv in argvs]
    return "\n".join(lines) + "\n"


def write_commands(*, model_dir: str, out: str | Path, suite, eval_cfg: Mapping[str, Any],
                   settings: Mapping[str, Any] | None = None) -> Path:
    """Write ``out/tasks/`` and ``out/lm_eval_commands.sh`` for the leaderboard evaluation of ``model_dir``; return
    the script's path. ``settings``: the CPU numerics to pin (default: params.yaml's ``cpu_numerics``)."""
    from ift.evaluate.checkpoint_eval import check_eval_config
    from ift.evaluate.suites import check_world_files, evaluation_calls
    from ift.io import write_text_atomic

    if not model_dir:
        raise CommandError("model_dir is not set: python -m ift.evaluate.lm_eval_command model_dir=<checkpoint> "
                           "out=<dir>")
    if not out:
        raise CommandError("out is not set: python -m ift.evaluate.lm_eval_command model_dir=<checkpoint> out=<dir>")
    check_eval_config(eval_cfg, ["leaderboard"])
    if suite.source == "world":
        check_world_files(suite)
    args = model_args(str(model_dir), eval_cfg)
    check_reproducible(suite, eval_cfg, args)
    out = Path(out).resolve()
    tasks_dir = write_task_files(suite, out / TASKS_SUBDIR)
    argvs = [lm_eval_argv(call, index=index, args=args, eval_cfg=eval_cfg, tasks_dir=tasks_dir,
                          results_dir=out / RESULTS_SUBDIR)
             for index, call in enumerate(evaluation_calls(suite), start=1)]
    env = command_environment(eval_cfg, cpu_numerics() if settings is None else settings)
    script = write_text_atomic(out / SCRIPT_NAME, script_text(argvs, env, model_dir=str(model_dir),
                                                                suite_name=suite.name, out=out))
    script.chmod(0o755)
    return script


def run_from_config(cfg) -> Path:
    """The Hydra app's body: the suite and eval settings out of the config, then :func:`write_commands`."""
    from omegaconf import OmegaConf

    from ift.evaluate.suites import suite_from_config

    suite = suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True))
    script = write_commands(model_dir=cfg.get("model_dir"), out=cfg.get("out"), suite=suite,
                            eval_cfg=OmegaConf.to_container(cfg.eval, resolve=True))
    print(script.read_text(), end="")
    print(f"[lm_eval_command] wrote {script} and {script.parent / TASKS_SUBDIR}/")
    return script


def main() -> None:
    import hydra

    from ift.paths import CONF_DIR

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _app(cfg) -> None:
        run_from_config(cfg)

    _app()


if __name__ == "__main__":
    main()
