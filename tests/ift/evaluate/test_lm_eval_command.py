"""``python -m ift.evaluate.lm_eval_command``: the ``lm_eval`` lines it writes, run by lm-eval's own CLI, give every
number of the ``leaderboard.json`` that ``python -m ift.evaluate`` writes for the same checkpoint (the smoke
sft_beta start point), sample by sample; and what the lines say for the toy and openllm suites."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, compose

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke_pipeline")]

CHAT_CALL = ["toy_arc", "toy_arc_gen", "toy_mmlu", "toy_truthfulqa_mc2", "toy_gsm8k"]  # conf/suite/toy.yaml order


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "IFT_ROOT": str(root),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # the venv's lm_eval


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stderr[-4000:]}"
    return done


def _finite(obj):
    """NaN / infinity as null, as leaderboard.json writes them (ift.evaluate.leaderboard.json_safe)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_finite(value) for value in obj]
    return obj


def _responses(obj):
    """A sample's model responses in one form: lm-eval's CLI writes log-likelihoods and booleans as strings
    ('-16.6076...', 'False'), leaderboard's sample log as JSON numbers and booleans; repr round-trips floats."""
    if isinstance(obj, list):
        return [_responses(value) for value in obj]
    if isinstance(obj, str):
        if obj in ("True", "False"):
            return obj == "True"
        try:
            return float(obj)
        except ValueError:
            return obj
    return obj


def _lines(script: Path) -> list[list[str]]:
    return [shlex.split(line) for line in script.read_text().splitlines() if line.startswith("lm_eval ")]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_lm_eval_cli_lines_reproduce_every_number_of_the_evaluation(smoke_root, tmp_path):
    from ift.evaluate.lm_eval_command import cpu_numerics
    from ift.numerics import env_for

    checkpoint = smoke_root / "outputs" / "models" / "sft_beta"
    env = _env(smoke_root)
    common = ["profile=smoke", f"model_dir={checkpoint}", "eval.log_samples=true",  # per-sample logs on both sides
              f"hydra.run.dir={tmp_path / 'hydra'}"]
    # The evaluation as the pipeline's stage runs it: params.yaml's cpu_numerics exported (OMP_NUM_THREADS=2), the app
    # then setting eval.threads (1) through torch.set_num_threads.
    _run([sys.executable, "-m", "ift.evaluate", *common, "logger=none", "evals=[leaderboard]",
          f"out={tmp_path / 'evaluation'}"], {**env, **env_for(cpu_numerics())}, REPO_ROOT)
    _run([sys.executable, "-m", "ift.evaluate.lm_eval_command", *common, f"out={tmp_path / 'cli'}"], env, REPO_ROOT)
    script = tmp_path / "cli" / "lm_eval_commands.sh"
    lines = _lines(script)
    assert [_option(argv, "--tasks").split(",") for argv in lines] == [CHAT_CALL, ["toy_winogrande"]]
    _run(["bash", str(script)], env, tmp_path)  # lm-eval's own CLI, the script's environment and nothing of ours

    board = json.loads((tmp_path / "evaluation" / "leaderboard.json").read_text())
    ours = board["lm_eval"]
    results, n_shot, n_samples = {}, {}, {}
    for index, argv in enumerate(lines, start=1):
        found = glob.glob(str(tmp_path / "cli" / "results" / f"call_{index}" / "*" / "results_*.json"))
        assert len(found) == 1, found
        part = json.loads(Path(found[0]).read_text())
        assert sorted(part["results"]) == sorted(_option(argv, "--tasks").split(","))
        results.update(part["results"])
        n_shot.update(part["n-shot"])
        n_samples.update(part["n-samples"])
    # Every metric (value and stderr, every filter) of every task, exactly.
    assert sorted(results) == sorted(ours["results"])
    compared = 0
    for task, row in ours["results"].items():
        assert _finite(results[task]) == row, task
        compared += sum(1 for key in row if "," in key)
    assert compared == 16  # 8 metric values (arc acc / acc_norm, gsm8k's two filters, ...) and their 8 stderrs
    assert n_shot == ours["n-shot"] and n_samples == ours["n-samples"]
    for key, row in board["tasks"].items():  # the headline table and the average read from them
        line = results[row["lm_eval_task"]]
        assert (line[f"{row['metric']},{row['filter']}"], line[f"{row['metric']}_stderr,{row['filter']}"]) == \
            (row["value"], row["stderr"]), key
    # Sample by sample: the same prompts, log-likelihoods and generated texts.
    logged = json.loads((tmp_path / "evaluation" / "lm_eval_samples.json").read_text())
    for task, samples in logged.items():
        found = [path for path in glob.glob(str(tmp_path / "cli" / "results" / "call_*" / "*" / "samples_*.jsonl"))
                 if Path(path).stem.removeprefix("samples_").rsplit("_", 1)[0] == task]  # samples_<task>_<date>
        assert len(found) == 1, (task, found)
        cli = {(s["doc_id"], s["filter"]): s for s in map(json.loads, Path(found[0]).read_text().splitlines())}
        assert sorted(cli) == sorted((s["doc_id"], s["filter"]) for s in samples), task
        for sample in samples:
            other = cli[(sample["doc_id"], sample["filter"])]
            for field in ("doc_hash", "prompt_hash", "target_hash"):
                assert other[field] == sample[field], (task, sample["doc_id"], field)
            for field in ("resps", "filtered_resps"):
                assert _responses(other[field]) == _responses(sample[field]), (task, sample["doc_id"], field)


def _write(root: Path, out: Path, *overrides: str, model_dir: Path | None = None) -> Path:
    from omegaconf import OmegaConf

    from ift.evaluate.lm_eval_command import write_commands
    from ift.evaluate.suites import suite_from_config

    cfg = compose(["profile=smoke", *overrides], root=root)
    return write_commands(model_dir=str(model_dir or root / "outputs" / "models" / "sft_beta"), out=out,
                          suite=suite_from_config(OmegaConf.to_container(cfg.suite, resolve=True)),
                          eval_cfg=OmegaConf.to_container(cfg.eval, resolve=True))


def test_the_toy_lines_carry_the_evaluation_arguments(smoke_root, tmp_path):
    from ift.evaluate.lm_eval_command import cpu_numerics

    out = tmp_path / "cli"
    (out / "tasks").mkdir(parents=True)
    (out / "tasks" / "stale.yaml").write_text("task: stale\n")  # from an earlier suite: must not be indexed
    script = _write(smoke_root, out)
    assert sorted(p.name for p in out.iterdir()) == ["lm_eval_commands.sh", "tasks"]
    assert sorted(p.name for p in (out / "tasks").iterdir()) == [
        "arc.yaml", "arc_gen.yaml", "gsm8k.yaml", "mmlu.yaml", "truthfulqa_mc2.yaml", "winogrande.yaml"]
    rendered = (out / "tasks" / "arc.yaml").read_text()
    assert str(smoke_root / "outputs" / "world" / "tasks" / "arc" / "test.jsonl") in rendered
    assert not re.search("@[A-Z_]+@", rendered)  # every placeholder filled

    text = script.read_text()
    assert os.access(script, os.X_OK) and text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    exports = dict(item.split("=", 1) for item in shlex.split(next(
        line for line in text.splitlines() if line.startswith("export ")))[1:])
    assert exports["OMP_NUM_THREADS"] == "1"  # eval.threads, not params.yaml's 2: the evaluation's torch threads
    assert exports["ATEN_CPU_CAPABILITY"] == str(cpu_numerics()["aten_cpu_capability"])
    assert exports["HF_HUB_OFFLINE"] == "1" and exports["HF_DATASETS_OFFLINE"] == "1"

    chat, plain = _lines(script)
    checkpoint = (smoke_root / "outputs" / "models" / "sft_beta").resolve()
    for argv, index in ((chat, 1), (plain, 2)):
        assert argv[:5] == ["lm_eval", "--model", "hf", "--model_args",
                            f"pretrained={checkpoint},dtype=float32,max_length=512"]
        assert _option(argv, "--include_path") == str(out / "tasks")
        assert (_option(argv, "--batch_size"), _option(argv, "--device")) == ("32", "cpu")
        assert _option(argv, "--seed") == "0,1234,1234,1234"
        assert _option(argv, "--output_path") == str(out / "results" / f"call_{index}")
        assert "--num_fewshot" not in argv and "--log_samples" not in argv and "--gen_kwargs" not in argv
    assert _option(chat, "--tasks") == ",".join(CHAT_CALL)
    assert "--apply_chat_template" in chat and _option(chat, "--apply_chat_template") == "--fewshot_as_multiturn"
    assert _option(plain, "--tasks") == "toy_winogrande"
    assert "--apply_chat_template" not in plain and _option(plain, "--fewshot_as_multiturn") == "false"

    _write(smoke_root, out, "eval.max_length=300", "eval.batch_size=8", "eval.log_samples=true")
    for argv in _lines(script):
        assert _option(argv, "--model_args").endswith(",max_length=300") and _option(argv, "--batch_size") == "8"
        assert "--log_samples" in argv


def test_the_openllm_lines_are_one_per_shot_count(smoke_root, tmp_path):
    script = _write(smoke_root, tmp_path / "cli", "suite=openllm")
    calls = [(_option(argv, "--num_fewshot"), _option(argv, "--tasks"), _option(argv, "--batch_size"))
             for argv in _lines(script)]
    assert calls == [("25", "arc_challenge,arc_challenge_gen", "auto"), ("5", "mmlu,winogrande,gsm8k", "auto"),
                     ("0", "truthfulqa_mc2", "auto")]
    assert sorted(p.name for p in (tmp_path / "cli" / "tasks").iterdir()) == ["arc_gen.yaml"]


def test_what_the_cli_cannot_express_is_refused(smoke_root, tmp_path):
    from ift.evaluate.lm_eval_command import CommandError

    with pytest.raises(CommandError, match="bootstrap_iters"):
        _write(smoke_root, tmp_path / "a", "eval.bootstrap_iters=1000")
    bare = tmp_path / "no_template"
    shutil.copytree(smoke_root / "outputs" / "models" / "sft_beta", bare)
    (bare / "chat_template.jinja").unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(CommandError, match="no chat template"):
        _write(smoke_root, tmp_path / "b", model_dir=bare)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before writing anything
