"""scripts/stage_times.py: the per-stage split of a timestamped `dvc repro` log (docs/pipeline.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "stage_times.py"
sys.path.insert(0, str(SCRIPT.parent))
import stage_times  # noqa: E402

LOG = """\
100.0 Running stage 'world':
100.0 > python -m ift.world profile=smoke
102.0 [world] wrote outputs/world
102.5 Updating lock file 'dvc.lock'
103.0
103.0 Running stage 'grid/cells/dvc.yaml:train@ift-base-0':
103.0 > python -m ift.train method=ift
108.0 Loading weights:\r 50%\r100%
110.0 [train] ift-base-s0 done in 4.0 s
115.0 Updating lock file 'grid/cells/dvc.lock'
116.0 Running stage 'train@sft-base-0':
116.1 > python -m ift.train method=sft
121.0 [train] sft-base-s0 done in 3.0 s
124.0 Use `dvc push` to send your updates to remote storage.
"""


def test_each_stage_is_split_at_its_own_first_and_last_output_line():
    world, ift, sft = stage_times.parse_log(LOG.split("\n"))
    assert (world.name, world.startup, world.work, world.after, world.total) == ("world", 2.0, 0.0, 1.0, 3.0)
    assert (ift.name, ift.startup, ift.work, ift.after, ift.total) == ("grid/cells/dvc.yaml:train@ift-base-0", 5.0, 2.0, 6.0, 13.0)
    assert (sft.startup, sft.work, sft.after) == (5.0, 0.0, 3.0)  # DVC's closing lines are not the command's


def test_the_table_groups_a_matrix_by_kind_and_sums_the_run():
    text = stage_times.table(stage_times.parse_log(LOG.split("\n")))
    assert "| train | 2 | 5.0 | 1.0 | 4.5 | 21.0 |" in text
    assert "3 stages, 24 s from the first stage's start to the last line: start-up 12 s, work 2 s, after 10 s" in text


def test_a_line_without_a_time_names_its_number():
    with pytest.raises(SystemExit, match="line 2: expected"):
        stage_times.parse_log(["100.0 Running stage 'a':", "no time here"])


def test_run_mode_times_a_real_command_and_a_log_without_stages_is_an_error(tmp_path):
    code = "print(\"Running stage 'a':\"); print('> cmd'); print('hello', flush=True); print('Running stage \\'b\\':')"
    log = tmp_path / "t.log"
    done = subprocess.run([sys.executable, str(SCRIPT), str(log), "--run", "--", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout and "| a |" in done.stdout and "2 stages" in done.stdout
    assert len(log.read_text().splitlines()) == 4
    empty = tmp_path / "empty.log"
    empty.write_text("1.0 nothing\n")
    done = subprocess.run([sys.executable, str(SCRIPT), str(empty)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no 'Running stage' line" in done.stderr
