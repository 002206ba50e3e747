"""Ctrl-C: a command ends with one `interrupted:` line saying what it kept (exit 130), never a traceback; an
interrupted build resumes to the uninterrupted one's output, and a --resume with nothing to continue says so."""

import subprocess
import sys
from pathlib import Path

import pytest

from curation.build import build
from curation.errors import InputError
from curation.recipe import load_recipe
from tests.conftest import build_digests

# `curate build` with Ctrl-C pressed at a stage: in Python code, or inside a DuckDB query (which DuckDB turns into
# `RuntimeError: Query interrupted`, as it does, or not, depending on where the query's threads are: simulated).
CTRL_C = """
import os, signal, sys
import curation.build
from curation import cli

stage, where = sys.argv[1], sys.argv[2]
original = curation.build.Builder._stage

def _stage(self, name, run):
    if name == stage:
        if where == "python":
            os.kill(os.getpid(), signal.SIGINT)
        else:  # inside a query, DuckDB turns the KeyboardInterrupt into an error of its own (or finishes first)
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                raise RuntimeError("Query interrupted") from None
    return original(self, name, run)

def _prepare(self):  # before the build's folder is written
    if stage == "prepare":
        os.kill(os.getpid(), signal.SIGINT)
    return prepare(self)

prepare = curation.build.Builder._prepare
curation.build.Builder._stage = _stage
curation.build.Builder._prepare = _prepare
sys.argv = ["curate", "build", *sys.argv[3:]]
cli.main()
"""


def _curate_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CTRL_C, *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("stage", "where"), [("near_dedupe", "python"), ("decontaminate", "duckdb")])
def test_ctrl_c_keeps_the_work_and_says_so(demo_recipe: Path, demo_build: Path, tmp_path: Path, stage: str,
                                           where: str) -> None:  # fmt: skip
    out = tmp_path / "b"
    result = _curate_build(stage, where, "--mix", str(demo_recipe), "--out", str(out))
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted: the work so far is kept in {out}.partial: --resume continues it while the recipe is "
        "unchanged; a build without --resume replaces it"
    )
    assert not out.exists()
    resumed = _curate_build("none", "python", "--mix", str(demo_recipe), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed: taken from the interrupted build: ingest" in resumed.stdout
    assert build_digests(out) == build_digests(demo_build)


def test_ctrl_c_before_any_work(demo_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = _curate_build("prepare", "python", "--mix", str(demo_recipe), "--out", str(out))
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "interrupted: stopped before any work was kept"


def test_resume_with_nothing_to_continue_says_why(demo_recipe: Path, tmp_path: Path) -> None:
    notes: list[str] = []
    build(load_recipe(demo_recipe), tmp_path / "b", resume=True, on_start_over=notes.append)
    assert notes == [f"no unfinished build at {(tmp_path / 'b.partial').absolute()}"]

    work = tmp_path / "c.partial" / "work"  # an unfinished build of another recipe
    work.mkdir(parents=True)
    (work / "state.json").write_text('{"recipe_sha256": "0", "schema_version": 0, "work_files": "arrow"}')
    notes.clear()
    build(load_recipe(demo_recipe), tmp_path / "c", resume=True, on_start_over=notes.append)
    assert notes == [f"the unfinished build at {work.parent.absolute()} is of another recipe (or of this one before "
                     "a change)"]  # fmt: skip
    notes.clear()
    build(load_recipe(demo_recipe), tmp_path / "d", on_start_over=notes.append)  # no --resume: nothing to say
    assert notes == []
    (tmp_path / "e.partial").mkdir()
    (tmp_path / "e.partial" / "mine.txt").write_text("")  # not an unfinished build: refused, with no note before
    with pytest.raises(InputError, match="is not the folder of an unfinished build"):
        build(load_recipe(demo_recipe), tmp_path / "e", resume=True, on_start_over=notes.append)
    assert notes == []


# Ctrl-C while a large source is being ingested: the ingest stops at its next row rather than run to its end.
CTRL_C_IN_INGEST = """
import os, signal, sys, threading
from pathlib import Path
import curation.build
from curation import cli

watch = curation.build._IngestWatch.__call__
marker = Path(sys.argv[1])

def recording(self, summary):
    try:
        watch(self, summary)
    except curation.build.IngestStopped:
        marker.write_text(str(summary.rows_read))
        raise

def on_stage(self, name):
    if name == "ingest big":
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

curation.build._IngestWatch.__call__ = recording
original_init = curation.build.Builder.__init__

def init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    said = self.on_stage
    self.on_stage = lambda name: (on_stage(self, name), said(name))

curation.build.Builder.__init__ = init
sys.argv = ["curate", "build", *sys.argv[2:]]
cli.main()
"""


def test_ctrl_c_stops_a_running_ingest_at_its_next_row(tmp_path: Path) -> None:
    rows = 400_000
    line = b'{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yes", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}\n'
    (tmp_path / "big.jsonl").write_bytes(line * rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsources:\n  big: {{adapter: hh_rlhf, path: {tmp_path / 'big.jsonl'}}}\n")
    marker = tmp_path / "stopped-after"
    result = subprocess.run([sys.executable, "-c", CTRL_C_IN_INGEST, str(marker), "--mix", str(recipe), "--out",
                             str(tmp_path / "b")], capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "interrupted: the work so far is kept in" in result.stderr
    assert 0 < int(marker.read_text()) < rows  # stopped part way, at a row
    assert not list((tmp_path / "b.partial").rglob("done.json"))  # the stopped ingest is not taken as finished


CTRL_C_AT_START = """
import importlib, os, signal
from curation import entry

def import_interrupted(name):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the heavy command-line modules are being imported
    return importlib.import_module(name)

entry.importlib = type("Importlib", (), {"import_module": staticmethod(import_interrupted)})
entry.curate()
"""


def test_ctrl_c_while_the_command_starts_is_one_line() -> None:
    result = subprocess.run([sys.executable, "-c", CTRL_C_AT_START], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (130, "interrupted: stopped by Ctrl-C\n")
