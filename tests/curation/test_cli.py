import json
from pathlib import Path

from typer.testing import CliRunner

from curation.cli import app
from curation.sources import REGISTRY
from tests.conftest import write_jsonl

runner = CliRunner()


def test_sources_lists_every_adapter() -> None:
    result = runner.invoke(app, ["sources"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for key in REGISTRY:
        assert key in result.output


def test_ingest_prints_counts_that_add_up(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "hh.jsonl",
        [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}, {"chosen": 1}],
    )
    args = ["ingest", "--source", "hh_rlhf", "--path", str(path), "--out", str(tmp_path / "out"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["rows_read"] == 2 and counts["pairs"] == 1 and counts["rejects_by_reason"] == {"wrong type": 1}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "images.parquet",
        "pairs.parquet",
        "rejects.parquet",
    ]


def test_clear_errors_for_bad_invocations(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    result = runner.invoke(app, ["ingest", "--source", "nope", "--path", "x", "--out", out])
    assert result.exit_code == 1 and "unknown source 'nope'" in result.output
    result = runner.invoke(
        app, ["ingest", "--source", "hh_rlhf", "--path", str(tmp_path / "absent.jsonl"), "--out", out]
    )
    assert result.exit_code == 1 and "absent.jsonl: no such file or folder" in result.output
    result = runner.invoke(app, ["ingest", "--source", "hh_rlhf", "--path", "x", "--out", out, "-o", "policy=1"])
    assert result.exit_code == 1 and "unknown option(s) policy" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["ingest", "--source", "hh_rlhf", "--path", str(empty), "--out", out])
    assert result.exit_code == 1 and "file is empty" in result.output
    assert not (tmp_path / "out" / "pairs.parquet").exists()
