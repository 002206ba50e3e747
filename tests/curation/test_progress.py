"""Progress off a terminal: plain `progress:` lines at an interval, none on a terminal or when turned off."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.progress import DEFAULT_EVERY, EVERY_VARIABLE, ProgressLines, every_seconds, quiet_library_bars


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def wait_for_lines(stream: io.StringIO, count: int) -> list[str]:
    for _ in range(500):  # up to 5 s: the lines come from another thread
        lines = stream.getvalue().splitlines()
        if len(lines) >= count:
            return lines
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} progress lines: {stream.getvalue()!r}")


def test_off_a_terminal_the_latest_state_is_written_at_each_interval() -> None:
    log = io.StringIO()
    with ProgressLines(log, every=0.01) as lines:
        lines.set("step 1/10")
        first = wait_for_lines(log, 1)
        lines.set("step 2/10, loss 0.6931")
        later = wait_for_lines(log, len(first) + 2)
    assert all(line.startswith("progress: 0m00s: ") for line in later)
    assert later[-1] == "progress: 0m00s: step 2/10, loss 0.6931"
    written = log.getvalue()
    time.sleep(0.05)
    assert log.getvalue() == written  # nothing after the command's end


def test_no_lines_on_a_terminal_or_when_turned_off() -> None:
    for stream, every in ((Terminal(), 0.01), (io.StringIO(), 0.0)):
        with ProgressLines(stream, every=every) as lines:
            lines.set("step 1/10")
            time.sleep(0.05)
        assert stream.getvalue() == ""


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = (("5", 5.0), ("0", 0.0), ("often", DEFAULT_EVERY), ("-1", DEFAULT_EVERY), ("nan", DEFAULT_EVERY),
             ("inf", 0.0), ("1e300", 0.0))  # fmt: skip
    for value, seconds in cases:
        monkeypatch.setenv(EVERY_VARIABLE, value)
        assert every_seconds() == seconds
    monkeypatch.delenv(EVERY_VARIABLE)
    assert every_seconds() == DEFAULT_EVERY


def test_library_bars_are_turned_off_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet_library_bars()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    monkeypatch.setattr(sys, "stderr", Terminal())
    quiet_library_bars()
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    # A terminal forced by the environment (FORCE_COLOR, as CI services set) shows rich's bars: the lines stay off,
    # so a log never gets both.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "1")
    quiet_library_bars()
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    with ProgressLines(every=0.01) as lines:
        assert not lines.enabled


def test_a_build_written_to_a_log_says_where_it_is(demo_recipe: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "curation.cli", "build", "--mix", str(demo_recipe), "--out", str(tmp_path / "b")]
    logged = subprocess.run(command, capture_output=True, text=True, env={**os.environ, EVERY_VARIABLE: "0.05"})
    assert logged.returncode == 0, logged.stderr
    lines = logged.stderr.splitlines()
    assert lines and all(line.startswith("progress: ") for line in lines), logged.stderr
    assert any(": stage: " in line for line in lines)
    assert "every row accounted for" in logged.stdout  # the results stay on stdout
    quiet = subprocess.run([*command[:-1], str(tmp_path / "c")], capture_output=True, text=True,
                           env={**os.environ, EVERY_VARIABLE: "0"})  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_an_ingest_in_a_build_reports_the_rows_it_has_read() -> None:
    """A long ingest says how far it is (the build's stage alone would read `ingest uf` for minutes)."""
    import threading
    from types import SimpleNamespace

    from curation.build import IngestStopped, _IngestWatch

    seen: list[str] = []
    stop = threading.Event()
    watch = _IngestWatch("uf", stop, seen.append, every=3)
    for rows in (1, 2, 3, 4, 5, 6, 10, 11):  # per row, then a batch at a time
        watch(SimpleNamespace(rows_read=rows))  # type: ignore[arg-type]
    assert seen == ["ingest uf: 3 rows read", "ingest uf: 6 rows read", "ingest uf: 10 rows read"]
    stop.set()
    with pytest.raises(IngestStopped):
        watch(SimpleNamespace(rows_read=12))  # type: ignore[arg-type]


def test_a_wait_for_a_task_ends_when_the_build_stops() -> None:
    """A task that runs for long (an ingest on a cluster) is waited for in steps: a stop ends the wait at once."""
    from concurrent.futures import Future

    from curation.processes import waited

    checks: list[int] = []

    def check() -> None:
        checks.append(1)
        if len(checks) == 3:
            raise KeyboardInterrupt

    never: Future = Future()
    with pytest.raises(KeyboardInterrupt):
        waited(never, check, every=0.01)
    assert len(checks) == 3
    done: Future = Future()
    done.set_result(7)
    assert waited(done, check) == 7
    own: Future = Future()  # a task that itself timed out (a network mount, say): its error, not a longer wait
    own.set_exception(TimeoutError("the task's own"))
    with pytest.raises(TimeoutError, match="the task's own"):
        waited(own, check)
    assert len(checks) == 3
