"""The columnar ingest gives the same files as the row-by-row ingest, and really converts the clean rows in SQL."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest

from curation import columnar
from curation import ingest as ingest_module
from curation.ingest import ingest
from curation.sources import get_adapter
from tests.conftest import image_bytes, output_digests

UF = "ultrafeedback_binarized"
METADATA = pa.struct([("score_chosen", pa.float64()), ("score_rejected", pa.float64()), ("note", pa.string())])
SCHEMA = pa.schema(
    [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), ("source_index", pa.int64()),
     ("metadata", METADATA), ("tags", pa.list_(pa.string())), ("flag", pa.bool_())]
)  # fmt: skip


def _row(i: int, **changes: Any) -> dict[str, Any]:
    row = {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad answer {i}.",
           "source_index": i, "metadata": {"score_chosen": 8.5, "score_rejected": 3.0, "note": "ok"},
           "tags": ["a", "b"], "flag": i % 2 == 0}  # fmt: skip
    return {**row, **changes}


# Clean rows (SQL) with texts that test the identity and meta spellings, and rows SQL leaves to the adapter.
CLEAN = [
    _row(0),
    _row(1, prompt="Cafe\u0301  au\u00a0lait?\u2028 ", chosen=" tab\tnew\nline\r\n", rejected='quote " and \\ slash /'),
    _row(2, metadata={"score_chosen": 5.0, "score_rejected": 5.0, "note": "tie"}, tags=[], flag=None),
    _row(3, metadata=None, chosen="é 中文 😀 \x7f", rejected="\u2003\u3000wide\u3000spaces\u2003"),
    _row(4, metadata={"score_chosen": 1e-4, "score_rejected": -0.0, "note": None}, tags=None),
    _row(5, chosen="", rejected="<image> in an answer is fine"),
    _row(6, prompt="bell \x07 and backspace \x08 in a prompt"),
]
ODD = [
    _row(10, chosen=None),  # reject: missing field
    _row(11, prompt="<image>\nWhat is this?"),  # reject: placeholder without an image
    _row(12, chosen="nul \x00 inside"),  # DuckDB's string functions stop at NUL
    _row(13, metadata={"score_chosen": 1e20, "score_rejected": 2.5e-7, "note": "x"}),  # exponent notation
    _row(14, metadata={"score_chosen": math.nan, "score_rejected": math.inf, "note": "x"}),
    _row(15, metadata={"score_chosen": 7.0, "score_rejected": 1.0, "note": "escape \x1b[0m"}),  # \u001B vs \u001b
    _row(16, tags=["vertical \x0b tab"]),
]


def _write(folder: Path, rows: list[dict[str, Any]], files: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(rows) // files)
    for k in range(files):
        chunk = rows[k * size : (k + 1) * size]
        pq.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA), folder / f"part-{k}.parquet", row_group_size=3)
    return folder


def _both_ways(tmp_path: Path, location: Path, threads: int = 2, adapter: str = UF) -> dict[str, Any]:
    out = {}
    # DuckDB threads for the columnar path; the row-by-row path serially (its workers are tested elsewhere, and
    # where the plan declines, `threads` > 1 would start worker processes).
    for name, fast, workers in (("columnar", True, threads), ("rows", False, 1)):
        summary = ingest(get_adapter(adapter)(), str(location), tmp_path / name, workers=workers, columnar_path=fast)
        out[name] = (summary.as_dict(), output_digests(tmp_path / name))
    return out


def _python_refs(monkeypatch: pytest.MonkeyPatch, adapter: str, location: Path, **kwargs: Any) -> list[str]:
    """The rows a columnar ingest of `location` leaves to the adapter's `convert`."""
    refs: list[str] = []
    convert = ingest_module.convert_record
    with monkeypatch.context() as patch:
        patch.setattr(ingest_module, "convert_record", lambda a, r, *rest: refs.append(r.ref) or convert(a, r, *rest))
        ingest(get_adapter(adapter)(), str(location), location.parent / "spied", workers=1, **kwargs)
    return refs


def test_columnar_ingest_writes_the_same_bytes_as_the_row_by_row_ingest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [r for pair in zip(CLEAN, ODD, strict=False) for r in pair] + CLEAN[len(ODD) :]  # interleaved
    folder = _write(tmp_path / "uf", rows)
    assert columnar.plan(get_adapter(UF)(), str(folder)) is not None
    in_python = _python_refs(monkeypatch, UF, folder)
    all_refs = {f"part-{k}.parquet:{i}" for k in range(2) for i in range(7)}
    assert set(in_python) == all_refs - _refs_of(folder, CLEAN) and len(in_python) == len(ODD)
    result = _both_ways(tmp_path, folder)
    assert result["columnar"] == result["rows"]
    summary = result["columnar"][0]
    assert summary["rows_read"] == len(rows) and summary["rejects_by_reason"] == {
        "image placeholders mismatch": 1,
        "missing field": 1,
    }
    pairs = pq.read_table(tmp_path / "columnar" / "pairs.parquet").to_pylist()
    tie = next(p for p in pairs if p["source_row"] == "part-0.parquet:4")  # CLEAN[2]
    assert tie["tie"] and tie["margin"] == 0.0 and tie["binarization"] == "best_vs_random"


def _refs_of(folder: Path, wanted: list[dict[str, Any]]) -> set[str]:
    refs = set()
    for path in sorted(folder.glob("*.parquet")):
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            if row["source_index"] in {r["source_index"] for r in wanted}:
                refs.add(f"{path.name}:{i}")
    return refs


@pytest.mark.parametrize("name", ["eval_clean.jsonl", "label_flip_20.jsonl"])
def test_columnar_ingest_of_real_rows(
    tmp_path: Path, shared_data: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real UltraFeedback rows (label_flip_20 has a nested `metadata.noise` with booleans, strings, ints and
    floats, empty answers, ties), as parquet: same bytes both ways, and every row converted in SQL."""
    table = pa_json.read_json(shared_data / "ultrafeedback-binarized" / name)
    pq.write_table(table, tmp_path / "uf.parquet")
    assert columnar.plan(get_adapter(UF)(), str(tmp_path / "uf.parquet")) is not None
    assert _python_refs(monkeypatch, UF, tmp_path / "uf.parquet") == []
    result = _both_ways(tmp_path, tmp_path / "uf.parquet")
    assert result["columnar"] == result["rows"]
    assert result["columnar"][0]["pairs"] == table.num_rows


def test_layouts_sql_cannot_spell_stay_row_by_row(tmp_path: Path) -> None:
    adapter = get_adapter(UF)()
    text_scores = pa.table({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"], "score_chosen": ["8"]})
    pq.write_table(text_scores, tmp_path / "strings.parquet")  # "8" is parsed by Python's float()
    with_bytes = pa.table({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"], "blob": [b"\x00"]})
    pq.write_table(with_bytes, tmp_path / "bytes.parquet")  # meta writes bytes as "<N bytes>"
    (tmp_path / "uf.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    for name in ("strings.parquet", "bytes.parquet", "uf.jsonl"):
        assert columnar.plan(adapter, str(tmp_path / name)) is None
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(text_scores.drop_columns(["score_chosen"]), mixed / "a.parquet")
    pq.write_table(text_scores.drop_columns(["score_chosen"]).append_column("n", pa.array([1])), mixed / "b.parquet")
    assert columnar.plan(adapter, str(mixed)) is None  # files with different schemas
    assert columnar.plan(get_adapter("rlaif_v")(), str(tmp_path / "strings.parquet")) is None  # no SQL layout


@pytest.mark.parametrize(
    ("columns", "columnar_path"),
    [
        ({"Chosen": ["other"]}, False),  # DuckDB binds names case-insensitively: `chosen` could mean this one
        ({"x": [1], "X": [2]}, False),
        ({"__row_key": [1]}, False),  # the query's own names
        ({"file_row_number": [1]}, False),
        ({"": ["empty name"]}, False),
        ({"s": [{"A": 1, "a": 2}]}, False),  # struct fields likewise
        ({"e": [{"content": 5}], "l": [[{"content": "c"}]]}, True),  # lambda variables do not see columns
    ],
)
def test_column_names_bind_as_python_reads_them(tmp_path: Path, columns: dict[str, list], columnar_path: bool) -> None:
    table = pa.table({**columns, "prompt": ["q"], "chosen": ["a"], "rejected": ["b"]})
    pq.write_table(table, tmp_path / "uf.parquet")
    assert (columnar.plan(get_adapter(UF)(), str(tmp_path / "uf.parquet")) is not None) == columnar_path
    result = _both_ways(tmp_path, tmp_path / "uf.parquet", threads=1)
    assert result["columnar"] == result["rows"]


def test_a_broken_parquet_file_is_reported_by_the_row_reader(tmp_path: Path) -> None:
    from curation.errors import InputError

    (tmp_path / "empty.parquet").write_bytes(b"")
    assert columnar.plan(get_adapter(UF)(), str(tmp_path / "empty.parquet")) is None
    with pytest.raises(InputError, match="file is empty"):
        ingest(get_adapter(UF)(), str(tmp_path / "empty.parquet"), tmp_path / "out")


def test_no_plan_where_python_and_duckdb_unicode_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Python whose Unicode tables disagree with DuckDB's (NFC compositions, whitespace), ids computed in SQL
    could differ from the row-by-row ones: the plan declines and the ingest runs in Python."""
    folder = _write(tmp_path / "uf", CLEAN)
    assert columnar.plan(get_adapter(UF)(), str(folder)) is not None
    monkeypatch.setattr(columnar, "identity_portable", lambda: False)
    assert columnar.plan(get_adapter(UF)(), str(folder)) is None


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
TULU_SCHEMA = pa.schema(
    [("chosen", MESSAGES), ("rejected", MESSAGES), ("chosen_rating", pa.float64()), ("rejected_rating", pa.int64()),
     ("source", pa.string()), ("chosen_model", pa.string()), ("rejected_model", pa.string()), ("id", pa.string())]
)  # fmt: skip
H4_SCHEMA = pa.schema(
    [("prompt", pa.string()), ("prompt_id", pa.string()), ("chosen", MESSAGES), ("rejected", MESSAGES),
     ("messages", MESSAGES), ("score_chosen", pa.float64()), ("score_rejected", pa.float64())]
)  # fmt: skip


def _turns(*pairs: tuple[str | None, str | None]) -> list[dict[str, str | None]]:
    return [{"role": role, "content": content} for role, content in pairs]


def _messages_row(i: int, prompt: list | None = None, chosen: Any = "", rejected: Any = "", **changes: Any) -> dict:
    prompt = _turns(("system", "Be brief."), ("user", f"Question {i}?")) if prompt is None else prompt
    row = {"chosen": [*prompt, *_turns(("assistant", chosen or f"Good answer {i}."))],
           "rejected": [*prompt, *_turns(("assistant", rejected or f"Bad answer {i}."))],
           "chosen_rating": 8.5, "rejected_rating": 3, "score_chosen": 8.5, "score_rejected": 3.0, "source": "sft",
           "chosen_model": "m-1", "rejected_model": "m-2", "id": f"row-{i}", "prompt": f"Question {i}?",
           "prompt_id": f"p{i}", "messages": None}  # fmt: skip
    return {**row, **changes}


MESSAGE_CLEAN = [
    _messages_row(0),
    _messages_row(1, prompt=_turns(("human", "Hi  there\n\n\n\nfriend "), ("gpt", "Hello."), ("user", "Cafe\u0301?"))),
    _messages_row(2, chosen_rating=4.0, rejected_rating=4, score_chosen=4.0, score_rejected=4.0),  # a tie
    _messages_row(3, chosen_rating=None, source=None, chosen_model=None, score_chosen=math.nan),  # unrated
    _messages_row(4, prompt=_turns(("user", "Only a question")), chosen="An <image> in an answer is fine"),
    _messages_row(5, chosen=" tab\tnew\nline\r\n", rejected='quote " and \\ slash /'),
]
MESSAGE_ODD = [
    {**_messages_row(10), "chosen": None},  # missing field
    {**_messages_row(11), "rejected": []},  # no final answer
    {**_messages_row(12), "rejected": _turns(("user", "Another question?"), ("assistant", "No."))},  # prompts differ
    {
        **_messages_row(13),
        "chosen": _turns(("user", "q"), ("user", "a")),
        "rejected": _turns(("user", "q"), ("user", "b")),
    },  # no answer
    _messages_row(14, prompt=_turns(("bot", "Unknown role"), ("user", "q"))),
    _messages_row(15, prompt=_turns(("system", None), ("user", "q"))),  # content missing
    _messages_row(16, prompt=_turns(("user", "nul \x00 inside"))),
    _messages_row(17, prompt=_turns(("user", "q"), ("assistant", "a"))),  # the prompt ends with an assistant turn
    _messages_row(18, prompt=_turns(("user", "<image>\nWhat is this?"))),  # a placeholder without an image
    {**_messages_row(19), "chosen": _turns(("assistant", "x")), "rejected": _turns(("assistant", "y"))},  # no prompt
    {**_messages_row(20), "chosen": [None, *_turns(("assistant", "x"))]},  # a missing turn
    _messages_row(21, prompt=_turns((None, "A turn without a role"), ("user", "q"))),
]
# Rows only the Tulu-3 ratings make odd (UltraFeedback ignores scores it cannot use).
TULU_ODD = [_messages_row(30, chosen_rating=math.inf), _messages_row(31, chosen_rating=math.nan)]


@pytest.mark.parametrize(
    ("adapter", "schema", "odd"),
    [("tulu3_preference", TULU_SCHEMA, MESSAGE_ODD + TULU_ODD), ("olmo2_preference", TULU_SCHEMA, MESSAGE_ODD),
     (UF, H4_SCHEMA, MESSAGE_ODD)],
)  # fmt: skip
def test_message_lists_convert_in_sql_with_the_same_bytes(
    tmp_path: Path, adapter: str, schema: pa.Schema, odd: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chat message lists (Tulu-3, OLMo-2, UltraFeedback as H4 publishes it): the shared-prompt split in SQL for
    clean rows, every odd row left to `convert`, and the same files either way."""
    rows = [r for pair in zip(MESSAGE_CLEAN, odd, strict=False) for r in pair] + MESSAGE_CLEAN[len(odd) :]
    rows += odd[len(MESSAGE_CLEAN) :]
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=4)
    assert columnar.plan(get_adapter(adapter)(), str(tmp_path / "train.parquet")) is not None
    in_python = _python_refs(monkeypatch, adapter, tmp_path / "train.parquet")
    assert in_python == [f"train.parquet:{i}" for i, r in enumerate(rows) if any(r is o for o in odd)]
    result = _both_ways(tmp_path, tmp_path / "train.parquet", adapter=adapter)
    assert result["columnar"] == result["rows"]
    summary = result["columnar"][0]
    assert summary["rows_rejected"] == len(odd) - 1  # the row with a NUL converts in Python
    pairs = pq.read_table(tmp_path / "columnar" / "pairs.parquet").to_pylist()
    hi, hello, cafe = "Hi  there\n\nfriend", "Hello.", "Caf\u00e9?"
    assert pairs[1]["prompt"] == [{"role": "user", "content": hi}, {"role": "assistant", "content": hello},
                                  {"role": "user", "content": cafe}]  # fmt: skip


def _released(i: int, **changes: Any) -> dict[str, Any]:
    """An RLAIF-V row as the Hub's parquet holds it (image bytes embedded, `origin_split` a JSON string)."""
    origin = json.dumps({"model": f"model-{i % 2}", "feedback_model": "fm", "type": "qa"})
    row = {"ds_name": "RLAIF-V", "image": {"bytes": image_bytes(i % 3), "path": f"img{i % 3}.png"},
           "question": f"What is in picture {i}?", "chosen": f"Right {i}.", "rejected": f"Wrong {i}.",
           "origin_dataset": "OK-VQA", "origin_split": origin, "idx": str(i), "image_path": f"x{i}.png"}  # fmt: skip
    return {**row, **changes}


RELEASED_CLEAN = [
    _released(0),
    _released(1, question="  Cafe\u0301 \t and\u00a0more?\n\n\n", chosen="line\nbreaks\n\nkept", rejected=" é 中文 "),
    _released(2, origin_split='{"type":"x","model":"m é","a.b":"c/d"}'),  # keys sorted, spelled as Python does
    _released(3, origin_split=' {"type": "no model"} '),
    _released(4, origin_split=None, origin_dataset=None),
    _released(5, origin_split="{}"),
    _released(6),  # the image of rows 0 and 3 again: decoded once, stored once
]
RELEASED_ODD = [
    _released(10, origin_split="{not json"),  # kept as the string
    _released(11, origin_split='{"model": 3, "type": "qa"}'),
    _released(12, origin_split='{"model": "a", "model": "b"}'),  # Python keeps the last
    _released(13, origin_split='{"model": "a",}'),  # DuckDB's JSON reader accepts it, Python's does not
    _released(14, origin_split='{"model": "caf\\u00e9"}'),  # escapes
    _released(15, image={"bytes": b"not an image", "path": "bad.png"}),  # reject: undecodable
    _released(16, image={"bytes": image_bytes(7, size=(64, 48)), "path": "big.png"}),  # reject: too large
    _released(17, image=None),  # the file named by `image_path`: no images root, a reject
    _released(18, image={"bytes": b"", "path": "empty.png"}),
    _released(19, question="<image>\nPlaceholder already there"),
    _released(20, question=None),
    _released(21, chosen="nul \x00 inside"),
]


def test_rlaif_v_images_and_origin_split_convert_in_sql_with_the_same_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [r for pair in zip(RELEASED_ODD, RELEASED_CLEAN, strict=False) for r in pair] + RELEASED_ODD[7:]
    path = tmp_path / "rlaif.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    adapter = get_adapter("rlaif_v")()
    plan = columnar.plan(adapter, str(path))
    assert plan is not None and plan.layout.image
    decoded: list[int] = []
    real_decode = columnar.decode_image
    monkeypatch.setattr(
        columnar, "decode_image", lambda data, *a, **k: decoded.append(len(data)) or real_decode(data, *a, **k)
    )
    limit = 40 * 30  # image_bytes(7, (64, 48)) is larger
    out = {}
    for name, fast, workers in (("columnar", True, 2), ("rows", False, 1)):
        summary = ingest(adapter, str(path), tmp_path / name, workers=workers, columnar_path=fast, max_pixels=limit)
        out[name] = summary.as_dict(), output_digests(tmp_path / name)
    assert len(decoded) == 3 + 2  # the clean rows' three distinct images, the two failing ones; each once
    (summary, digests), (row_summary, row_digests) = out["columnar"], out["rows"]
    assert summary == row_summary
    assert digests["pairs.parquet"] == row_digests["pairs.parquet"]
    assert digests["rejects.parquet"] == row_digests["rejects.parquet"]
    images = [pq.read_table(tmp_path / name / "images.parquet").sort_by("sha256") for name in out]
    assert images[0].equals(images[1]) and images[0].num_rows == summary["images"]
    assert summary["rejects_by_reason"] == {
        "image not found": 2,
        "image too large": 1,
        "image undecodable": 1,
        "missing field": 1,
    }
    in_python = _python_refs(monkeypatch, "rlaif_v", path, max_pixels=limit)
    odd = [i for i, r in enumerate(rows) if any(r is o for o in RELEASED_ODD)]
    assert in_python == [f"rlaif.parquet:{i}" for i in odd]  # every clean row converted in SQL
    pairs = {p["source_row"]: p for p in pq.read_table(tmp_path / "columnar" / "pairs.parquet").to_pylist()}
    assert pairs["rlaif.parquet:5"]["chosen_model"] == "m é" and pairs["rlaif.parquet:5"]["modality"] == "image"


def test_json_object_spelling_equals_python() -> None:
    """`json_object_sql` is exact where it says so: on random JSON-like strings, the spelled `meta` value and the
    `model` key equal what Python's `json.loads` + `json.dumps` give."""
    import random

    import duckdb

    from curation.sources.common import json_object_sql, parsed_json_or_text

    tokens = ["{", "}", '"model"', '"type"', '"a"', '"é 😀"', '"x,}"', '""', ":", ",", " ", "\n", "1", "null",
              '"q\\"uote"', "[", "]", "{}", '"\u2028"', "NaN", '"\x01"']  # fmt: skip
    rng = random.Random(1)
    texts = ["".join(rng.choice(tokens) for _ in range(rng.randint(0, 9))) for _ in range(6000)]
    for _ in range(3000):  # well-formed objects, some with duplicate keys, numbers or trailing commas
        keys = [rng.choice(['"model"', '"type"', '"a"', '"é"', '""']) for _ in range(rng.randint(0, 3))]
        values = [rng.choice(['"v"', '"m 1"', "2", "null", '"é/😀"', '"tab\\t"']) for _ in keys]
        texts.append("{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, values, strict=True)) + rng.choice(["}", ",}"]))
    spelling = json_object_sql("s")
    db = duckdb.connect()
    query = f"SELECT s, {spelling.exact}, {spelling.spelled}, {spelling.key('model')} FROM unnest(?::VARCHAR[]) t(s)"
    exact = 0
    for text, is_exact, spelled, model in db.execute(query, [texts]).fetchall():
        if not is_exact:
            continue
        exact += 1
        parsed = parsed_json_or_text(text)
        assert spelled == json.dumps(parsed, ensure_ascii=False, sort_keys=True), text
        assert model == (parsed.get("model") if isinstance(parsed, dict) else None), text
    assert exact > 500


def test_rlaif_v_without_origin_split_converts_in_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{k: v for k, v in _released(i).items() if k != "origin_split"} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rlaif.parquet")
    assert _python_refs(monkeypatch, "rlaif_v", tmp_path / "rlaif.parquet") == []
    result = _both_ways(tmp_path, tmp_path / "rlaif.parquet", adapter="rlaif_v")
    assert result["columnar"][0] == result["rows"][0]
    assert result["columnar"][1]["pairs.parquet"] == result["rows"][1]["pairs.parquet"]
