"""The console scripts `curate` and `trainer`: Ctrl-C is handled before the command-line modules (and their heavy
libraries) are imported, and ignored once the command has ended (the interpreter's shutdown is not interrupted)."""

from __future__ import annotations

import importlib
import signal

from curation import interrupt


def curate() -> None:
    _run("curation.cli")


def trainer() -> None:
    _run("trainer.cli")


def _run(module: str) -> None:
    interrupt.install()
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        interrupt.stop_interrupted("stopped by Ctrl-C")
    try:
        main()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
