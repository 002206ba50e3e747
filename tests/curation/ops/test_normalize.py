from pathlib import Path

import duckdb
import pytest

from curation.ops.normalize import normalized


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a  b", "a b"),
        ("a\tb\n\n\n\nc ", "a b\n\nc"),
        ("keeps\nlines\n\nand one blank line", "keeps\nlines\n\nand one blank line"),
        (" lead", "lead"),
        ("x \n y", "x\ny"),
        ("Cafe\u0301", "Caf\u00e9"),  # NFC even when no whitespace needs rewriting
        ("Cafe\u0301  au lait", "Caf\u00e9 au lait"),
        ("\n", ""),  # an answer of newlines only is empty (and then fails validation)
        ("Hello\n", "Hello"),
        ("\n\tIndented start", "Indented start"),
    ],
)
def test_normalized_sql(text: str, expected: str) -> None:
    result = duckdb.connect().execute(f"SELECT {normalized('x')} FROM (SELECT ? AS x)", [text]).fetchone()
    assert result == (expected,)


def test_normalize_pairs_writes_every_row_with_normalized_text(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import pyarrow.parquet as pq

    from curation.ops.normalize import normalize_pairs

    db = duckdb.connect()
    db.execute(
        "CREATE TABLE pairs (row_key BIGINT, prompt STRUCT(role VARCHAR, content VARCHAR)[], chosen VARCHAR, "
        "rejected VARCHAR)"
    )
    rows = [
        (0, [("system", "Be  brief."), ("user", "Fine as is")], "ok", "also ok"),  # one message changes
        (1, [("user", "Cafe\u0301?")], "Caf\u00e9", "a  b\n\n\n\nc "),  # NFC-only prompt; rejected changes
        (2, [("user", "Untouched")], "x \n y", "same"),
    ]
    for key, prompt, chosen, rejected in rows:
        messages = [{"role": r, "content": c} for r, c in prompt]
        db.execute("INSERT INTO pairs VALUES (?, ?, ?, ?)", [key, messages, chosen, rejected])
    normalize_pairs(SimpleNamespace(db=db), "pairs", tmp_path / "out.parquet")  # type: ignore[arg-type]
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()

    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    assert out == [  # in the source's order, every column kept
        {"row_key": 0, "prompt": [{"role": "system", "content": "Be brief."}, *user("Fine as is")],
         "chosen": "ok", "rejected": "also ok"},
        {"row_key": 1, "prompt": user("Caf\u00e9?"), "chosen": "Caf\u00e9", "rejected": "a b\n\nc"},
        {"row_key": 2, "prompt": user("Untouched"), "chosen": "x\ny", "rejected": "same"},
    ]  # fmt: skip
