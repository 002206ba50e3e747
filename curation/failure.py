"""How the command lines end on failure: one `error:` line for what can be anticipated, a traceback for a bug.

Anticipated: an input that cannot be used (`InputError`), and the environment refusing (a full disk, a read-only
file system, a missing permission, DuckDB out of memory, a Ray cluster losing a task). Anything else is a bug:
its traceback is printed, followed by a line asking to report it.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import typer
from rich.console import Console
from rich.text import Text

from curation.errors import ClusterError, InputError
from curation.interrupt import INTERRUPTED, install, stop_interrupted, told, was_interrupted
from curation.progress import quiet_library_bars

_HINTS = {
    errno.ENOSPC: "no space left on device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EROFS: "read-only file system: write elsewhere",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "file name too long",
}
REPORT = "this is a bug in rm-workbench: please report it with the traceback above"


def describe(exc: BaseException) -> str | None:
    """The one line that explains an anticipated failure, or None for a bug."""
    if isinstance(exc, (InputError, ClusterError)):
        return str(exc)
    if isinstance(exc, OSError):
        # pyarrow's errors carry their message alone (no errno); a caller may have added the path it was writing.
        text = exc.strerror or (str(exc.args[0]) if exc.args else type(exc).__name__)
        code = exc.errno if exc.errno in _HINTS else _errno_in(text)
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{_HINTS.get(code, text) if code is not None else text}"
    if isinstance(exc, duckdb.OutOfMemoryException):
        return f"DuckDB ran out of memory ({_first_line(exc)}): raise --memory-limit, or free memory or disk"
    if isinstance(exc, duckdb.IOException):
        code = _errno_in(str(exc))
        return _first_line(exc) + (f" ({_HINTS[code]})" if code is not None else "")
    return None


def click_exception(name: str) -> type[Exception]:
    """The exception class `name` of the click that Typer runs on, found from the public `typer.BadParameter`:
    Typer 0.29 runs on a copy of click of its own, earlier versions on click itself. Its bases, then the
    subclasses of its usage error (`NoSuchOption`, `MissingParameter`, ...)."""
    bases = typer.BadParameter.__mro__
    found = next((c for c in bases if c.__name__ == name), None)
    usage = [next(c for c in bases if c.__name__ == "UsageError")]
    while found is None and usage:
        kind = usage.pop()
        found = kind if kind.__name__ == name else None
        usage += kind.__subclasses__()
    if found is None:
        raise LookupError(f"no click exception {name!r}")
    return found


_USAGE_ERROR, _CLICK_EXCEPTION = click_exception("UsageError"), click_exception("ClickException")


def _usage_error(exc: Any, app: Callable[..., object]) -> None:
    """A command line that cannot be parsed (a missing or unknown option, a bad value): one `error:` line with
    where to read the usage, exit 2 as click exits; no arguments at all shows the help."""
    ctx = exc.ctx
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        print(ctx.get_help())
        sys.exit(exc.exit_code)
    print_error(f"{exc.format_message()} (see `{ctx.command_path if ctx is not None else _command_path(app)} --help`)")
    sys.exit(exc.exit_code)


def _command_path(app: Callable[..., object]) -> str:
    """`curate build`: the program and the command its first argument names, for an error click raised before it
    knew the command (an option's value missing at the end of the line)."""
    program = Path(sys.argv[0]).name
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if program.endswith(".py") and spec is not None:  # `python -m curation.cli`
        program = f"python -m {spec.name.removesuffix('.__main__')}"
    commands = getattr(typer.main.get_command(app), "commands", {}) if isinstance(app, typer.Typer) else {}
    return " ".join([program, *(a for a in sys.argv[1:2] if a in commands)])


def _errno_in(message: str) -> int | None:
    """The error code a message spells (pyarrow and DuckDB put the OS's message in their own text)."""
    lowered = message.lower()
    for code in _HINTS:
        if os.strerror(code).lower() in lowered:
            return code
    return None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, cut at `limit` characters: a library's error quoted inside an error line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def print_error(message: str) -> None:
    # Messages quote file names and data: printed as plain text, never as Rich markup.
    Console(stderr=True).print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def run_cli(app: Callable[[], object]) -> None:
    """Run a Typer app: anticipated failures end with one `error:` line (exit 1), bugs with their traceback and
    a request to report them, Ctrl-C with one `interrupted:` line (exit 130)."""
    install()
    quiet_library_bars()
    try:
        code = app(standalone_mode=False)  # so a usage error reaches `_usage_error`, not the library's panel
        sys.exit(code if isinstance(code, int) else 0)
    except _USAGE_ERROR as exc:
        _usage_error(exc, app)
    except _CLICK_EXCEPTION as exc:  # e.g. a file option that cannot be opened
        print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:  # end of input at a prompt
        sys.exit(1)
    except SystemExit as exc:  # Typer ends a KeyboardInterrupt with exit 130, silently
        if exc.code == INTERRUPTED and not told():
            stop_interrupted("stopped by Ctrl-C")
        raise
    except Exception as exc:
        if was_interrupted(exc):
            stop_interrupted("stopped by Ctrl-C")
        message = describe(exc)
        if message is None:
            traceback.print_exc()
            print_error(REPORT)
        else:
            print_error(message)
        sys.exit(1)
