"""AlpacaEval through ``alpaca_eval.evaluate``: greedy chat answers to the instruction set, judged pairwise against
reference outputs, and the ``alpaca.json`` they become.

Judges (``judge=``, conf/judge/*.yaml):

* ``toy`` (tiny and smoke profiles): the miniature world's programmatic judge, ``ift.world.judge.judge``
  (correctness against the world's ground truth, then format, then concision), plugged into alpaca-eval as the
  annotator's ``fn_completions`` (:mod:`ift.evaluate.toy_judge`); references = the world's deliberately imperfect
  reference outputs. Nothing leaves the machine.
* ``alpaca_eval_2`` / ``alpaca_eval_1`` (paper profile): alpaca-eval's ``weighted_alpaca_eval_gpt4_turbo`` /
  ``alpaca_eval_gpt4`` annotator configs (GPT-4 via the OpenAI API) against AlpacaEval's reference outputs
  (GPT-4 Turbo / text-davinci-003), read from the JSON file on the hub: alpaca-eval's default loader runs a
  dataset script that datasets 5.x refuses.

``alpaca.json``::

    {
      "judge": "toy" | "alpaca_eval_2" | "alpaca_eval_1",
      "annotator": str,                   # alpaca-eval annotator config name
      "model_dir": str,
      "win_rate": float,                  # 0-100, alpaca-eval's convention: a tie counts one half
      "standard_error": float,            # of the win rate, 0-100 scale
      "lc_win_rate_minimal": float | null,
      "lc_win_rate": float | null,        # official AlpacaEval 2 length-controlled win rate (alpaca_eval_2 only)
      "avg_length": float,                # mean answer length in characters (alpaca-eval's avg_length, unrounded)
      "n": int,                           # judged pairs
      "n_wins": int, "n_wins_base": int, "n_draws": int,
      "seconds": float,                   # wall time: generation + judging
      "generation_seconds": float
    }

``alpaca_annotations.json`` beside it holds alpaca-eval's annotations (instruction, both outputs, generators,
preference: 1 = reference better, 2 = model better, 1.5 = tie).

``lc_win_rate_minimal`` is NOT the official AlpacaEval 2 length-controlled win rate. It is alpaca-eval's
``length_controlled_minimal`` GLM: P(model preferred) = sigmoid(a * tanh(d / std(d)) + b), d = the reference's
answer length minus the model's in characters (alpaca-eval's len(output_1) - len(output_2)), fitted as alpaca-eval
does (L1-penalised logistic regression on the soft preferences, penalty chosen by 5-fold cross-validation) on this
evaluation's own annotations, without the instruction-difficulty term and without the regularisation towards
alpaca-eval's gamed baselines; reported as the mean prediction at d = 0, i.e. the win rate the model would have if
its answers were as long as the references. It is computed here without alpaca-eval's hub download (instruction
difficulties, which this formula does not use), so it runs offline, and it equals alpaca-eval's own
``get_length_controlled_winrate(glm_name="length_controlled_minimal")`` (tested). Where that GLM is undefined we
report what it tends to: the raw win rate when the model won or lost every pair (the fit diverges) or when every
length difference is the same (nothing to control for); null with fewer than 10 judged pairs (too few for the
cross-validation). The official figure (``length_controlled_v1``: instruction difficulty, regularisation towards
the gamed baselines, defined on the 805 AlpacaEval instructions) is ``lc_win_rate``, computed by alpaca-eval itself
for ``judge=alpaca_eval_2`` only.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def load_references(references: str | Mapping[str, str]) -> list[dict[str, Any]]:
    """Reference outputs in AlpacaEval's schema: a local JSON file, or ``{repo_id, filename}`` of a hub dataset
    file (downloaded with huggingface_hub and read as JSON, not through the dataset script)."""
    if isinstance(references, Mapping):
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id=str(references["repo_id"]), filename=str(references["filename"]),
                               repo_type="dataset")
    else:
        path = references
    with open(path, encoding="utf-8") as handle:
        rows = json.load(handle)
    missing = [i for i, row in enumerate(rows) if not {"instruction", "output"} <= set(row)]
    if missing:
        raise ValueError(f"{path}: rows {missing[:5]} lack 'instruction' or 'output' (AlpacaEval schema)")
    return rows


def generate_outputs(model, tokenizer, references: Sequence[Mapping[str, Any]], *, generator: str,
                     max_new_tokens: int, batch_size: int) -> list[dict[str, Any]]:
    """Greedy chat-template answers to each reference instruction, as AlpacaEval model-output rows."""
    from ift.generation import generate_chat

    conversations = [[{"role": "user", "content": row["instruction"]}] for row in references]
    generations = generate_chat(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                batch_size=batch_size, progress=True)
    return [
        {"instruction": row["instruction"], "output": gen.text, "generator": generator,
         **({"dataset": row["dataset"]} if "dataset" in row else {})}
        for row, gen in zip(references, generations)
    ]


def _records(annotations) -> list[dict[str, Any]]:
    import pandas as pd

    frame = annotations if isinstance(annotations, pd.DataFrame) else pd.DataFrame(list(annotations))
    return json.loads(frame.to_json(orient="records"))


# What alpaca-eval's length-controlled GLM fit prints on our 32-64-item toy sets: liblinear's C code writes
# "WARNING: class label 1 specified in weight is not found" to stderr for fits (cross-validation folds x the
# regularisation grid) whose rows carry no class-1 weight, which happens when a model wins only a few pairs
# (alpaca-eval duplicates each pair as class 1 and class 0, weighted by the preference), and scikit-learn warns
# "Liblinear failed to converge" on folds that are (nearly) separable. Both are alpaca-eval's internals, expected
# on a few dozen judged pairs, and say nothing about our code or the figure (tests/integration/test_wandb_runs.py checks that
# the figure is unchanged and other stderr lines pass).
GLM_FIT_NOISE = ("class label 1 specified in weight is not found",)
GLM_FIT_WARNING = r"Liblinear failed to converge"


@contextmanager
def _without_glm_fit_noise():
    """Run the GLM fit with :data:`GLM_FIT_NOISE` lines dropped from stderr (file descriptor 2: liblinear writes
    there from C, below Python's ``sys.stderr``) and :data:`GLM_FIT_WARNING` ignored; every other line written to
    stderr meanwhile is passed on when the fit ends."""
    import os
    import sys
    import tempfile

    from sklearn.exceptions import ConvergenceWarning

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=GLM_FIT_WARNING, category=ConvergenceWarning)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(noise in line for noise in GLM_FIT_NOISE)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def lc_win_rate_minimal(annotations: Sequence[Mapping[str, Any]]) -> float | None:
    """alpaca-eval's ``length_controlled_minimal`` GLM, fitted offline (see the module docstring); 0-100.

    Same features, fit (``fit_LogisticRegressionCV``) and prediction as alpaca-eval's
    ``get_length_controlled_winrate(glm_name="length_controlled_minimal")``, minus its download of instruction
    difficulties, which that formula does not use. None when it cannot be fitted (too few judged pairs)."""
    import numpy as np
    import pandas as pd
    from alpaca_eval.metrics.glm_winrate import GLM_INFO, fit_LogisticRegressionCV, make_dmatrix_for_model

    info = GLM_INFO["length_controlled_minimal"]
    frame = pd.DataFrame(list(annotations))
    frame = frame[frame["preference"].notna()].reset_index(drop=True)
    if len(frame) < 2 * info["kwargs"]["n_splits"]:
        return None
    preference = frame["preference"].astype(float).replace({0.0: 1.5}) - 1  # 1.0: the model (output_2) wins
    if preference.nunique() == 1 and preference.iloc[0] in (0.0, 1.0):
        # Unanimous outcome: the GLM's maximum-likelihood fit is at infinity (liblinear sees one class and
        # returns 50%); no length adjustment can turn all-losses or all-wins into anything else.
        return float(preference.iloc[0] * 100)
    delta = frame["output_1"].str.len() - frame["output_2"].str.len()
    spread = delta.std()
    if not spread or not np.isfinite(spread):
        # Every pair has the same length difference: nothing to control for (alpaca-eval would divide by 0).
        return float(preference.mean() * 100)
    data = pd.DataFrame({"preference": preference, "std_delta_len": delta / spread, "not_gamed_baseline": True})
    test = data[["not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0
    try:
        with warnings.catch_warnings(), _without_glm_fit_noise():
            warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices about alpaca-eval's call
            train, design = make_dmatrix_for_model(data, test, formula=info["formula"])
            model = fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, **info["kwargs"])
    except ValueError as err:  # e.g. a cross-validation split without both outcomes
        log.warning("lc_win_rate_minimal: GLM fit failed (%s); reporting null", err)
        return None
    return float(model.predict_proba(design)[:, 1].mean() * 100)


def annotate(model_outputs: list[dict], references: list[dict], *, annotators_config: str | Path,
             fn_metric: str = "get_winrate", metric_kwargs: dict | None = None,
             annotator_kwargs: dict | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``alpaca_eval.evaluate`` and return (its leaderboard row for the model, the annotations).

    Nothing is written by alpaca-eval itself: no output path, no precomputed leaderboard, no annotation cache
    (its default cache would land beside the annotator config)."""
    from alpaca_eval import evaluate

    leaderboard, annotations = evaluate(
        model_outputs=model_outputs,
        reference_outputs=references,
        annotators_config=str(annotators_config),
        output_path=None,
        precomputed_leaderboard=None,
        is_return_instead_of_print=True,
        is_cache_leaderboard=False,
        fn_metric=fn_metric,
        metric_kwargs=metric_kwargs,
        sort_by="win_rate",
        caching_path=None,
        **(annotator_kwargs or {}),
    )
    generator = model_outputs[0]["generator"]
    row = json.loads(leaderboard.loc[[generator]].to_json(orient="records"))[0]
    return row, _records(annotations)


def summarize(row: Mapping[str, Any], annotations: list[dict], model_outputs: list[dict], *, judge: str,
              annotator: str, model_dir: str, official_lc: bool) -> dict[str, Any]:
    """alpaca.json's numbers from alpaca-eval's leaderboard row and the annotations."""
    def _int(key):
        return int(row[key]) if row.get(key) is not None else None

    return {
        "judge": judge,
        "annotator": annotator,
        "model_dir": str(model_dir),
        "win_rate": float(row["win_rate"]),
        "standard_error": float(row["standard_error"]),
        "lc_win_rate_minimal": lc_win_rate_minimal(annotations),
        "lc_win_rate": float(row["length_controlled_winrate"]) if official_lc else None,
        "avg_length": sum(len(r["output"]) for r in model_outputs) / len(model_outputs),
        "n": _int("n_total"),
        "n_wins": _int("n_wins"),
        "n_wins_base": _int("n_wins_base"),
        "n_draws": _int("n_draws"),
    }


def evaluate_alpaca(model, tokenizer, judge_cfg: Mapping[str, Any], work_dir: Path, *, model_dir: str,
                    generator: str, max_new_tokens: int, batch_size: int) -> tuple[dict, list[dict]]:
    """(alpaca.json content, annotations) for one model. Writes nothing outside ``work_dir``."""
    from ift.evaluate.toy_judge import TOY_ANNOTATOR, toy_annotator

    start = time.perf_counter()
    references = load_references(judge_cfg["references"])
    outputs = generate_outputs(model, tokenizer, references, generator=generator,
                               max_new_tokens=max_new_tokens, batch_size=batch_size)
    generation_seconds = time.perf_counter() - start
    annotator = str(judge_cfg["annotator"])
    official_lc = bool(judge_cfg.get("official_lc", False))
    if annotator == TOY_ANNOTATOR:
        config, kwargs = toy_annotator(judge_cfg["answer_key"], work_dir / "annotators")
    else:
        config, kwargs = annotator, {}
    row, annotations = annotate(
        outputs, references, annotators_config=config,
        fn_metric="get_length_controlled_winrate" if official_lc else "get_winrate",
        metric_kwargs={"save_weights_dir": None} if official_lc else None,
        annotator_kwargs=kwargs,
    )
    record = summarize(row, annotations, outputs, judge=str(judge_cfg["name"]), annotator=annotator,
                       model_dir=model_dir, official_lc=official_lc)
    record["generation_seconds"] = round(generation_seconds, 2)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record, annotations
