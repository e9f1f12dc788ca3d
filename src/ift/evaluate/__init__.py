"""Evaluation: the leaderboard tasks through lm-eval and AlpacaEval through alpaca-eval, for any checkpoint.

``python -m ift.evaluate model_dir=<dir> out=<dir> [suite=toy|openllm] [judge=toy|alpaca_eval_2|alpaca_eval_1]
[evals=[leaderboard,alpaca]]`` (:mod:`ift.evaluate.checkpoint_eval`) writes into ``out``:

* ``leaderboard.json``: lm-eval's results for ARC, ARC-Gen, MMLU, TruthfulQA-mc2, WinoGrande and GSM8K (chat
  template, few-shot examples as turns) with a flat table of headline metrics and the paper's average
  (format: :mod:`ift.evaluate.leaderboard`; suites and their task YAMLs: :mod:`ift.evaluate.suites`, ``tasks/``);
* ``alpaca.json`` + ``alpaca_annotations.json``: AlpacaEval win rates against reference outputs, judged by the
  miniature world's programmatic judge (toy) or alpaca-eval's GPT-4 annotators (paper)
  (format: :mod:`ift.evaluate.alpaca_eval`; the toy annotator: :mod:`ift.evaluate.toy_judge`).

:mod:`ift.generation` is the batched greedy chat generation shared with the start-point quality check.
"""
