"""Run a command (`dvc repro`) with the pipeline's training and evaluation stages forked from preloaded interpreters.

    python scripts/stage_server.py run -- dvc repro      # what `make repro` and `make smoke` do
    IFT_STAGE_SERVER=0 make repro                         # every stage in a fresh interpreter, as DVC alone would

Every stage is its own `python -m ift.<stage>` process, and a training cell or an evaluation spends ~5 s of its
20-30 s importing torch, transformers, TRL, lm-eval and the rest (docs/pipeline.md). `run` starts a server for the
entry modules below (one for the training stages, one for the evaluations), which imports those libraries once, then
puts a `python` shim first on PATH for the command. When a stage runs `python -m ift.train ...`, `python -m
ift.train.base ...` or `python -m ift.evaluate ...` (any module below), the shim hands its arguments, environment,
working directory and standard streams to the server, which forks a copy of itself; the copy becomes that stage (the
project's own code is imported fresh in it, from the checkout) and its exit status or signal goes back through the
shim to DVC. The stage commands, dvc.yaml and dvc.lock are unchanged: with the server or without it a stage runs the
same command on the same files.

What makes a forked stage the same process a fresh interpreter would be:
- the environment: a server imports its libraries under the environment the stages get (the command's own plus
  params.yaml's ``cpu_numerics``, which every torch stage exports in its command), because torch, OpenMP, MKL and the
  hub libraries read theirs when they load. A request whose environment differs in anything but DVC's and the shell's
  per-stage variables runs in a fresh interpreter instead (the shim says why on stderr);
- a server only imports libraries its stages import anyway, starts no thread and runs no parallel region before it
  forks (as ift.evaluate.forked does), and drops the project's modules it imported to set the offline defaults;
- a fork reseeds NumPy's and torch's global generators from the OS, as a fresh interpreter does at start-up
  (Python's `random` reseeds itself in a fork); otherwise every fork would draw the same numbers;
- it exits as an interpreter does: non-daemon threads joined, atexit handlers run, streams flushed; an uncaught
  KeyboardInterrupt ends it by SIGINT.
Anything else (`python -c`, another module, a flag before -m, no server listening) is exec'ed unchanged.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys

SOCKET_DIR_VAR = "IFT_STAGE_SERVER"  # the servers' socket directory; "0" turns the server off for `run`

# Entry module -> the libraries its stages import anyway, imported once by its server (`run` starts one server per
# distinct list, serving every module that shares it; the shim forwards exactly the modules that have a server). Only
# packages and submodules that every such stage of the default pipeline loads (checked with `python -X importtime`
# of each kind of stage, docs/pipeline.md): a stage must not inherit an import it would not have made. The deeper
# entries are what a stage still imported lazily after the packages: TRL's configs, what `wandb.init` imports, and for
# the evaluations the model classes' shared layers and lm-eval's evaluator. Not transformers' Trainer (nor TRL's
# trainers, which import it): its W&B integration prints a line when it loads, which belongs in the stage's output.
_TRAINING = ("torch", "numpy", "transformers", "datasets", "accelerate", "hydra", "omegaconf", "peft", "trl", "wandb",
             "transformers.training_args", "transformers.data.data_collator", "trl.trainer.sft_config",
             "wandb.sdk.launch.inputs.internal")
_EVALUATION = ("torch", "numpy", "transformers", "datasets", "accelerate", "hydra", "omegaconf", "sklearn", "nltk",
               "lm_eval", "lm_eval.tasks", "lm_eval.models.huggingface", "alpaca_eval", "transformers.activations",
               "transformers.modeling_layers", "lm_eval.evaluator", "rouge_score.rouge_scorer", "wandb",
               "wandb.sdk.launch.inputs.internal")
PRELOADS = {
    "ift.train": _TRAINING,           # the grid's cells (and the studies', paper_full's)
    "ift.train.base": _TRAINING,      # the start points: TRL's SFTTrainer, as a cell
    "ift.train.sft_beta": _TRAINING,
    "ift.evaluate": _EVALUATION,      # every evaluation
}

# Set by DVC or the shell for each stage (a non-interactive shell drops the prompts); read by nothing at import.
PER_STAGE_VARS = frozenset({"DVC_STAGE", "DVC_ROOT", "_", "SHLVL", "PWD", "OLDPWD", "PS1", "PS2"})

_HEADER = struct.Struct("!I")
_STDIO = (0, 1, 2)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


# ----------------------------------------------------------------------------------------------------------------------
# The shim: runs as `python` for every stage command, under `python -I -S` so it starts in ~30 ms (28-37 ms measured
# on a 2-core AMD EPYC, against 15-18 ms for `python -c pass`).

def client(real_python: str, argv: list[str]) -> None:
    """Hand `python <argv>` to the server for its module if one is listening, else exec the real interpreter."""
    module = argv[1] if len(argv) >= 2 and argv[0] == "-m" else None
    socket_dir = os.environ.get(SOCKET_DIR_VAR)
    if module is None or not socket_dir or not os.path.exists(socket_path(socket_dir, module)):
        _exec(real_python, argv)  # not a served module (ift.world, ift.report, ...): the usual interpreter
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(socket_path(socket_dir, module))
    except OSError as exc:
        _exec(real_python, argv, f"no stage server for {module} ({exc.strerror or exc})")

    child = {"pid": None, "pending": []}

    def forward(signum, _frame):  # to the stage, as DVC or the terminal meant it
        if child["pid"] is None:
            child["pending"].append(signum)
        else:
            _kill(child["pid"], signum)

    ignored = [signum for signum in _FORWARDED if signal.getsignal(signum) == signal.SIG_IGN]  # e.g. nohup, `cmd &`
    for signum in set(_FORWARDED) - set(ignored):
        signal.signal(signum, forward)
    open_fds = [fd for fd in _STDIO if _is_open(fd)]
    payload = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "fds": open_fds,
                          "ignored_signals": [int(signum) for signum in ignored]}).encode()
    socket.send_fds(conn, [_HEADER.pack(len(payload))], open_fds)
    conn.sendall(payload)
    replies = conn.makefile("rb")
    reply = json.loads(replies.readline() or b"{}")
    if "pid" not in reply:
        conn.close()
        _exec(real_python, argv, reply.get("fallback", "the stage server closed the connection"))
    child["pid"] = reply["pid"]
    for signum in child["pending"]:
        _kill(child["pid"], signum)
    line = replies.readline()
    if not line:
        sys.stderr.write(f"stage server: lost the server running {module} (pid {child['pid']})\n")
        sys.exit(1)
    status = json.loads(line)
    if "signal" in status:  # die the way the stage died, so DVC reports the same
        signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
        sys.exit(128 + status["signal"])
    sys.exit(status["exit"])


def _exec(real_python: str, argv: list[str], why: str | None = None) -> None:
    if why:
        sys.stderr.write(f"stage server: {why}; running it in a fresh interpreter\n")
        sys.stderr.flush()
    os.execv(real_python, [real_python, *argv])


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def socket_path(socket_dir: str, module: str) -> str:
    return os.path.join(socket_dir, module + ".sock")


def environment_difference(server_env: dict, stage_env: dict) -> str:
    """'' when a stage with ``stage_env`` may fork from a server started under ``server_env``, else the variables
    that differ (what torch, OpenMP, MKL or a library read when it loaded may depend on any of them)."""
    keys = (set(server_env) | set(stage_env)) - PER_STAGE_VARS
    differing = sorted(key for key in keys if server_env.get(key) != stage_env.get(key))
    return "" if not differing else "its environment differs from the server's in " + ", ".join(differing)


# ----------------------------------------------------------------------------------------------------------------------
# A server: one per list of libraries, for the entry modules that share it, started by `run`, in its own session.

def serve(modules: list[str], socket_dir: str, preloads: tuple[str, ...] | None = None) -> None:
    """Listen for each of ``modules`` in ``socket_dir``, import their libraries, then fork one stage per connection,
    forever."""
    listeners = []
    for module in modules:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(socket_path(socket_dir, module))
        listener.listen(64)  # stages that connect while the libraries load wait in the backlog
        listeners.append(listener)
    server_env = dict(os.environ)
    sys.path[0] = os.getcwd()  # as under `python -m`: the stages' working directory (the repo root) comes first
    refusal = _preload(PRELOADS[modules[0]] if preloads is None else preloads)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-stage monitors reap themselves
    parent = os.getppid()
    while True:
        ready = select.select(listeners, [], [], 5.0)[0]
        if not ready and os.getppid() != parent:  # `run` is gone without stopping this server
            return
        for listener in ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                for each in listeners:
                    each.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                try:
                    _monitor(conn, server_env, refusal)
                finally:
                    os._exit(0)
            conn.close()


def _preload(modules: tuple[str, ...]) -> str:
    """Import ``modules`` as a stage would (after `import ift` has set the offline defaults); '' if it is then safe
    to fork, else why not."""
    import importlib

    import ift  # noqa: F401  the environment defaults every stage sets before its libraries load

    for name in modules:
        importlib.import_module(name)
    for name in [name for name in sys.modules if name == "ift" or name.startswith("ift.")]:
        del sys.modules[name]  # a stage imports the checkout's own code itself
    import threading

    # A fork copies only the calling thread, and a lock another thread held stays held in the copy. No library here
    # starts a Python thread at import; NumPy's OpenBLAS starts idle native workers, which it stops and restarts
    # around a fork itself (pthread_atfork), as in every stage that forks (ift.evaluate.forked).
    if threading.active_count() > 1:
        names = ", ".join(thread.name for thread in threading.enumerate())
        return f"the server for {', '.join(modules)} runs threads after its imports ({names}), so it does not fork"
    return ""


def _monitor(conn: socket.socket, server_env: dict, refusal: str) -> None:
    """Read one request; fork the stage or tell the shim to exec; report how the stage ended."""
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, len(_STDIO))
    (length,) = _HEADER.unpack(header)
    payload = b""
    while len(payload) < length:
        chunk = conn.recv(length - len(payload))
        if not chunk:
            return
        payload += chunk
    request = json.loads(payload)
    why = refusal or environment_difference(server_env, request["env"])
    if why:
        _send(conn, {"fallback": why})
        return
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become_stage(request, fds)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    status = _wait(pid, conn)
    if status is not None:
        _send(conn, {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
              else {"exit": os.waitstatus_to_exitcode(status)})


def _wait(pid: int, conn: socket.socket) -> int | None:
    """The stage's wait status; if the shim goes away first (killed with DVC), the stage is stopped too."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3 or not Linux: no watch on the shim
        return os.waitpid(pid, 0)[1]
    try:
        while True:
            ready, _, _ = select.select([pidfd, conn], [], [])
            if pidfd in ready:
                return os.waitpid(pid, 0)[1]
            if not conn.recv(1, socket.MSG_PEEK):  # EOF: nobody waits for this stage any more
                _kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
                return None
    finally:
        os.close(pidfd)


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def _become_stage(request: dict, fds: list[int]) -> None:
    """Turn this fork into `python -m <module> <args>` as the shim was asked to run it; never returns."""
    import atexit
    import runpy
    import threading
    import traceback
    import types

    for target, fd in zip(request["fds"], fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as a fresh interpreter sets it up for this stdout
    for signum in request["ignored_signals"]:  # an interpreter keeps the dispositions it inherits ignored
        signal.signal(signum, signal.SIG_IGN)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    module, args = request["argv"][1], request["argv"][2:]
    sys.argv = [module, *args]  # runpy puts the module's file in argv[0]
    sys.orig_argv = [sys.executable, "-m", module, *args]
    sys.path[0] = os.getcwd()
    # The global generators a fresh interpreter seeds from the OS, which forks would share with the server (Python's
    # own `random` reseeds itself in a fork).
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()
    if "torch" in sys.modules:
        sys.modules["torch"].random.default_generator.seed()
    code, interrupted = 0, False
    sys.modules["__main__"] = types.ModuleType("__main__")  # the stage's own, not this script's namespace
    try:
        runpy._run_module_as_main(module)  # what `python -m` runs
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt as exc:
        traceback.print_exception(exc.with_traceback(exc.__traceback__.tb_next))
        interrupted = True
    except BaseException:  # noqa: BLE001  an uncaught exception: traceback, exit status 1, as the interpreter
        kind, value, trace = sys.exc_info()
        value = value.with_traceback(trace.tb_next)  # from runpy's frames on, as `python -m` prints it
        sys.excepthook(kind, value, value.__traceback__)
        code = 1
    try:
        threading._shutdown()  # what Py_Finalize does first: join the non-daemon threads
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    sys.stderr.write(f"{exc.code}\n")
    return 1


# ----------------------------------------------------------------------------------------------------------------------
# `run`: servers up, the command with the shim on PATH, servers down.

def pinned_environment(params_file: str) -> dict[str, str]:
    """params.yaml's ``cpu_numerics`` as the variables every torch stage exports in its command."""
    from ift.numerics import env_for, load_settings

    return env_for(load_settings(params_file))


def run(command: list[str], params_file: str = "params.yaml", preloads: dict[str, tuple[str, ...]] | None = None,
        python: str | None = None) -> int:
    """Run ``command`` with a server for each module of ``preloads`` (default PRELOADS) and the shim for ``python``
    (default: the `python` on PATH, which the stage commands call) first on PATH; the command's exit status."""
    import shutil
    import subprocess
    import tempfile
    import time

    if not command:
        raise SystemExit("stage_server.py run: no command given (e.g. `run -- dvc repro`)")
    real_python = python or shutil.which("python")
    if os.environ.get(SOCKET_DIR_VAR) == "0":
        return subprocess.call(command)
    if real_python is None or any(c.isspace() for c in real_python):  # a shim's #! line cannot name it
        print(f"stage server: off, the `python` on PATH is {real_python!r} (none, or a path with a space); every "
              "stage runs in a fresh interpreter", file=sys.stderr, flush=True)
        return subprocess.call(command)
    preloads = PRELOADS if preloads is None else preloads
    modules = tuple(preloads)
    groups: dict[tuple[str, ...], list[str]] = {}  # one server per distinct list of libraries
    for module in modules:
        groups.setdefault(tuple(preloads[module]), []).append(module)
    socket_dir = tempfile.mkdtemp(prefix="ift-stage-server.")
    servers = []
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        shim = os.path.join(socket_dir, "bin", "python")
        os.makedirs(os.path.dirname(shim))
        with open(shim, "w") as handle:
            handle.write(f"#!{real_python} -IS\nimport sys\nsys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
                         f"from stage_server import client\nclient({real_python!r}, sys.argv[1:])\n")
        os.chmod(shim, 0o755)
        env = {**os.environ, "PATH": os.path.dirname(shim) + os.pathsep + os.environ.get("PATH", ""),
               SOCKET_DIR_VAR: socket_dir}
        server_env = {**env, **pinned_environment(params_file)}
        for libraries, served in groups.items():
            servers.append(subprocess.Popen([real_python, os.path.abspath(__file__), "serve", socket_dir,
                                             ",".join(served), *libraries],
                                            env=server_env, stdin=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 10  # a server binds its sockets first thing; one that fails exits
        while time.monotonic() < deadline and not all(
                all(os.path.exists(socket_path(socket_dir, m)) for m in served) or server.poll() is not None
                for served, server in zip(groups.values(), servers)):
            time.sleep(0.02)
        listening = [m for m in modules if os.path.exists(socket_path(socket_dir, m))]
        print(f"stage server: {', '.join(listening) or 'no'} stages fork from preloaded interpreters "
              f"({len(servers)} server{'s' * (len(servers) != 1)}; scripts/stage_server.py; {SOCKET_DIR_VAR}=0 turns this off)"
              + "".join(f"; no server for {m}: its stages run in fresh interpreters" for m in modules
                        if m not in listening), file=sys.stderr, flush=True)
        with subprocess.Popen(command, env=env) as process:
            for signum in handlers:  # pass them on, then clean up after the command
                signal.signal(signum, lambda signum, _frame: process.send_signal(signum))
            while True:
                try:
                    return process.wait()
                except KeyboardInterrupt:  # the terminal sent it to the command as well; wait for it to stop
                    continue
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for server in servers:
            try:
                os.killpg(server.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            server.wait()
        shutil.rmtree(socket_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "serve":  # serve SOCKET_DIR MODULE[,MODULE...] [LIBRARY ...] (default: PRELOADS)
        serve(argv[2].split(","), argv[1], tuple(argv[3:]) or None)
        return 0
    if argv[:1] == ["run"]:
        rest = argv[1:]
        params = "params.yaml"
        if rest[:1] == ["--params"] and len(rest) >= 2:
            params, rest = rest[1], rest[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return run(rest, params)
    raise SystemExit(__doc__.split("\n\n")[0] + "\n\nusage: stage_server.py run [--params FILE] -- COMMAND ...")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
