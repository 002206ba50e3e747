"""An option spelled as another trainer command takes a setting is answered with this command's spelling."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.cli import app


def said(args: list[str]) -> str:
    """The usage error's message, its panel and line breaks taken out."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--model", "run", "--bench", "rewardbench", "--set", "max_length=100"],
         "No such option: --set; trainer eval takes --max-length 100, not --set"),
        (["score", "--model", "run", "--build", "b", "--set=micro_batch=2"],
         "No such option: --set; trainer score takes --micro-batch 2, not --set"),
        (["score", "--model", "run", "--build", "b", "--set", "lr=1"],
         "No such option: --set; trainer score takes no --set; its settings are options of its own (--micro-batch, "
         "--max-length)"),
        (["fit", "--shards", "b", "--out", "run", "--max-length", "100"],
         "No such option: --max-length; trainer fit takes it as --set max_length=100"),
        (["audit", "--build", "b", "--out", "run", "--micro-batch=2"],
         "No such option: --micro-batch; trainer audit takes it as --set micro_batch=2"),
    ],
)  # fmt: skip
def test_a_setting_spelled_as_another_command_takes_it_gets_this_commands_spelling(
    args: list[str], message: str
) -> None:
    text = said(args)
    assert message in text and "Possible options" not in text, text  # click's near names would mislead


def test_an_option_no_trainer_command_takes_keeps_clicks_answer() -> None:
    assert "No such option: --bogus" in said(["fit", "--shards", "b", "--out", "run", "--bogus", "1"])


def test_a_misspelled_setting_gets_the_close_name() -> None:
    result = CliRunner().invoke(app, ["fit", "--shards", "b", "--out", "run", "--set", "max-length=5"])
    assert result.exit_code == 1 and "unknown option(s) max-length (did you mean 'max_length'? known: " in result.output
    # and env, which takes no settings, keeps click's own answer to --set
    assert "No such option: --set" in said(["env", "--set", "x=1"]) and "takes no --set" not in said(
        ["env", "--set", "x=1"]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"lr: 1e-3\n\xff\xfe bad: 1\n", "not a readable settings file: 'utf-8' codec can't decode byte 0xff"),
        (b"lr: [1\n", "not a readable settings file: while parsing a flow sequence"),
        (b"micro_batch: 2.5\n", "option micro_batch=2.5: expected a whole number, got 2.5"),
        (b"epochs: true\n", "option epochs=True: expected a whole number, got True"),
        (b"lr: true\n", "option lr=True: expected a number, got True"),
        (b"shards: 5\n", "option shards=5: expected a list of strings, got 5"),
        (b"shards: [{a: 1}]\n", "option shards=[{'a': 1}]: expected a list of strings"),
        (b"lr: 1e-4\nepochs: 2\nlr: 2e-3\n", "s.yaml:3: duplicate key 'lr' (first at line 1)"),
    ],
)
def test_a_settings_file_that_cannot_mean_its_values_is_one_error_line(
    tmp_path: Path, text: bytes, message: str
) -> None:
    """Not UTF-8, not YAML, a whole number given as 2.5 or true, builds that are not a list of names, a setting
    written twice: one line, nothing trained (never 2.5 cut to 2, never the last of two values silently)."""
    settings = tmp_path / "s.yaml"
    settings.write_bytes(text)
    args = ["audit", "--build", str(tmp_path / "b"), "--out", str(tmp_path / "run"), "--settings", str(settings)]
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "run").exists()


def test_a_failed_command_never_removes_a_folder_another_one_writes(tmp_path: Path) -> None:
    """Two `fit`s on one new --out: the one that finds it busy must not remove the folder the other has just
    made and holds (it may have written nothing else yet); a folder no one holds, with nothing in it, goes."""
    from curation.io import only_writer
    from trainer.cli import _remove_if_unused

    out = tmp_path / "run"
    with only_writer(out / ".lock", "busy"):
        _remove_if_unused(out, created=True)
        assert (out / ".lock").is_file()
    _remove_if_unused(out, created=True)
    assert not out.exists()


def test_ablate_refuses_an_audit_of_fewer_than_two_folds_before_training(tmp_path: Path) -> None:
    for folds in ("1", "0", "-3"):
        result = CliRunner().invoke(app, ["ablate", "--out", str(tmp_path / "ab"), "--mix", "r.yaml", "--per-source",
                                          "--audit", "--audit-folds", folds])  # fmt: skip
        assert (result.exit_code, result.output) == (1, f"error: --audit-folds {folds}: the audit needs at least 2 "
                                                        "folds\n")  # fmt: skip
        assert not (tmp_path / "ab").exists()


def test_python_m_trainer_cli_runs_the_trainer_command() -> None:
    """As `python -m curation.cli` runs `curate`: before, the module defined the command and ran nothing."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "trainer.cli", "fit", "--help"], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and "Usage:" in done.stdout and "--shards" in done.stdout, done.stderr
