"""Hostile input, row by row: every malformed row becomes a reject naming file, row and field; the rest is read."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.images import ImagesRoot
from curation.ingest import ingest
from curation.readers import iter_local
from curation.sources import get_adapter
from tests.conftest import RunIngest, write_image, write_jsonl

UF = "ultrafeedback_binarized"
GOOD = {"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."}


def _jsonl(path: Path, lines: list[str], ending: str = "\n") -> Path:
    path.write_text("".join(line + ending for line in lines), encoding="utf-8", newline="")
    return path


def _rejects(result) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return [(r["source_row"], r["reason"], r["detail"]) for r in result.rejects]


@pytest.mark.parametrize(
    ("bad_line", "reason", "detail"),
    [
        (json.dumps({**GOOD, "note": "\ud800"}), "invalid unicode", "field 'note'"),  # an unmapped field
        (json.dumps({**GOOD, "chosen": "x\udc80y"}), "invalid unicode", "field 'chosen'"),  # a mapped one
        (json.dumps({**GOOD, "meta": {"deep": ["ok", "\udfff"]}}), "invalid unicode", "field 'meta.deep[1]'"),
        (json.dumps({**GOOD, "\ud800key": 1}), "invalid unicode", "key '\\ud800key'"),
        ('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}", "malformed json", "nested too deeply"),
        (json.dumps({**GOOD, "x": [[[[1]]]]}).replace("[[[[1]]]]", "[" * 150 + "]" * 150), "malformed json",
         "nested deeper than 100"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "n": ' + "9" * 5000 + "}", "malformed json",
         "a number of more than"),
    ],
)  # fmt: skip
def test_a_pathological_json_row_is_one_reject(
    tmp_path: Path, run_ingest: RunIngest, bad_line: str, reason: str, detail: str
) -> None:
    path = _jsonl(tmp_path / "rows.jsonl", [json.dumps(GOOD), bad_line, json.dumps({**GOOD, "chosen": "Four!"})])
    result = run_ingest(UF, path)
    assert result.summary.rows_read == 3 and result.summary.pairs == 2
    [(ref, got_reason, got_detail)] = _rejects(result)
    assert (ref, got_reason) == ("rows.jsonl:1", reason)
    assert detail in got_detail and got_detail.startswith("rows.jsonl:1: ")


def test_a_lone_surrogate_in_an_image_path_is_a_reject_and_the_outputs_are_whole(
    tmp_path: Path, run_ingest: RunIngest
) -> None:
    write_image(tmp_path / "media" / "a.png")
    row = {"id": "mcq_1", "image": "a.png", "prompt": "What?", "chosen": "A", "rejected": "B"}
    path = write_jsonl(tmp_path / "bench.jsonl", [row, {**row, "image": "\udc80.png"}, {**row, "chosen": "C"}])
    result = run_ingest("mm_rlhf_rewardbench", path, images_root=tmp_path / "media")
    assert _rejects(result) == [
        ("bench.jsonl:1", "invalid unicode", "bench.jsonl:1: field 'image': text with a lone surrogate")
    ]
    assert len(result.pairs) == 2 and len(result.images) == 1
    assert sorted(p.name for p in result.out.parent.iterdir() if "partial" in p.name) == []


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_line_endings_and_a_bom_are_read_as_text_editors_read_them(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps({"i": i}) + ending for i in range(3)).encode())
    records = list(iter_local(path))
    assert [(r.ref, r.data) for r in records] == [(f"rows.jsonl:{i}", {"i": i}) for i in range(3)]


def test_utf16_and_bom_json_arrays(tmp_path: Path) -> None:
    rows = [{"i": i, "text": "héllo"} for i in range(3)]
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    (tmp_path / "b.json").write_bytes(json.dumps(rows, ensure_ascii=False).encode("utf-16"))
    (tmp_path / "c.jsonl").write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("utf-16"))
    for name in ("a.json", "b.json", "c.jsonl"):
        assert [r.data for r in iter_local(tmp_path / name)] == rows, name


def test_a_truncated_json_array_keeps_its_elements_and_rejects_the_rest(tmp_path: Path) -> None:
    text = json.dumps([{"i": i} for i in range(5)])
    (tmp_path / "cut.json").write_text(text[: text.index('{"i": 3}') + 4])
    records = list(iter_local(tmp_path / "cut.json"))
    assert [r.data for r in records[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert records[3].ref == "cut.json:3+" and records[3].error is not None
    assert records[3].error.reason == "truncated file" and len(records) == 4


def _corrupt_row_group(path: Path, group: int) -> None:
    """Overwrite the first data page header of column 0 in `group` (as a bad disk sector would)."""
    chunk = pq.ParquetFile(path).metadata.row_group(group).column(0)
    data = bytearray(path.read_bytes())
    for k in range(8):
        data[chunk.data_page_offset + k] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("columnar", [True, False])
def test_a_corrupt_row_group_rejects_its_rows_and_the_rest_is_read(tmp_path: Path, columnar: bool) -> None:
    n = 30
    table = pa.table({"prompt": [f"question {i}" for i in range(n)], "chosen": ["yes"] * n, "rejected": ["no"] * n})
    path = tmp_path / "uf.parquet"
    pq.write_table(table, path, row_group_size=10, use_dictionary=False)
    _corrupt_row_group(path, 1)
    summary = ingest(get_adapter(UF)(), str(path), tmp_path / "out", columnar_path=columnar)
    assert (summary.rows_read, summary.pairs, summary.rows_rejected) == (30, 20, 10)
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert [r["source_row"] for r in rejects] == [f"uf.parquet:{i}" for i in range(10, 20)]
    assert {r["reason"] for r in rejects} == {"unreadable row group"}
    assert "row group 1 (rows 10-19, 10 rows)" in rejects[0]["detail"]
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet").column("source_row").to_pylist()
    assert pairs == [f"uf.parquet:{i}" for i in [*range(10), *range(20, 30)]]


@pytest.mark.parametrize("columnar", [True, False])
def test_invalid_utf8_in_a_parquet_value_rejects_that_row_naming_the_field(tmp_path: Path, columnar: bool) -> None:
    raw = pa.array([b"first", b"bad \xff\xfe", b"third"], pa.binary())
    prompts = pa.Array.from_buffers(pa.string(), 3, raw.buffers())  # written unchecked, as a broken tool would
    path = tmp_path / "uf.parquet"
    pq.write_table(pa.table({"prompt": prompts, "chosen": ["a", "b", "c"], "rejected": ["x", "y", "z"]}), path)
    summary = ingest(get_adapter(UF)(), str(path), tmp_path / "out", columnar_path=columnar)
    assert (summary.rows_read, summary.pairs) == (3, 2)
    [reject] = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert (reject["source_row"], reject["reason"]) == ("uf.parquet:1", "invalid utf-8")
    assert "field 'prompt'" in reject["detail"]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_empty_or_unreadable_file_in_a_folder_is_one_reject(tmp_path: Path, workers: int) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", [GOOD])
    (folder / "b.jsonl").write_bytes(b"")
    (folder / "c.jsonl.gz").write_bytes(b"\x1f\x8b broken")
    write_jsonl(folder / "d.jsonl", [{**GOOD, "chosen": "4"}])
    summary = ingest(get_adapter(UF)(), str(folder), tmp_path / "out", workers=workers)
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert [(r["source_row"], r["reason"]) for r in rejects] == [
        ("b.jsonl:0+", "unreadable file"),
        ("c.jsonl.gz:0+", "truncated file"),
    ]
    assert "file is empty" in rejects[0]["detail"]
    assert (summary.rows_read, summary.pairs) == (4, 2)
    parquet = tmp_path / "parquet"  # a folder's split is read in one format: a parquet folder of its own
    parquet.mkdir()
    pq.write_table(pa.table({k: [v] for k, v in GOOD.items()}), parquet / "a.parquet")
    (parquet / "b.parquet").write_bytes(b"not parquet")
    summary = ingest(get_adapter(UF)(), str(parquet), tmp_path / "out-parquet", workers=workers)
    [reject] = pq.read_table(tmp_path / "out-parquet" / "rejects.parquet").to_pylist()
    assert (reject["source_row"], reject["reason"]) == ("b.parquet:0+", "unreadable file")
    assert "not a readable parquet file" in reject["detail"] and (summary.rows_read, summary.pairs) == (2, 1)


def test_an_undecodable_file_name_is_spelled_escaped(tmp_path: Path, run_ingest: RunIngest) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    # A Linux file name need not be UTF-8: Python spells the undecodable byte as a lone surrogate.
    (folder / b"bad\xff.jsonl".decode("utf-8", "surrogateescape")).write_text(json.dumps(GOOD) + "\n")
    write_jsonl(folder / "ok.jsonl", [{**GOOD, "chosen": "4"}])
    result = run_ingest(UF, folder)
    assert sorted(p["source_row"] for p in result.pairs) == ["bad\\udcff.jsonl:0", "ok.jsonl:0"]


@pytest.mark.parametrize("columnar", [True, False])
def test_scores_whose_difference_overflows_store_no_margin_and_say_why(tmp_path: Path, columnar: bool) -> None:
    scores = [(1e308, -1e308), (8.0, 2.0)]
    table = pa.table(
        {
            "prompt": ["q1", "q2"], "chosen": ["a", "b"], "rejected": ["c", "d"],
            "score_chosen": [c for c, _ in scores], "score_rejected": [r for _, r in scores],
        }
    )  # fmt: skip
    pq.write_table(table, tmp_path / "uf.parquet")
    ingest(get_adapter(UF)(), str(tmp_path / "uf.parquet"), tmp_path / "out", columnar_path=columnar)
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    assert [p["margin"] for p in pairs] == [None, 6.0]
    assert "not finite" in json.loads(pairs[0]["meta"])["_derived"]["margin"]
    assert pairs[0]["chosen_score"] == 1e308


def test_zip_and_folder_roots_refuse_the_same_escaping_paths(tmp_path: Path) -> None:
    write_image(tmp_path / "media" / "ok.png")
    with zipfile.ZipFile(tmp_path / "media.zip", "w") as archive:
        archive.write(tmp_path / "media" / "ok.png", "ok.png")
        archive.writestr("../escape.png", (tmp_path / "media" / "ok.png").read_bytes())
    row = {"id": "mcq_1", "image": "ok.png", "prompt": "What?", "chosen": "A", "rejected": "B"}
    path = write_jsonl(tmp_path / "bench.jsonl", [row, {**row, "image": "../escape.png"}])
    outcomes = []
    for root in ("media", "media.zip"):
        out = tmp_path / f"out-{root}"
        summary = ingest(get_adapter("mm_rlhf_rewardbench")(), str(path), out, ImagesRoot(tmp_path / root))
        rejects = pq.read_table(out / "rejects.parquet").to_pylist()
        outcomes.append((summary.pairs, [(r["reason"], r["detail"]) for r in rejects]))
    assert outcomes[0] == outcomes[1] and outcomes[0][0] == 1


def test_utf16_cut_inside_a_character_keeps_its_rows_and_rejects_the_tail(tmp_path: Path) -> None:
    """A UTF-16 file of an odd number of bytes: the rows before are read, the tail is one reject naming the file."""
    (tmp_path / "odd.jsonl").write_bytes('{"i": 0}\n'.encode("utf-16") + b"\n")
    records = list(iter_local(tmp_path / "odd.jsonl"))
    assert records[0].data == {"i": 0} and records[-1].ref == "odd.jsonl:1+"
    assert records[-1].error is not None and records[-1].error.reason == "truncated file"
    assert "odd.jsonl: unreadable from line odd.jsonl:1+: 'utf-16-le' codec" in records[-1].error.detail


def test_gzip_of_nothing_but_garbage_is_a_truncated_file_reject(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress(b'{"i": 0}\n')[:-8] + b"garbage!")
    records = list(iter_local(tmp_path / "x.jsonl.gz"))
    assert records[-1].error is not None and records[-1].error.reason == "truncated file"


def test_an_image_file_that_cannot_be_read_or_is_too_large_is_a_reject(
    tmp_path: Path, run_ingest: RunIngest, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "media" / "ok.png")
    data = (tmp_path / "media" / "ok.png").read_bytes()
    with zipfile.ZipFile(tmp_path / "media.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ok.png", data)
        archive.writestr("big.png", data + b"\0" * 5000)
        archive.writestr("bad.png", data)
    raw = bytearray((tmp_path / "media.zip").read_bytes())
    at = raw.index(b"bad.png") + len(b"bad.png") + 20  # inside the member's deflated bytes
    raw[at : at + 16] = b"\xff" * 16
    (tmp_path / "media.zip").write_bytes(bytes(raw))
    monkeypatch.setattr("curation.images.MAX_IMAGE_BYTES", 4000)
    row = {"id": "mcq_1", "image": "ok.png", "prompt": "What?", "chosen": "A", "rejected": "B"}
    rows = [row, {**row, "image": "big.png"}, {**row, "image": "bad.png"}]
    result = run_ingest(
        "mm_rlhf_rewardbench", write_jsonl(tmp_path / "b.jsonl", rows), images_root=tmp_path / "media.zip"
    )
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [
        ("b.jsonl:1", "image too large"),
        ("b.jsonl:2", "image unreadable"),
    ]
    assert "above 4000 bytes" in result.rejects[0]["detail"] and len(result.pairs) == 1


def test_a_row_group_that_ends_early_without_an_error_rejects_its_missing_rows(tmp_path: Path) -> None:
    n = 60
    table = pa.table({"prompt": [f"question {i}" for i in range(n)], "chosen": [f"good {i}" for i in range(n)],
                      "rejected": [f"bad {i}" for i in range(n)]})  # fmt: skip
    path = tmp_path / "uf.parquet"
    pq.write_table(table, path, row_group_size=20, compression="none", use_dictionary=False)
    offset = pq.ParquetFile(path).metadata.row_group(0).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset + 1] = 36  # a page header that still parses: pyarrow then yields no rows for the group, silently
    path.write_bytes(bytes(data))
    assert sum(b.num_rows for b in pq.ParquetFile(path).iter_batches(row_groups=[0])) < 20  # the premise
    for columnar in (True, False):
        summary = ingest(get_adapter(UF)(), str(path), tmp_path / f"out-{columnar}", columnar_path=columnar)
        assert (summary.rows_read, summary.pairs) == (60, 40)
        rejects = pq.read_table(tmp_path / f"out-{columnar}" / "rejects.parquet").to_pylist()
        assert [r["source_row"] for r in rejects] == [f"uf.parquet:{i}" for i in range(20)]
        assert "row group 0 (rows 0-19, 20 rows)" in rejects[0]["detail"]


def test_a_parquet_name_holding_glob_characters_is_read_as_named(tmp_path: Path) -> None:
    def write(name: str, word: str) -> None:
        pq.write_table(pa.table({"prompt": [f"{word} {i}" for i in range(5)], "chosen": ["a"] * 5,
                                 "rejected": ["b"] * 5}), tmp_path / name)  # fmt: skip

    write("x[1].parquet", "REAL")
    write("x1.parquet", "DECOY")  # what DuckDB would read for the pattern `x[1].parquet`
    ingest(get_adapter(UF)(), str(tmp_path / "x[1].parquet"), tmp_path / "out")
    prompts = [p["prompt"][0]["content"] for p in pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()]
    assert prompts == [f"REAL {i}" for i in range(5)]


ARROW_TRIALS = """
import random, shutil, sys
from pathlib import Path
import pyarrow as pa, pyarrow.ipc as ipc
from curation.ingest import ingest
from curation.sources import get_adapter
from curation.failure import describe
rows = [{"chosen": f"\\n\\nHuman: hi {i}\\n\\nAssistant: yes {i}",
         "rejected": f"\\n\\nHuman: hi {i}\\n\\nAssistant: no {i}"} for i in range(100)]
table = pa.Table.from_pylist(rows)
sink = pa.BufferOutputStream()
with ipc.new_stream(sink, table.schema) as writer:  # the IPC stream `datasets` writes
    for batch in table.to_batches(max_chunksize=10):
        writer.write_batch(batch)
base, rng, work = sink.getvalue().to_pybytes(), random.Random(1), Path(sys.argv[1])
for trial in range(60):
    data = bytearray(base)
    for _ in range(rng.randint(1, 6)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    (work / "s.arrow").write_bytes(bytes(data))
    shutil.rmtree(work / "out", ignore_errors=True)
    try:
        summary = ingest(get_adapter("hh_rlhf")(), str(work / "s.arrow"), work / "out")
    except Exception as exc:
        assert describe(exc) is not None, repr(exc)
        continue
    assert summary.balanced
print("ok")
"""


def test_damaged_arrow_streams_are_rejects_not_crashes(tmp_path: Path) -> None:
    # In a child process: converting a damaged batch without validating it crashed the interpreter (SIGSEGV).
    result = subprocess.run([sys.executable, "-c", ARROW_TRIALS, str(tmp_path)], capture_output=True, text=True,
                            check=False, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_data_after_a_json_array_is_not_silently_dropped(tmp_path: Path) -> None:
    (tmp_path / "two.json").write_text(json.dumps([GOOD, GOOD]) + "\n" + json.dumps([GOOD]))
    records = list(iter_local(tmp_path / "two.json"))
    assert [r.error is None for r in records] == [True, True, False]
    assert records[-1].ref == "two.json:2+" and "data after the array's end" in records[-1].error.detail  # type: ignore[union-attr]


def test_non_finite_numbers_in_meta_are_spelled_as_strings(tmp_path: Path, run_ingest: RunIngest) -> None:
    (tmp_path / "rows.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b", "x": [NaN, -Infinity]}\n')
    result = run_ingest(UF, tmp_path / "rows.jsonl")
    assert json.loads(result.pairs[0]["meta"]) == {"x": ["NaN", "-Infinity"]}  # valid JSON, nothing lost


def test_an_empty_file_among_wildvision_judgements_is_one_reject(tmp_path: Path, run_ingest: RunIngest) -> None:
    folder = tmp_path / "judge_gpt-4o_reference_claude-3-sonnet-20240229"
    line = {"question_id": "q1", "model": "m", "judge": "gpt-4o",
            "games": [{"user_prompt": None, "judgment": "[[A>B]]", "score": "A>B"}]}  # fmt: skip
    write_jsonl(tmp_path / "data" / "model_judgements" / folder.name / "m.jsonl", [line])
    (tmp_path / "data" / "model_judgements" / folder.name / "empty.jsonl").write_bytes(b"")
    answer = {"question_id": "q1", "instruction": "Hi?", "output": "hello"}
    for model in ("claude-3-sonnet-20240229", "m"):
        write_jsonl(tmp_path / "data" / "model_answers" / f"{model}.jsonl", [{**answer, "model": model}])
    result = run_ingest("wildvision_bench", tmp_path / "data", options={"verdicts": "judgements"})
    refs = [(r["source_row"], r["reason"]) for r in result.rejects]
    assert (f"model_judgements/{folder.name}/empty.jsonl:0+", "unreadable file") in refs
    assert result.summary.rows_read == 2  # the other file's row was read (and judged on its own merits)


def test_each_image_reject_names_its_field_once(tmp_path: Path, run_ingest: RunIngest) -> None:
    """An RLAIF-V parquet as `datasets` writes it (the Image feature's {bytes, path} struct), with broken images:
    every reject names the row once and the field, and says what is wrong with the image."""
    import datasets

    from tests.conftest import image_bytes

    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "outside.png").write_bytes(image_bytes(1))
    (images / "link.png").symlink_to(tmp_path / "outside.png")
    broken = [{"bytes": image_bytes(2)[:40], "path": None}, {"bytes": b"", "path": None},
              {"bytes": None, "path": "link.png"}, {"bytes": None, "path": "../outside.png"}]  # fmt: skip
    text = datasets.Value("string")
    features = datasets.Features({"image": datasets.Image(), "question": text, "chosen": text, "rejected": text})
    rows = [{"image": image, "question": f"Q{i}?", "chosen": "yes", "rejected": "no"} for i, image in enumerate(broken)]
    # the Image feature's Arrow type, written directly: `datasets` would read a path-only image to encode it
    pq.write_table(pa.Table.from_pylist(rows, schema=features.arrow_schema), tmp_path / "data.parquet")
    result = run_ingest("rlaif_v", tmp_path / "data.parquet", images_root=images)
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("image undecodable", "data.parquet:0: field 'image': not a recognised image format"),
        ("image undecodable", "data.parquet:1: field 'image': empty image bytes"),
        ("image not found", "data.parquet:2: field 'image': link.png (a link to outside the images root)"),
        ("image not found", "data.parquet:3: field 'image': ../outside.png (outside the images root)"),
    ]


def test_a_file_that_cannot_be_opened_is_one_reject_and_the_build_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission denied on one file of a folder (as for a user without read access; root reads anything, so the
    open is made to fail here): one `unreadable file` reject naming why, not a `truncated file`, the other files'
    rows read, and the build completes, its manifest recording the file as unreadable instead of failing at the
    end."""
    import curation.build
    import curation.readers
    from curation.build import build
    from curation.recipe import load_recipe

    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", [GOOD])
    write_jsonl(folder / "b.jsonl", [{**GOOD, "chosen": "4"}])
    opener, hasher = curation.readers._open_decompressed, curation.build.sha256_file

    def refuse(path: Path) -> None:
        if path.name == "b.jsonl":
            raise PermissionError(13, "Permission denied", str(path))

    def denied_open(path: Path) -> object:
        refuse(path)
        return opener(path)

    def denied_hash(path: Path, stop: object = None) -> str:
        refuse(path)
        return hasher(path, stop)

    monkeypatch.setattr(curation.readers, "_open_decompressed", denied_open)
    summary = ingest(get_adapter(UF)(), str(folder), tmp_path / "out")
    [reject] = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert (reject["source_row"], reject["reason"]) == ("b.jsonl:0+", "unreadable file")
    assert "permission denied" in reject["detail"].lower() and (summary.rows_read, summary.pairs) == (2, 1)
    monkeypatch.setattr(curation.build, "sha256_file", denied_hash)
    (tmp_path / "r.yaml").write_text(f"name: r\nsources:\n  uf: {{adapter: {UF}, path: {folder}}}\n")
    manifest = build(load_recipe(tmp_path / "r.yaml"), tmp_path / "b", workers=1)
    assert manifest["inputs"]["uf"]["files"]["b.jsonl"] == "unreadable: permission denied"
    assert manifest["sources"]["uf"]["in_shards"] == 1
