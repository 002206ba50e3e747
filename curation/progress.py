"""Progress for logs. On a terminal the commands draw live bars; where stderr is not a terminal (a pipe, a log file,
CI, nohup) the bars are off, and a long command writes its latest state as one plain line every
`RM_WORKBENCH_PROGRESS_EVERY` seconds (30 by default; 0 turns the lines off). A command shorter than that writes
none, so its failure is still one `error:` line."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

EVERY_VARIABLE = "RM_WORKBENCH_PROGRESS_EVERY"
DEFAULT_EVERY = 30.0


def every_seconds() -> float:
    """The interval the environment asks for: a value that is not a number, or negative, is the default; one too
    long to wait for (`inf`) turns the lines off."""
    try:
        seconds = float(os.environ.get(EVERY_VARIABLE, DEFAULT_EVERY))
    except ValueError:
        return DEFAULT_EVERY
    if math.isnan(seconds) or seconds < 0:
        return DEFAULT_EVERY
    return seconds if seconds <= threading.TIMEOUT_MAX else 0.0


def stderr_is_terminal() -> bool:
    """Whether stderr shows live bars: rich's test, which honours FORCE_COLOR and TTY_COMPATIBLE as the bars do, so
    a log gets the bars or the progress lines, never both."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


def quiet_library_bars() -> None:
    """Off a terminal, the Hugging Face libraries' own bars (`Loading weights`, downloads) would write a line per
    update into the log: they are turned off there, before those libraries are imported."""
    if not stderr_is_terminal():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class ProgressLines:
    """`with ProgressLines() as lines: ... lines.set("step 3/10")`: off a terminal, `progress: 1m30s: step 3/10`
    every interval, from a daemon thread (so a stage that reports nothing for minutes still shows it is alive)."""

    def __init__(self, stream: TextIO | None = None, every: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self.every = every_seconds() if every is None else every
        terminal = stderr_is_terminal() if stream is None else stream.isatty()
        self.enabled = self.every > 0 and not terminal
        self.text = "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-lines", daemon=True)
        self._start = time.monotonic()

    def set(self, text: str) -> None:
        self.text = text

    def __enter__(self) -> ProgressLines:
        if self.enabled:
            self._start = time.monotonic()
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            seconds = int(time.monotonic() - self._start)
            try:
                self.stream.write(f"progress: {seconds // 60}m{seconds % 60:02d}s: {self.text}\n")
                self.stream.flush()
            except (OSError, ValueError):  # the log was closed under us: progress is not worth failing for
                return
