"""ift.evaluate.forked: a generator in a forked child, its values read in order in the parent, its errors raised
there, its death noticed, and a child still running stopped when the parent leaves."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ift.evaluate.forked import ForkedGenerator


def test_values_arrive_in_order_from_another_process():
    def values():
        yield os.getpid()
        yield {"a": [1, 2.5, None]}

    with ForkedGenerator(values, name="lane") as lane:
        child_pid = lane.next()
        assert lane.next() == {"a": [1, 2.5, None]}
        with pytest.raises(RuntimeError, match="lane: the forked process ended .*exit code 0"):
            lane.next()
    assert child_pid != os.getpid()


def test_the_childs_exception_is_raised_in_the_parent_with_its_traceback():
    def values():
        yield 1
        raise KeyError("missing thing")

    with ForkedGenerator(values, name="lane") as lane:
        assert lane.next() == 1
        with pytest.raises(KeyError, match="missing thing") as raised:
            lane.next()
    assert "raised in the forked process" in raised.value.__notes__[0]
    assert "values" in raised.value.__notes__[0]  # the child's frame


class Unpicklable(Exception):
    def __init__(self, message, handle):
        super().__init__(message)
        self.handle = handle

    def __reduce__(self):
        raise TypeError("cannot pickle")


def test_an_unpicklable_exception_becomes_a_runtime_error_naming_it():
    def values():
        raise Unpicklable("odd failure", handle=object())
        yield  # a generator

    with ForkedGenerator(values, name="lane") as lane, pytest.raises(RuntimeError, match="Unpicklable .*odd failure"):
        lane.next()


def test_a_child_that_dies_is_named_with_its_exit_code():
    def values():
        os._exit(3)
        yield

    with ForkedGenerator(values, name="generation lane") as lane:
        with pytest.raises(RuntimeError, match="generation lane: .*exit code 3"):
            lane.next()


def test_leaving_early_stops_a_running_child():
    def values():
        yield os.getpid()
        time.sleep(600)
        yield "never"

    started = time.monotonic()
    with ForkedGenerator(values, name="lane") as lane:
        child_pid = lane.next()
    assert time.monotonic() - started < 60
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
    assert lane._process.exitcode == -signal.SIGTERM


def test_tqdm_s_monitor_thread_is_stopped_before_forking(caplog):
    import threading

    from tqdm import tqdm

    old_interval = tqdm.monitor_interval
    try:
        tqdm.monitor_interval = 10
        from tqdm.auto import tqdm as auto_tqdm

        for kind in (tqdm, auto_tqdm):  # each tqdm class starts its own monitor thread with its first bar
            with kind(total=1, disable=False) as bar:
                bar.update()
        assert any(thread.name == "tqdm_monitor" for thread in threading.enumerate())

        def values():
            yield 1

        with ForkedGenerator(values, name="lane") as lane:
            assert lane.next() == 1
        assert not any(thread.name == "tqdm_monitor" for thread in threading.enumerate())
        assert "tqdm_monitor" not in caplog.text  # stopped, so not among the threads named

        stop = threading.Event()
        helper = threading.Thread(target=stop.wait, name="helper-thread")
        helper.start()
        try:
            with ForkedGenerator(values, name="lane") as lane:
                assert lane.next() == 1
        finally:
            stop.set()
            helper.join()
        assert "helper-thread" in caplog.text
    finally:
        tqdm.monitor_interval = old_interval
