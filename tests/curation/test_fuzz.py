"""Property-based trials of `curate ingest`: real rows from ../shared/data, mutated (byte flips, truncation, type
swaps, deep nesting, odd Unicode, removed fields, BOMs and line endings), for several adapters and both the row
and the columnar (DuckDB) path. Whatever the input: the command ends with exit 0 or one clean `error:` line, never a
traceback; rows read = rows that gave pairs + rows rejected, counted from the files; a failed run leaves nothing
under a final name; the columnar path writes the same bytes as the row path.

The default profile runs a bounded, reproducible number of examples (CI); `HYPOTHESIS_PROFILE=long` runs more,
with fresh randomness: `HYPOTHESIS_PROFILE=long pytest tests/curation/test_fuzz.py`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation import cli
from curation.failure import describe
from curation.ingest import ingest
from curation.sources import get_adapter
from tests.conftest import write_benchmark_images

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("long" if __import__("os").environ.get("HYPOTHESIS_PROFILE") == "long" else "ci")

# adapter key -> (file under ../shared/data, whether its images are generated under an images root)
SOURCES = {
    "hh_rlhf": ("hh-rlhf/harmless-base/test.jsonl.gz", False),
    "ultrafeedback_binarized": ("ultrafeedback-binarized/label_flip_20.jsonl", False),
    "vl_rewardbench": ("vl-rewardbench/data.jsonl", True),
    "mm_rlhf_rewardbench": ("mm-rlhf-rewardbench/mm_reward_bench.jsonl", True),
}
ODD_TEXT = [
    "\ud800",
    "\udc80x",
    "a\udfff",
    "\x00",
    "\u202e",
    "e\u0301",
    "\u200b",
    "\u2028",
    "😀",
    "<image>",
    "",
    " \t ",
    "\r",
]
ODD_VALUES: list[Any] = [None, 0, -1, 1.5, float("nan"), 1e308, -1e308, True, [], {}, ["a"], {"a": 1}, "x" * 5000]
UF = "ultrafeedback_binarized"
_LINES = re.compile(rb"\r\n|\r|\n")


@pytest.fixture(scope="module")
def real_rows(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    images = tmp_path_factory.mktemp("images")
    write_benchmark_images(shared_data, images)
    rows = {}
    for key, (name, _) in SOURCES.items():
        opener = gzip.open if name.endswith(".gz") else open
        with opener(shared_data / name, "rt", encoding="utf-8") as handle:
            rows[key] = [json.loads(line) for _, line in zip(range(40), handle, strict=False)]
    return {"rows": rows, "images": images}


@st.composite
def mutated_row(draw: st.DrawFn, row: dict[str, Any]) -> Any:
    row = json.loads(json.dumps(row))  # a copy
    for _ in range(draw(st.integers(0, 3))):
        keys = sorted(row) if isinstance(row, dict) else []
        kind = draw(st.sampled_from(["remove", "swap", "unicode", "unicode", "nest", "truncate", "replace_row"]))
        if not keys or kind == "replace_row":
            return draw(st.sampled_from([[], "a string", 7, None, [row]]))
        key = draw(st.sampled_from(keys))
        if kind == "remove":
            del row[key]
        elif kind == "swap":
            row[key] = draw(st.sampled_from(ODD_VALUES))
        elif kind == "unicode":  # into a text, or as the whole value
            text = row[key] if isinstance(row[key], str) else ""
            at = draw(st.integers(0, len(text)))
            row[key] = text[:at] + draw(st.sampled_from(ODD_TEXT)) + text[at:]
        elif kind == "nest":
            for _ in range(draw(st.sampled_from([1, 5, 99, 150, 2000]))):
                row[key] = [row[key]]
        elif kind == "truncate" and isinstance(row[key], str):
            row[key] = row[key][: draw(st.integers(0, len(row[key])))]
    return row


def _dumps(value: Any, ascii_only: bool) -> str:
    try:
        return json.dumps(value, ensure_ascii=ascii_only)
    except (ValueError, RecursionError):  # nesting beyond the encoder: written as text, as a broken tool would
        return "[" * 2000 + "]" * 2000


@st.composite
def native_file(draw: st.DrawFn, rows: list[dict[str, Any]]) -> bytes:
    """A jsonl file of mutated real rows, then mutated as bytes."""
    picked = draw(st.lists(st.sampled_from(rows), min_size=1, max_size=8))
    ascii_only = draw(
        st.sampled_from([True, True, False])
    )  # \\u escapes, or raw UTF-8 (a lone surrogate then as its 3 bytes)
    lines = [_dumps(draw(mutated_row(row)), ascii_only) for row in picked]
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    data = ending.join(lines).encode("utf-8", "surrogatepass") + ending.encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


def run_curate(*args: str) -> tuple[int, str, str]:
    """`curate ARGS` in this process, as the installed command runs it: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["curate", *args]), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:  # fmt: skip
        cli.main()
    return int(exit_info.value.code or 0), out.getvalue(), err.getvalue()


def check_ingest(code: int, stdout: str, stderr: str, out: Path) -> dict[str, Any] | None:
    """The properties every run holds; the summary of a successful one."""
    assert "Traceback" not in stderr, stderr
    if code != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert not out.exists() and not out.with_name(out.name + ".partial").exists()
        return None
    summary = json.loads(stdout)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name)) == [out.name]
    pairs = pq.read_table(out / "pairs.parquet").column("source_row").to_pylist()
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert len(set(pairs)) + len(rejects) == summary["rows_read"]
    assert all(r["reason"] and r["detail"] and r["source_row"] for r in rejects)
    assert not set(pairs) & {r["source_row"] for r in rejects}
    return summary


@pytest.mark.parametrize("key", sorted(SOURCES))
def test_mutated_jsonl_rows(real_rows: dict[str, Any], key: str) -> None:
    @given(data=native_file(real_rows["rows"][key]), gzipped=st.booleans())
    def trial(data: bytes, gzipped: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ("rows.jsonl.gz" if gzipped else "rows.jsonl")
            path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
            out = Path(tmp) / "out"
            args = ["ingest", "--source", key, "--path", str(path), "--out", str(out), "--json"]
            if SOURCES[key][1]:
                args += ["--images-root", str(real_rows["images"])]
            summary = check_ingest(*run_curate(*args), out)
            if summary is not None:  # each non-blank line, as an editor splits them, is one row read
                lines = _LINES.split(data.removeprefix(b"\xef\xbb\xbf"))
                assert summary["rows_read"] == sum(1 for line in lines if line.strip())
            else:  # only a file that cannot be read at all stops the command
                assert not any(line.strip() for line in _LINES.split(data.removeprefix(b"\xef\xbb\xbf")))

    trial()


UTF8_TEXT = [t for t in ODD_TEXT if not re.search("[\ud800-\udfff]", t)]  # parquet holds UTF-8 only
SAFE_VALUES = st.one_of(st.none(), st.text(max_size=30), st.sampled_from([*UTF8_TEXT, "a\x00b"]))
SCORES = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308]))


@st.composite
def uf_table(draw: st.DrawFn, rows: list[dict[str, Any]]) -> pa.Table:
    """UltraFeedback's flattened layout as parquet: typed columns whose values are odd (types stay, as parquet
    needs one type per column)."""
    picked = draw(st.lists(st.sampled_from(rows), min_size=1, max_size=12))
    columns: dict[str, list[Any]] = {
        "prompt": [],
        "chosen": [],
        "rejected": [],
        "score_chosen": [],
        "score_rejected": [],
    }
    for row in picked:
        for name in ("prompt", "chosen", "rejected"):
            value = row.get(name)
            columns[name].append(draw(SAFE_VALUES) if draw(st.integers(0, 3)) == 0 else value)
        for name in ("score_chosen", "score_rejected"):
            value = row.get("metadata", {}).get(name)
            columns[name].append(draw(SCORES) if draw(st.integers(0, 2)) == 0 else value)
    return pa.table(columns, schema=pa.schema([(n, pa.float64() if n.startswith("score") else pa.string())
                                               for n in columns]))  # fmt: skip


def test_mutated_parquet_through_both_paths(real_rows: dict[str, Any]) -> None:
    rows = real_rows["rows"][UF]

    @given(table=uf_table(rows), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3),
           group=st.sampled_from([1, 3, 100]))  # fmt: skip
    def trial(table: pa.Table, flips: list[tuple[float, int]], group: int) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "uf.parquet"
            pq.write_table(table, path, row_group_size=group, use_dictionary=False)
            data = bytearray(path.read_bytes())
            for where, value in flips:
                data[min(int(where * len(data)), len(data) - 1)] = value
            path.write_bytes(bytes(data))
            outs = {}
            for columnar in (True, False):
                out = Path(tmp) / f"out-{columnar}"
                try:
                    summary = ingest(get_adapter(UF)(), str(path), out, columnar_path=columnar)
                except Exception as exc:
                    assert describe(exc) is not None, repr(exc)  # an anticipated failure, not a bug
                    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
                    outs[columnar] = str(exc)
                    continue
                outs[columnar] = {name: (out / name).read_bytes() for name in ("pairs.parquet", "rejects.parquet")}
                outs[columnar]["rows"] = summary.rows_read
                pairs = pq.read_table(out / "pairs.parquet").column("source_row").to_pylist()
                rejected = pq.read_table(out / "rejects.parquet").num_rows
                assert len(set(pairs)) + rejected == summary.rows_read
                if not flips:
                    assert summary.rows_read == table.num_rows
            if not flips:
                assert outs[True] == outs[False]  # the same bytes
            # A damaged page may be refused by one reader and decoded by the other (DuckDB checks page sizes less
            # strictly than pyarrow; neither can see a flipped byte inside a value): each path then keeps its own
            # accounting, and the file's row count is the same.
            elif all(isinstance(o, dict) for o in outs.values()):
                assert outs[True]["rows"] == outs[False]["rows"]

    trial()
