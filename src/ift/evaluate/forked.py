"""A generator run in a forked child process, read value by value in the parent: the CPU evaluation's second lane
(:func:`ift.evaluate.app.evaluate_checkpoint`).

fork, not spawn: the child shares the loaded model and every imported library, where a fresh interpreter would
spend ~5 s importing them again. So the parent must not have touched CUDA (the app forks on CPU only), it should
not have run a multi-threaded OpenMP region yet (the app forks before its first forward pass), and no other thread
may hold a lock at the moment of the fork, or the child waits on it forever: tqdm's monitor thread (started by the
first progress bar, e.g. while loading weights) is stopped before forking, and any other live thread is logged.

An error in the child is raised again in the parent, as the same exception where it can be pickled, with the
child's traceback as a note; a child that dies without a word (killed, out of memory) is a RuntimeError naming it.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
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
        self._process = context.Process(target=_child, args=(make_values, writer), name=name)
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


def _child(make_values: Callable[[], Iterator[Any]], writer) -> None:
    try:
        for value in make_values():
            writer.send(("value", value))
    except BaseException as error:  # KeyboardInterrupt included: the parent re-raises it
        writer.send(("error", _picklable(error, traceback.format_exc())))
    finally:
        writer.close()


def _picklable(error: BaseException, child_traceback: str) -> BaseException:
    """The child's exception with its traceback as a note, or a RuntimeError saying what it was."""
    try:
        error.add_note(f"raised in the forked process:\n{child_traceback}")
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__} in the forked process: {error}\n{child_traceback}")
