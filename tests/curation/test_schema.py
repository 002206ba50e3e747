import itertools

import duckdb
import pytest

from curation.schema import (
    PAIR_SCHEMA,
    SCHEMA_VERSION,
    canonical_text,
    compute_pair_id,
    compute_prompt_id,
    install_text_macros,
    normalize_text,
)

PROMPT = [{"role": "user", "content": "What is in the image?\n<image>"}]


def test_normalize_text_nfc_and_whitespace() -> None:
    assert normalize_text("  Cafe\u0301 \n\t au  lait ") == "Caf\u00e9 au lait"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a  b", "a  b"),  # spaces within a line stay (aligned columns, a table)
        ("a\tb\n\n\n\nc ", "a\tb\n\nc"),
        ("keeps\nlines\n\nand one blank line", "keeps\nlines\n\nand one blank line"),
        (" lead", "lead"),
        ("x \n y", "x\n y"),
        ("def f(x):\n    if x:\n\treturn 1  \n", "def f(x):\n    if x:\n\treturn 1"),  # indentation is code's
        ("a\r\nb\rc\r\n\r\n\r\nd", "a\nb\nc\n\nd"),  # line breaks as \n
        ("x\n  \n\n\ny", "x\n\ny"),  # a line of spaces is blank
        ("Cafe\u0301", "Caf\u00e9"),  # NFC even when no whitespace needs rewriting
        ("Cafe\u0301 au lait \n", "Caf\u00e9 au lait"),
        ("\n", ""),  # an answer of newlines only is empty (and then fails validation)
        ("Hello\n", "Hello"),
        ("\n\tIndented start", "Indented start"),
        ("v\x0bw\x1cx\u2028y \u00a0", "v\x0bw\x1cx\u2028y \u00a0"),  # other whitespace is not the canonical form's
    ],
)
def test_canonical_text_in_python_and_sql(text: str, expected: str) -> None:
    db = duckdb.connect()
    install_text_macros(db)
    assert canonical_text(text) == expected
    assert db.execute("SELECT canonical_text(?)", [text]).fetchone() == (expected,)


def test_pair_id_ignores_whitespace_and_unicode_form() -> None:
    variant = [{"role": "user", "content": "What is in  the image?\n<image> "}]
    assert compute_pair_id(PROMPT, ["a"], "A ca\u0301t.", "A dog.") == compute_pair_id(
        variant, ["a"], " A c\u00e1t. ", "A dog."
    )


def test_pair_id_depends_on_orientation_images_and_roles() -> None:
    base = compute_pair_id(PROMPT, ["a"], "yes", "no")
    assert base != compute_pair_id(PROMPT, ["a"], "no", "yes")
    assert base != compute_pair_id(PROMPT, ["b"], "yes", "no")
    assert base != compute_pair_id([{"role": "system", "content": PROMPT[0]["content"]}], ["a"], "yes", "no")
    assert len(base) == 32 and int(base, 16) >= 0


def test_prompt_id_shared_by_pairs_of_one_prompt() -> None:
    assert compute_prompt_id(PROMPT, ["a"]) == compute_prompt_id(PROMPT, ["a"])
    assert compute_prompt_id(PROMPT, ["a"]) != compute_prompt_id(PROMPT, [])
    assert compute_prompt_id(PROMPT, ["a", "b"]) != compute_prompt_id(PROMPT, ["b", "a"])


def test_schema_is_versioned() -> None:
    assert PAIR_SCHEMA.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
    assert {"pair_id", "prompt_id", "images", "meta", "tie", "margin"} <= set(PAIR_SCHEMA.names)


TRICKY = ['quote " backslash \\ slash /', "tab\tnew\nline \u2028 \x1b \x0e \x7f", "é 中文 😀 \U0001f600",
          "  spaced   out  ", "Cafe\u0301 \u2000 \x1c end"]  # fmt: skip


def test_ids_are_md5_of_the_documented_json() -> None:
    """The ids are pinned to their definition: MD5 of compact JSON (UTF-8 kept; control characters as DuckDB's
    `to_json` writes them, upper-case hex) of the normalized prompt turns, the image hashes, then chosen and
    rejected."""
    import hashlib
    import json
    import re

    def spelled(value: object) -> bytes:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return re.sub(r"\\u00([0-9a-f]{2})", lambda m: "\\u00" + m.group(1).upper(), text).encode("utf-8")

    for i, text in enumerate(TRICKY):
        prompt = [{"role": "system", "content": text}, {"role": "user", "content": TRICKY[-1 - i]}]
        images = ["ab" * 32, "cd" * 32][: i % 3]
        payload = [[[m["role"], normalize_text(m["content"])] for m in prompt], images]
        assert compute_prompt_id(prompt, images) == hashlib.md5(spelled(payload)).hexdigest()
        answers = [normalize_text(text), normalize_text(TRICKY[i - 1])]
        pair_id = compute_pair_id(prompt, images, text, TRICKY[i - 1])
        assert pair_id == hashlib.md5(spelled([*payload, *answers])).hexdigest()


def test_duckdb_spelling_of_the_ids_equals_python() -> None:
    """`TEXT_MACROS` compute the same canonical text, normalization and ids as Python, on random strings of every
    kind of whitespace, control characters (not NUL, which the columnar ingest leaves to Python), quotes,
    combining marks and astral characters; and identity over the canonical text is identity over the text (the
    columnar ingest hashes the canonical text, `Pair.to_row` the native one)."""
    import random

    from curation.schema import WHITESPACE, compute_ids

    assert "".join(chr(c) for c in range(0x110000) if chr(c).isspace()) == WHITESPACE
    alphabet = [*WHITESPACE, *'ab "\\/', *map(chr, range(1, 0x20)), "\u0301", "e", "\u00e9", "\u2126", "\x7f",
                "中", "😀", "<image>", "A\u030a", "\u1100\u1161", "\u0344", "\U0001d15e"]  # fmt: skip
    rng = random.Random(0)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(8000)]
    plain = [
        "a",
        "b",
        " ",
        " ",
        "\n",
        "\n",
        "\t",
        "\r",
        "\x0b",
        "\x0c",
        "\x1c",
        "\u00e9",
    ]  # mostly ASCII: `canonical_identity`'s fast path
    texts += ["".join(rng.choice(plain) for _ in range(rng.randint(0, 12))) for _ in range(4000)]
    db = duckdb.connect()
    install_text_macros(db)
    got = [r[0] for r in db.execute("SELECT identity_text(s) FROM unnest(?) t(s)", [texts]).fetchall()]
    assert got == [normalize_text(t) for t in texts]
    canonical = [r[0] for r in db.execute("SELECT canonical_text(s) FROM unnest(?) t(s)", [texts]).fetchall()]
    assert canonical == [canonical_text(t) for t in texts]
    assert [normalize_text(c) for c in canonical] == got
    fast = db.execute("SELECT canonical_identity(canonical_text(s)) FROM unnest(?) t(s)", [texts]).fetchall()
    assert [r[0] for r in fast] == got
    # `same_identity` of canonical texts is equality of identities: each text against the next, and against
    # itself with its whitespace respelled (tabs for spaces, line breaks doubled, a space before the first word)
    respelled = [" " + t.replace(" ", "\t").replace("\n", "\n\n") for t in texts]
    pairs = [*itertools.pairwise(texts), *zip(texts, respelled, strict=True)]
    query = "SELECT same_identity(canonical_text(a), canonical_text(b)) FROM (SELECT unnest(?) AS a, unnest(?) AS b)"
    same = db.execute(query, [[a for a, _ in pairs], [b for _, b in pairs]]).fetchall()
    assert [r[0] for r in same] == [normalize_text(a) == normalize_text(b) for a, b in pairs]
    rows = [texts[i : i + 4] for i in range(0, len(texts), 4)]
    db.execute("CREATE TABLE t (role VARCHAR, content VARCHAR, chosen VARCHAR, rejected VARCHAR)")
    db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    ids = db.execute(
        """SELECT identity_digest(pair_json(p, chosen, rejected)), identity_digest(p) FROM (
               SELECT prompt_json([{'role': role, 'content': canonical_text(content)}], ['ab', 'cd']) AS p,
                      canonical_text(chosen) AS chosen, canonical_text(rejected) AS rejected FROM t)"""
    ).fetchall()
    expected = [compute_ids([{"role": r[0], "content": r[1]}], ["ab", "cd"], r[2], r[3]) for r in rows]
    assert ids == expected
