"""Evaluation: the leaderboard tasks through lm-eval and AlpacaEval through alpaca-eval, for any checkpoint."""
