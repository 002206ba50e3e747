import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

from curation.images import ImagesRoot
from curation.ingest import Outputs, ingest
from curation.pair import Pair
from curation.sources import get_adapter
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt
from tests.conftest import RunIngest, image_bytes, output_digests, write_jsonl

HH = [
    {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."},
    {"chosen": 42, "rejected": "\n\nHuman: x\n\nAssistant: y"},
    {"rejected": "\n\nHuman: x\n\nAssistant: y"},
    {"chosen": "no markers", "rejected": "none here"},
]


def test_every_row_is_a_pair_or_a_reject_with_its_reason(tmp_path: Path, run_ingest: RunIngest) -> None:
    path = write_jsonl(tmp_path / "hh.jsonl", HH)
    with open(path, "ab") as handle:
        handle.write(b"{broken\n")
    result = run_ingest("hh_rlhf", path)
    s = result.summary
    assert (s.rows_read, s.rows_paired, s.rows_rejected, s.pairs) == (5, 1, 4, 1)
    assert [(r["source_row"], r["stage"], r["reason"]) for r in result.rejects] == [
        ("hh.jsonl:1", "ingest", "wrong type"),
        ("hh.jsonl:2", "ingest", "missing field"),
        ("hh.jsonl:3", "ingest", "no shared prompt"),
        ("hh.jsonl:4", "ingest", "malformed json"),
    ]
    assert result.rejects[0]["detail"] == "hh.jsonl:1: 'chosen': expected str, got int"
    assert result.pairs[0]["chosen"] == "Hello!" and result.pairs[0]["rejected"] == "Go away."


def test_texts_are_stored_in_canonical_form_unless_kept_as_published(tmp_path: Path) -> None:
    """Canonical form (NFC, line ends and blank lines tidied) for building; as published for scoring a benchmark.
    The ids are the same either way: identity normalizes further."""
    import pyarrow.parquet as pq

    row = {
        "chosen": "\n\nHuman: Cafe\u0301  ?\n\nAssistant: A\t b \n\n\n\n    c ",
        "rejected": "\n\nHuman: Cafe\u0301  ?\n\nAssistant: No.",
    }
    path = write_jsonl(tmp_path / "hh.jsonl", [row])
    adapter = get_adapter("hh_rlhf")({})
    ingest(adapter, str(path), tmp_path / "canonical")
    ingest(adapter, str(path), tmp_path / "published", canonical=False)
    canonical = pq.read_table(tmp_path / "canonical" / "pairs.parquet").to_pylist()[0]
    published = pq.read_table(tmp_path / "published" / "pairs.parquet").to_pylist()[0]
    # a line's indentation and inner spaces are kept (code); its trailing spaces and extra blank lines are not
    assert (canonical["prompt"][0]["content"], canonical["chosen"]) == ("Caf\u00e9  ?", "A\t b\n\n    c")
    assert (published["prompt"][0]["content"], published["chosen"]) == ("Cafe\u0301  ?", "A\t b \n\n\n\n    c")
    assert (canonical["pair_id"], canonical["prompt_id"]) == (published["pair_id"], published["prompt_id"])


class _Images(Adapter):
    """A test adapter: one image per row, given inline as bytes or by path."""

    info = SourceInfo("test_images", "test", "train", "image", None, "CC0", "test adapter")
    mapped_fields: ClassVar[frozenset[str]] = frozenset({"q"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        value = field(row, "img", (str, dict))
        if isinstance(value, dict):
            value = {"bytes": bytes.fromhex(value["hex"])}
        sha = ctx.image(value, "img")
        if row.get("boom"):
            raise ZeroDivisionError("adapter bug")
        return [Pair(user_prompt("<image>\n" + text_field(row, "q")), "a", "b", images=[sha])]


def test_images_stored_once_and_only_for_rows_that_pair(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "one.png").write_bytes(image_bytes(1))
    rows = [
        {"q": "a", "img": "one.png"},
        {"q": "b", "img": {"hex": image_bytes(1).hex()}},  # same image, embedded
        {"q": "c", "img": {"hex": image_bytes(2).hex()}, "boom": True},  # fails after reading its image
        {"q": "d", "img": "missing.png"},
        {"q": "e", "img": {"hex": b"garbage".hex()}},
    ]
    out = tmp_path / "out"
    summary = ingest(_Images(), str(write_jsonl(tmp_path / "rows.jsonl", rows)), out, ImagesRoot(tmp_path / "imgs"))
    assert summary.images == 1 and summary.pairs == 2 and summary.rows_rejected == 3
    assert dict(summary.rejects_by_reason) == {"adapter error": 1, "image not found": 1, "image undecodable": 1}
    import pyarrow.parquet as pq

    images = pq.read_table(out / "images.parquet").to_pylist()
    assert [i["sha256"] for i in images] == [hashlib.sha256(image_bytes(1)).hexdigest()]
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert pairs[0]["pair_id"] != pairs[1]["pair_id"] and pairs[0]["images"] == pairs[1]["images"]
    assert json.loads(pairs[0]["meta"]) == {"img": "one.png"}
    assert json.loads(pairs[1]["meta"]) == {"img": {"hex": image_bytes(1).hex()}}
    assert pairs[0]["modality"] == "image"


def test_ingest_is_byte_identical_across_runs(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "hh.jsonl", HH * 3)
    digests = []
    for run in ("a", "b"):
        ingest(get_adapter("hh_rlhf")(), str(path), tmp_path / run)
        digests.append(output_digests(tmp_path / run))
    assert digests[0] == digests[1]


def test_pairs_written_as_an_arrow_work_file_are_the_parquet_ones(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    path = write_jsonl(tmp_path / "hh.jsonl", HH * 3)
    ingest(get_adapter("hh_rlhf")(), str(path), tmp_path / "parquet")
    ingest(get_adapter("hh_rlhf")(), str(path), tmp_path / "arrow", outputs=Outputs(pairs_format="arrow"))
    assert not (tmp_path / "arrow" / "pairs.parquet").exists()
    arrow = ipc.open_file(pa.memory_map(str(tmp_path / "arrow" / "pairs.arrow"))).read_all()
    assert arrow.num_rows > 0 and arrow.equals(pq.read_table(tmp_path / "parquet" / "pairs.parquet"))
    for name in ("images.parquet", "rejects.parquet"):  # only the pairs change format
        assert (tmp_path / "arrow" / name).read_bytes() == (tmp_path / "parquet" / name).read_bytes()


def test_a_failed_ingest_leaves_no_files(tmp_path: Path) -> None:
    class Exploding(Adapter):
        info = SourceInfo("exploding", "x", "train", "text", None, "CC0", "x")

        def records(self, location: str, images_root: ImagesRoot):  # type: ignore[no-untyped-def]
            from curation.readers import Record

            yield Record("r:0", {"a": 1})
            raise KeyboardInterrupt

        def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
            return [Pair(user_prompt("q"), "a", "b")]

    with pytest.raises(KeyboardInterrupt):
        ingest(Exploding(), "unused", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither `out` nor `out.partial`


def test_an_output_inside_the_input_folder_is_refused(tmp_path: Path) -> None:
    """Its files would be read back as rows by the next ingest of the folder (`--replace`)."""
    from curation.errors import InputError
    from curation.sources import get_adapter

    (tmp_path / "rows.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    adapter = get_adapter("ultrafeedback_binarized")()
    with pytest.raises(InputError, match="the output is inside the input folder"):
        ingest(adapter, str(tmp_path), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]
    assert ingest(adapter, str(tmp_path), tmp_path.parent / f"{tmp_path.name}-out").pairs == 1


def test_limit_reads_only_n_rows(tmp_path: Path, run_ingest: RunIngest) -> None:
    result = run_ingest("hh_rlhf", write_jsonl(tmp_path / "hh.jsonl", HH * 5), limit=3)
    assert result.summary.rows_read == 3


def test_parallel_conversion_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned workers re-run the parent's __main__ file; streamlit's AppTest (tests/app) leaves a page script
    # there, so give the workers a neutral __main__ (a console script or `python -m` run needs no such care).
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    rows = [dict(HH[0], chosen=HH[0]["chosen"] + f" {i}") for i in range(1200)] + HH[1:]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with open(path, "ab") as handle:
        handle.write(b"{broken\n")  # a record error travels through a worker too
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        summary = ingest(get_adapter("hh_rlhf")(), str(path), out, workers=workers)
        assert summary.pairs == 1200 and summary.rows_rejected == 4
        digests.append(output_digests(out))
    assert digests[0] == digests[1]


def test_a_placeholder_lost_to_canonical_form_is_a_reject(tmp_path: Path, run_ingest: RunIngest) -> None:
    """NFC joins the placeholder's ">" with a following U+0338 into one character: the stored prompt would hold no
    placeholder for its image, so the row is a reject (kept as published, it is a pair)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {"question": "<image>\u0338 what?", "chosen": "a", "rejected": "b", "image": {"bytes": image_bytes(0)}}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "rlaif.parquet")
    result = run_ingest("rlaif_v", tmp_path / "rlaif.parquet")
    assert [r["reason"] for r in result.rejects] == ["image placeholders mismatch"]
    ingest(get_adapter("rlaif_v")(), str(tmp_path / "rlaif.parquet"), tmp_path / "published", canonical=False)
    assert pq.read_table(tmp_path / "published" / "pairs.parquet").num_rows == 1


def test_images_converted_in_a_pool_are_stored_once_across_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file through the converting pool: an image repeated in later batches of rows is
    stored once, and a bad image is a reject: the same bytes as one process."""
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"What is shown? {i}", "chosen": f"A picture {i}.", "rejected": "Nothing.",
             "image": {"bytes": image_bytes(i % 4) if i != 777 else b"broken", "path": None}}
            for i in range(1300)]  # fmt: skip
    path = tmp_path / "rlaif.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        summary = ingest(get_adapter("rlaif_v")(), str(path), out, workers=workers)
        assert (summary.pairs, summary.rows_rejected, summary.images) == (1299, 1, 4)
        digests.append(output_digests(out))
    assert digests[0] == digests[1]


def test_files_ingested_in_parallel_give_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of several files goes file by file to worker processes; parts are joined in file order, an image
    repeated across files is stored once, and a broken line is still a reject."""
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "rlaif"
    folder.mkdir()
    for k in range(3):
        rows = [{"question": f"What is shown? {k}-{i}", "chosen": f"A picture {i}.", "rejected": "Nothing.",
                 "image": {"bytes": image_bytes(i % 4), "path": None}} for i in range(2600)]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{k}.parquet")
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        summary = ingest(get_adapter("rlaif_v")(), str(folder), out, workers=workers)
        assert summary.pairs == 7800 and summary.images == 4
        digests.append(output_digests(out))
        assert not (out / "parts.partial").exists()
    assert digests[0] == digests[1]


def test_finished_file_parts_are_kept_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `parts` (a build's work folder), each finished file's part stays, and a rerun takes it instead of
    ingesting the file again (a cluster's interrupted ingest resumes); `per_file` splits a columnar layout too."""
    import contextlib
    import shutil
    from concurrent.futures import Future

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "uf"
    folder.mkdir()
    for k in range(3):
        rows = [{"prompt": f"Say {k}-{i}", "chosen": [{"role": "user", "content": f"Say {k}-{i}"},
                 {"role": "assistant", "content": "yes"}], "rejected": [{"role": "user", "content": f"Say {k}-{i}"},
                 {"role": "assistant", "content": "no"}], "score_chosen": 8.0, "score_rejected": 2.0}
                for i in range(50)]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{k}.parquet")
    adapter = get_adapter("ultrafeedback_binarized")()
    whole = ingest(adapter, str(folder), tmp_path / "whole")  # one columnar query over the folder
    submitted: list[str] = []

    @contextlib.contextmanager
    def recording_pool(workers: int) -> Any:
        class Pool:
            def submit(self, fn: Any, *args: Any) -> Future:
                submitted.append(args[2])  # the file's name as refs spell it
                future: Future = Future()
                future.set_result(fn(*args))
                return future

        yield Pool()

    parts = tmp_path / "parts"
    first = ingest(adapter, str(folder), tmp_path / "a", workers=2, pool=recording_pool, parts=parts, per_file=True)
    assert submitted == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert output_digests(tmp_path / "a") == output_digests(tmp_path / "whole") and first.pairs == whole.pairs == 150
    (parts / "00001" / "part.json").unlink()  # as if the second file's task had not finished
    pairs = parts / "00002" / "pairs.parquet"  # and a crash of the machine had cut the third's pairs short
    pairs.write_bytes(pairs.read_bytes()[:-50])
    submitted.clear()
    ingest(adapter, str(folder), tmp_path / "b", workers=2, pool=recording_pool, parts=parts, per_file=True)
    assert submitted == ["part-1.parquet", "part-2.parquet"]
    assert output_digests(tmp_path / "b") == output_digests(tmp_path / "whole")
    rejects = parts / "00000" / "rejects.parquet"  # damaged in place by a failing disk: the same size
    data = bytearray(rejects.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rejects.write_bytes(bytes(data))
    submitted.clear()
    ingest(adapter, str(folder), tmp_path / "c", workers=2, pool=recording_pool, parts=parts, per_file=True)
    assert submitted == ["part-0.parquet"]
    assert output_digests(tmp_path / "c") == output_digests(tmp_path / "whole")

    @contextlib.contextmanager
    def hanging_pool(workers: int) -> Any:  # a cluster whose tasks run for long
        class Pool:
            def submit(self, fn: Any, *args: Any) -> Future:
                return Future()

        yield Pool()

    class Stopped(Exception):
        pass

    def stop(summary: Any) -> None:  # the build's check, called while the merge waits for a task
        raise Stopped

    shutil.rmtree(parts)
    with pytest.raises(Stopped):
        ingest(adapter, str(folder), tmp_path / "d", workers=2, pool=hanging_pool, parts=parts, per_file=True,
               on_row=stop)  # fmt: skip
    assert not (tmp_path / "d").exists()


def test_a_record_of_lists_becomes_a_list_of_records() -> None:
    from curation.errors import RowError
    from curation.sources.base import records_of

    assert records_of({"model": ["a", "b"], "score": [1, 2]}, "c") == [
        {"model": "a", "score": 1},
        {"model": "b", "score": 2},
    ]
    assert records_of({"model": "a", "score": [1]}, "c") == {"model": "a", "score": [1]}  # not a sequence: as is
    with pytest.raises(RowError, match="'c': a record of lists of different lengths"):
        records_of({"model": ["a", "b"], "score": [1]}, "c")
    adapter = get_adapter("vlfeedback")()
    row = {"prompt": "q", "completions": {"model": ["a"], "response": ["r"]}}
    assert adapter.normalize(row)["completions"] == [{"model": "a", "response": "r"}]
    assert adapter.normalize({"prompt": "q"}) == {"prompt": "q"}
