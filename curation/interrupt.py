"""Ctrl-C, seen from the first instant: whether it was pressed, and the one line a command ends with after it.

Light on purpose (no third-party imports): the console scripts install the handler before they import anything
heavy, so a Ctrl-C during start-up is an `interrupted:` line too, not a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import NoReturn

INTERRUPTED = 130  # the shells' exit status after Ctrl-C
_sigint = threading.Event()  # Ctrl-C was pressed (a library may turn its KeyboardInterrupt into an error of its own)
_told = threading.Event()  # the command said what its interruption kept


def install() -> None:
    """Note every Ctrl-C, then raise KeyboardInterrupt as Python does (in the main thread only: elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum: int, frame: object) -> None:
    _sigint.set()
    signal.default_int_handler(signum, frame)


def was_interrupted(exc: BaseException) -> bool:
    """Whether `exc` is Ctrl-C's doing: a KeyboardInterrupt, or what a library made of one (DuckDB raises
    `RuntimeError: Query interrupted`)."""
    return isinstance(exc, KeyboardInterrupt) or _sigint.is_set()


def told() -> bool:
    """Whether the command already said what its interruption kept."""
    return _told.is_set()


def stop_interrupted(kept: str | None) -> NoReturn:
    """End an interrupted command with one line saying what it kept (None: no line, another process says it), and
    the shells' status for Ctrl-C."""
    _told.set()
    if kept is not None:
        print(f"interrupted: {kept}", file=sys.stderr, flush=True)
    raise SystemExit(INTERRUPTED)
