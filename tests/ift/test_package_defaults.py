"""What `import ift` sets for every stage process (src/ift/__init__.py): the fast exit and the quiet third-party logs.

Each check runs in a fresh interpreter, because both act on process-wide state (atexit, warning filters)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# atexit runs its handlers last-registered first: one registered before `import ift` runs after ift's, one registered
# after it runs before.
FREEZE_PROBE = """
import atexit, gc
atexit.register(lambda: print("earlier handler sees frozen:", gc.get_freeze_count() > 0))
{imports}
atexit.register(lambda: print("later handler sees frozen:", gc.get_freeze_count() > 0))
"""


def _run(code: str, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRL_EXPERIMENTAL_SILENCE"}
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_importing_ift_freezes_the_heap_at_exit_after_every_later_handler():
    done = _run(FREEZE_PROBE.format(imports="import ift"))
    assert done.returncode == 0, done.stderr
    # handlers registered after `import ift` (W&B's, logging's) still run on an unfrozen heap; then the heap is frozen,
    # so the interpreter's final garbage collection skips it
    assert done.stdout.splitlines() == ["later handler sees frozen: False", "earlier handler sees frozen: True"]


def test_without_ift_nothing_freezes_the_heap():
    done = _run(FREEZE_PROBE.format(imports=""))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["later handler sees frozen: False", "earlier handler sees frozen: False"]


TRL_DEPRECATED_ALIAS = """
{imports}
from transformers import MistralConfig, MistralForCausalLM
model = MistralForCausalLM(MistralConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
print(model.is_gradient_checkpointing)  # what TRL's unwrap_model_for_generation reads
"""


@pytest.mark.parametrize("imports, silenced", [("import ift", True), ("", False)])
def test_transformers_deprecated_alias_that_trl_reads_is_silenced_by_ift(imports, silenced):
    done = _run(TRL_DEPRECATED_ALIAS.format(imports=imports), "-W", "error::FutureWarning")
    assert (done.returncode == 0) is silenced, done.stderr[-2000:]
    if not silenced:
        assert "is_gradient_checkpointing" in done.stderr


@pytest.mark.parametrize("imports, silenced", [("import ift", True), ("", False)])
def test_trl_experimental_notice_is_silenced_by_ift(imports, silenced):
    done = _run(f"{imports}\nimport trl.experimental.orpo", "-W", "error")
    assert (done.returncode == 0) is silenced, done.stderr[-2000:]
    if not silenced:
        assert "TRLExperimentalWarning" in done.stderr
