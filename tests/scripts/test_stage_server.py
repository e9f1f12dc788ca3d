"""scripts/stage_server.py: a stage forked from a preloaded server behaves as the same stage in a fresh interpreter.

Every test runs a shell script under ``stage_server.run`` (what `make repro` and `make smoke` do around `dvc repro`)
and, where it compares, the same script without it. The toy stage module reports whether a library the server
preloads was already imported when it started: that is how a test knows the stage was forked, not exec'ed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "stage_server.py"
sys.path.insert(0, str(SCRIPT.parent))
import stage_server  # noqa: E402

PINNED = "OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"  # as the stage commands
MARKER = "email.mime.text"  # a stdlib module no interpreter imports at start-up: preloaded by the toy server only

STAGE = f"""\
import os, random, sys
forked = {MARKER!r} in sys.modules
print("argv", sys.argv[1:], "path0", sys.path[0], "cwd", os.getcwd(), "name", __name__, "VAR", os.environ.get("VAR"))
print("stderr line", file=sys.stderr)
print("forked" if forked else "fresh", file=sys.stderr)
if "--random" in sys.argv:
    import numpy, torch
    print("random", random.random(), numpy.random.random(), torch.rand(1).item())
if "--stdin" in sys.argv:
    print("stdin", sys.stdin.read().strip())
if "--code" in sys.argv:
    sys.exit(int(sys.argv[-1]))
if "--message" in sys.argv:
    sys.exit("stopped: a message")
if "--raise" in sys.argv:
    raise RuntimeError("boom")
if "--server" in sys.argv:  # the server process: the parent of the monitor that forked this stage
    monitor = open(f"/proc/{os.getppid()}/stat").read().rsplit(")", 1)[1].split()
    print("server", monitor[1])
if "--sleep" in sys.argv:
    open(sys.argv[-1], "w").write(str(os.getpid()))
    try:
        import time
        time.sleep(60)
    finally:
        print("cleanup ran", flush=True)
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A directory with the toy stage package `toystage`, a params.yaml with cpu_numerics, as the repo root."""
    (tmp_path / "toystage").mkdir()
    (tmp_path / "toystage" / "__init__.py").write_text("")
    (tmp_path / "toystage" / "__main__.py").write_text(STAGE)
    (tmp_path / "params.yaml").write_text(
        "cpu_numerics:\n  threads: 2\n  aten_cpu_capability: avx2\n  mkl_cbwr: AVX2\n  onednn_max_cpu_isa: AVX2\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv(stage_server.SOCKET_DIR_VAR, raising=False)
    return tmp_path


def run_script(project, body: str, served: bool, preloads=None) -> tuple[int, str, str]:
    """``body`` as a bash script, under stage_server.run (served) or plain; exit status, stdout, stderr."""
    script = project / "script.sh"
    script.write_text(body)
    out, err = project / "out.txt", project / "err.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        saved = os.dup(1), os.dup(2)
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
        try:
            if served:
                code = stage_server.run(["bash", str(script)], preloads=preloads or {"toystage": (MARKER,)},
                                        python=sys.executable)
            else:
                code = subprocess.call(["bash", str(script)], env={**os.environ, "PATH": _path_with_python()})
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    return code, out.read_text(), err.read_text()


def _path_with_python() -> str:
    return os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]


def stage_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line not in ("forked", "fresh") and not line.startswith("stage server:")]


def test_a_forked_stage_prints_and_exits_as_a_fresh_interpreter(project):
    body = textwrap.dedent(f"""\
        cd {project}
        {PINNED} python -m toystage a "b c"; echo "rc=$?"
        echo hello | {PINNED} python -m toystage --stdin 2>/dev/null; echo "rc=$?"
        {PINNED} python -m toystage --code 3; echo "rc=$?"
        {PINNED} python -m toystage --message; echo "rc=$?"
        """)
    served = run_script(project, body, served=True)
    fresh = run_script(project, body, served=False)
    assert served[0] == fresh[0] == 0
    assert stage_lines(served[1]) == stage_lines(fresh[1])
    assert stage_lines(served[2]) == stage_lines(fresh[2])
    assert "rc=3" in served[1] and "rc=1" in served[1] and "stdin hello" in served[1]
    assert "stopped: a message" in served[2]
    assert served[2].count("forked") == 3 and "fresh" not in served[2]  # the stdin run's stderr went to /dev/null
    assert fresh[2].count("fresh") == 3


def test_an_uncaught_exception_prints_the_stage_traceback_and_exits_1(project):
    served = run_script(project, f"{PINNED} python -m toystage --raise; echo rc=$?\n", served=True)
    assert "forked" in served[2] and "rc=1" in served[1]
    assert "RuntimeError: boom" in served[2] and 'toystage/__main__.py", line' in served[2]
    assert "stage_server.py" not in served[2]


def test_a_stage_whose_environment_differs_runs_in_a_fresh_interpreter_and_says_why(project):
    code, out, err = run_script(project, f"{PINNED} VAR=other python -m toystage\n", served=True)
    assert code == 0 and "VAR other" in out
    assert "fresh" in err and "forked" not in err
    assert "environment differs from the server's in VAR" in err


def test_modules_without_a_server_and_other_invocations_run_unchanged(project):
    (project / "other.py").write_text("import sys\nprint('other', sys.argv[1:])\n")
    body = f"{PINNED} python other.py x\n{PINNED} python -c 'print(41 + 1)'\n{PINNED} python -m json.tool <<< '[1]'\n"
    code, out, err = run_script(project, body, served=True)
    assert code == 0 and out.split() == ["other", "['x']", "42", "[", "1", "]"]
    assert "stage server:" not in err  # no note: these are not the served module


def test_a_server_that_cannot_start_leaves_stages_to_fresh_interpreters(project):
    code, out, err = run_script(project, f"{PINNED} python -m toystage --code 4; echo rc=$?\n", served=True,
                                preloads={"toystage": ("no_such_library_anywhere",)})
    assert code == 0 and "rc=4" in out and "fresh" in err
    assert "no stage server for toystage" in err


def test_a_server_that_cannot_listen_is_named_and_its_stages_run_fresh(project, monkeypatch, capsys):
    long_dir = project / ("d" * 120)  # a socket path longer than AF_UNIX allows: the server cannot bind
    long_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
    code, out, err = run_script(project, f"{PINNED} python -m toystage --code 5; echo rc=$?\n", served=True)
    assert code == 0 and "rc=5" in out and "fresh" in err
    assert "no server for toystage: its stages run in fresh interpreters" in capsys.readouterr().err


def test_forked_stages_draw_fresh_random_numbers(project):
    """A fresh interpreter seeds Python's, NumPy's and torch's global generators from the OS; forks of a server that
    imported all three must not share their states."""
    body = f"{PINNED} python -m toystage --random\n{PINNED} python -m toystage --random\n"
    code, out, err = run_script(project, body, served=True,
                                preloads={"toystage": (MARKER, "random", "numpy.random", "torch")})
    draws = [line.split()[1:] for line in out.splitlines() if line.startswith("random")]
    assert code == 0 and err.count("forked") == 2 and len(draws) == 2
    assert all(first != second for first, second in zip(*draws))  # each generator on its own


def test_the_shim_passes_signals_to_the_stage_and_a_killed_shim_takes_the_stage_with_it(project):
    body = textwrap.dedent(f"""\
        {PINNED} python -m toystage --sleep {project}/term.pid & shim=$!
        while [ ! -s {project}/term.pid ]; do sleep 0.05; done
        kill -TERM $shim; wait $shim; echo "term rc=$?"
        {PINNED} python -m toystage --sleep {project}/kill.pid & shim=$!
        while [ ! -s {project}/kill.pid ]; do sleep 0.05; done
        kill -KILL $shim; wait $shim; echo "kill rc=$?"
        """)
    code, out, err = run_script(project, body, served=True)
    assert code == 0 and err.count("forked") == 2
    # SIGTERM went on to the stage, which died of it (as a fresh interpreter does: no finally block runs), and the
    # shim died the same way; after SIGKILL, which the shim cannot pass on, the server's monitor sees its connection
    # close and stops the stage.
    assert "term rc=143" in out and "kill rc=137" in out and "cleanup ran" not in out
    for name in ("term.pid", "kill.pid"):
        stage = int((project / name).read_text())
        for _ in range(200):
            if not os.path.exists(f"/proc/{stage}") or "zombie" in open(f"/proc/{stage}/status").read():
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"stage {stage} ({name}) outlived its shim")


def test_run_with_the_server_off_runs_the_command_alone(project, monkeypatch):
    monkeypatch.setenv(stage_server.SOCKET_DIR_VAR, "0")
    code, out, err = run_script(project, f"{PINNED} python -m toystage\necho $IFT_STAGE_SERVER\n", served=True)
    assert code == 0 and "fresh" in err and "stage server:" not in err and out.splitlines()[-1] == "0"


def test_run_returns_the_command_status_and_stops_its_servers(project):
    code, out, _ = run_script(project, f"{PINNED} python -m toystage\necho $IFT_STAGE_SERVER\nexit 7\n", served=True)
    assert code == 7
    socket_dir = out.splitlines()[-1]
    assert socket_dir.startswith("/") and not os.path.exists(socket_dir)


def test_environment_difference_ignores_only_per_stage_variables():
    server = {"PATH": "/bin", "OMP_NUM_THREADS": "2"}
    assert stage_server.environment_difference(server, {**server, "DVC_STAGE": "train@x", "SHLVL": "2", "_": "p"}) == ""
    assert "OMP_NUM_THREADS" in stage_server.environment_difference(server, {**server, "OMP_NUM_THREADS": "1"})
    assert "HF_HUB_OFFLINE" in stage_server.environment_difference(server, {**server, "HF_HUB_OFFLINE": "0"})
    assert "PATH" in stage_server.environment_difference(server, {"OMP_NUM_THREADS": "2"})


def test_a_python_path_no_shim_can_name_turns_the_server_off_with_a_note(project, capsys):
    assert stage_server.run(["bash", "-c", "exit 6"], python="/opt/with space/bin/python") == 6
    assert "stage server: off, the `python` on PATH is '/opt/with space/bin/python'" in capsys.readouterr().err


def test_run_without_a_command_is_an_error():
    with pytest.raises(SystemExit, match="no command"):
        stage_server.main(["run", "--"])


def test_modules_that_share_a_library_list_share_one_server(project, capsys):
    (project / "toystage" / "sub.py").write_text("import runpy\nrunpy.run_module('toystage', run_name='__main__')\n")
    body = f"{PINNED} python -m toystage --server\n{PINNED} python -m toystage.sub --server\n"
    code, out, err = run_script(project, body, served=True, preloads={"toystage": (MARKER,), "toystage.sub": (MARKER,)})
    servers = [line.split()[1] for line in out.splitlines() if line.startswith("server")]
    assert code == 0 and err.count("forked") == 2 and len(servers) == 2
    assert servers[0] == servers[1]
    assert "stage server: toystage, toystage.sub stages fork from preloaded interpreters (1 server;" in \
        capsys.readouterr().err


def test_every_training_and_evaluation_stage_of_the_default_pipeline_is_served():
    """The modules `dvc repro` runs (dvc.yaml and grid/*/dvc.yaml): all but the world, Frozen Lake and the report
    (one short stage each) have a server; the start points share the cells' libraries (one server for both)."""
    import re

    import yaml

    commands = []
    for path in [REPO_ROOT / "dvc.yaml", *sorted((REPO_ROOT / "grid").glob("*/dvc.yaml"))]:
        commands += [str(stage["cmd"]) for stage in yaml.safe_load(path.read_text())["stages"].values()]
    modules = {module for command in commands for module in re.findall(r"python -m (\S+)", command)}
    assert {"ift.train", "ift.train.base", "ift.train.sft_beta", "ift.evaluate"} <= modules
    assert modules - set(stage_server.PRELOADS) == {"ift.world", "ift.frozen_lake", "ift.frozen_lake.study",
                                                   "ift.report"}
    assert stage_server.PRELOADS["ift.train.base"] == stage_server.PRELOADS["ift.train.sft_beta"] == \
        stage_server.PRELOADS["ift.train"]


@pytest.mark.parametrize("module", sorted({libraries: module for module, libraries in
                                           stage_server.PRELOADS.items()}.values()))
def test_the_pipeline_servers_import_their_libraries_without_starting_a_thread(module):
    """What `make repro` preloads imports cleanly and silently (a line it printed would be missing from every stage's
    output), leaves no project module behind and starts no Python thread."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import stage_server; "
             "why = stage_server._preload(stage_server.PRELOADS[sys.argv[2]]); "
             "left = [m for m in sys.modules if m == 'ift' or m.startswith('ift.')]; print(repr(why), left)")
    result = subprocess.run([sys.executable, "-c", probe, str(SCRIPT.parent), module], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "'' []" and result.stderr == ""
