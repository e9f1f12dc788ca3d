"""Studies (issue 25): named Hydra multiruns over ``python -m ift.train`` then ``python -m ift.evaluate``, and their
reports. ``python -m ift.study study=<name>`` runs ``conf/study/<name>.yaml``.

:mod:`.spec`: a study's YAML, its cells and the multirun overrides that train them; :mod:`.launch`: the CLI (compose
and check every cell, one multirun per variant, then the report); :mod:`.job`: one cell, skipped when done
(ift.train.resume's fingerprints); :mod:`.report`: ``report/studies/<study>.{md,csv,png}``. docs/studies.md.
"""
