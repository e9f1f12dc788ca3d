"""The pre-declared Frozen Lake study (issue 24, ``python -m ift.frozen_lake.study``, DVC stage
``frozen_lake_study``): the paper's Frozen Lake ordering tested over a grid of optimisers, learning rates, step
counts, method hyper-parameters and maps, with measures of the paper's explanation and of DPO's failure mode.

:mod:`.run`: config, running (batched, :mod:`ift.frozen_lake.batched`) and per-run measures; :mod:`.analysis`:
the tables; :mod:`.report`: the files; ``__main__``: the CLI. See docs/frozen_lake.md.
"""
