"""``python -m ift.evaluate model_dir=<dir> out=<dir> [suite=toy|openllm] [judge=...] [evals=[leaderboard,alpaca]]``:
see ift.evaluate.checkpoint_eval."""

from ift.evaluate.checkpoint_eval import main

if __name__ == "__main__":
    main()
