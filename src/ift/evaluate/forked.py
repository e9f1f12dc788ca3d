"""A generator run in a forked child process, read value by value in the parent: the CPU evaluation's second lane
(:func:`ift.evaluate.checkpoint_eval.evaluate_checkpoint`).

fork, not spawn: the child shares the loaded model and every imported library, where a fresh interpreter would
spend ~5 s importing them again. So the parent must not have touched CUDA (the app forks on CPU only), it should
not have run a multi-threaded OpenMP region yet (the app forks before its first forward pass), and no other thread
may hold a lock at the moment of the fork, or the child waits on it forever: tqdm's monitor thread (started by the
first progress bar, e.g. while loading weights) is stopped before forking, and any other live thread is logged.

An error in the child is raised again in the parent, as the same exception where it can be pickled, with the
child's traceback as a note; a child that dies without a word (killed, out of memory) is a RuntimeError naming it.

A parent that dies without a word (SIGKILL) takes the child with it: on Linux the child asks the kernel for SIGKILL
when its parent exits (prctl PR_SET_PDEATHSIG, when the fork is made from the main thread: the signal follows the
forking thread), then checks that the parent did not die before that. And the child closes its copy of the pipe's
read end, so once the parent is gone the pipe has no reader and a write fails (broken pipe) rather than waiting for
one: the child then exits at its next value.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class ForkedGenerator:
    """``with ForkedGenerator(make_values, name=...) as lane: lane.next()`` -> the values ``make_values()`` yields
    in the child, in order. Leaving the ``with`` block stops a child that is still running."""

    def __init__(self, make_values: Callable[[], Iterator[Any]], *, name: str):
        _quiet_threads()
        context = multiprocessing.get_context("fork")
        self.name = name
        self._reader, writer = context.Pipe(duplex=False)
        with_parent = threading.current_thread() is threading.main_thread()  # PDEATHSIG: see the module's doc
        self._process = context.Process(target=_child, name=name,
                                        args=(make_values, writer, self._reader, os.getpid(), with_parent))
        self._process.start()
        writer.close()  # the child holds the only write end: its exit means end of file here

    def next(self) -> Any:
        try:
            kind, payload = self._reader.recv()
        except EOFError:
            self._process.join(timeout=10)
            raise RuntimeError(f"{self.name}: the forked process ended without sending its next result "
                               f"(exit code {self._process.exitcode})") from None
        if kind == "error":
            raise payload
        return payload

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._reader.close()

    def __enter__(self) -> ForkedGenerator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _quiet_threads() -> None:
    """Stop tqdm's monitor threads (one per tqdm class that showed a bar) and keep them from restarting, then name
    any thread still running beside us."""
    from tqdm import TMonitor, tqdm

    tqdm.monitor_interval = 0  # inherited by tqdm.auto's and the other subclasses
    for thread in threading.enumerate():
        if isinstance(thread, TMonitor):
            thread.exit()
    others = [thread.name for thread in threading.enumerate() if thread is not threading.current_thread()]
    if others:
        log.warning("forking while other threads run (%s): a lock one of them holds would hang the child",
                    ", ".join(others))


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _child(make_values: Callable[[], Iterator[Any]], writer, reader, parent_pid: int, with_parent: bool) -> None:
    reader.close()  # the parent's is then the only read end: once it is gone, a write fails instead of blocking
    if with_parent:
        _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the child got here
        os._exit(1)
    try:
        for value in make_values():
            _send(writer, ("value", value))
    except BaseException as error:  # KeyboardInterrupt included: the parent re-raises it
        _send(writer, ("error", _picklable(error, traceback.format_exc())))
    finally:
        writer.close()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that forked it exits. Elsewhere, or if prctl is unavailable,
    the closed read end alone ends an orphaned child, at its next write."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
    except (OSError, AttributeError) as err:
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable: %s", err)


def _send(writer, message) -> None:
    try:
        writer.send(message)
    except BrokenPipeError:  # the parent is gone (no read end left): nobody to send to, nothing to wait for
        os._exit(1)


def _picklable(error: BaseException, child_traceback: str) -> BaseException:
    """The child's exception with its traceback as a note, or a RuntimeError saying what it was."""
    try:
        error.add_note(f"raised in the forked process:\n{child_traceback}")
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__} in the forked process: {error}\n{child_traceback}")
