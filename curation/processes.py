"""Worker processes: spawned, never forked (DuckDB runs threads), deaf to Ctrl-C, and stopped together.

A terminal's Ctrl-C reaches every process of its group; a worker interrupted while holding the pool's queue lock
left the main process waiting forever. Workers ignore it instead, and the main process, on any failure, cancels
what has not started and waits only for what is running. A worker is born with Ctrl-C blocked (the thread that
starts it blocks it for that moment, and a spawned process keeps its parent thread's signal mask), so one pressed
while the worker is still starting Python is dropped rather than printed as a traceback; it unblocks Ctrl-C once
it ignores it.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import resource_tracker
from typing import Any


class _Pool(ProcessPoolExecutor):
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        # Workers are started here, as they are needed: with Ctrl-C blocked in this thread for that moment (a
        # Ctrl-C pressed then is taken when it is unblocked, or by another thread).
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # read only: a pending Ctrl-C raised here changes nothing
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # may raise one pending: `finally` restores
            return super().submit(fn, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextmanager
def worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[ProcessPoolExecutor]:
    # Started first: starting it unblocks Ctrl-C in the starting thread, which would undo `_Pool.submit`'s block.
    resource_tracker.ensure_running()
    pool = _Pool(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(initializer, initargs)
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def waited(future: Future, check: Callable[[], None], every: float = 1.0) -> Any:
    """The future's result; while its task runs, `check` is called every `every` seconds, so that a stop it raises
    (Ctrl-C, another task's failure) ends the wait, and the pool around it cancels the task, rather than waiting
    for a task that may run for minutes on a cluster."""
    while not wait([future], timeout=every).done:  # the task's own TimeoutError is its result, not a reason to wait
        check()
    return future.result()


def _start(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C pressed while starting: dropped
    if initializer is not None:
        initializer(*initargs)
