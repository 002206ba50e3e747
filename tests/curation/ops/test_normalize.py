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
