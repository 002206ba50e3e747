"""The canonical preference-pair schema, the image table and the rejects table.

One row of `PAIR_SCHEMA` is one preference pair. Identity is content-derived: `pair_id` hashes the
normalized prompt, the image hashes and both answers, so the same pair from two sources collides. The ids have
two spellings, Python (`compute_ids`) and DuckDB (`TEXT_MACROS`), which tests keep equal; so has the canonical
form texts are stored in (`canonical_text`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from json.encoder import encode_basestring as _json_quote  # json.dumps' escaping, ensure_ascii=False
from typing import Any

import pyarrow as pa

# 4: the canonical form keeps a line's indentation and inner spaces; 3: texts are stored in canonical form from
# ingest on; 2: ids are MD5 of DuckDB's JSON spelling (computable in SQL); 1 used blake2b.
SCHEMA_VERSION = 4

# One placeholder per image, at the image's position in the prompt conversation.
IMAGE_TOKEN = "<image>"

MODALITIES = ("text", "image", "multi_image", "video")

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

PAIR_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.string(), nullable=False),
        pa.field("subset", pa.string()),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("prompt", pa.list_(MESSAGE_TYPE), nullable=False),
        pa.field("chosen", pa.string(), nullable=False),
        pa.field("rejected", pa.string(), nullable=False),
        pa.field("images", pa.list_(pa.string()), nullable=False),
        pa.field("chosen_score", pa.float64()),
        pa.field("rejected_score", pa.float64()),
        pa.field("margin", pa.float64()),
        pa.field("tie", pa.bool_(), nullable=False),
        pa.field("chosen_model", pa.string()),
        pa.field("rejected_model", pa.string()),
        pa.field("category", pa.string()),
        pa.field("language", pa.string()),
        pa.field("license", pa.string()),
        pa.field("binarization", pa.string()),
        pa.field("meta", pa.string(), nullable=False),
    ],
    metadata={"schema": "canonical_pair", "schema_version": str(SCHEMA_VERSION)},
)

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("bytes", pa.binary(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
    ],
    metadata={"schema": "image", "schema_version": str(SCHEMA_VERSION)},
)

# SQL for an empty image table (where a build or its benchmarks have no image file).
NO_IMAGES_SQL = (
    "SELECT NULL::VARCHAR AS sha256, NULL::BLOB AS bytes, NULL::INTEGER AS width, NULL::INTEGER AS height, "
    "NULL::VARCHAR AS format WHERE false"
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ],
    metadata={"schema": "reject", "schema_version": str(SCHEMA_VERSION)},
)


# The characters `str.split()` splits on (`str.isspace()`): identity collapses runs of them to one space.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
# Control characters JSON writes as `\\u00XX` (others have short escapes): where DuckDB's spelling may differ.
_HEX_ESCAPED = re.compile("[\x00-\x07\x0b\x0e-\x1f]")
# DuckDB's `to_json` spelling of a string: json.dumps' escaping with upper-case hex digits.
_DUCKDB_ESCAPES = str.maketrans(
    {**{chr(c): f"\\u{c:04X}" for c in range(0x20)}, "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
     "\r": "\\r", '"': '\\"', "\\": "\\\\"}
)  # fmt: skip


# What `canonical_text` rewrites beyond NFC; most texts match nothing, and a search is cheaper than the rewrite.
_NEEDS_REWRITE = re.compile("\r|[ \t\f\v]\n|\n\n\n|^[\t\n\f\r ]|[\t\n\f\r ]\\Z")
_LINE_BREAKS = re.compile("\r\n?")
_LINE_ENDS = re.compile("[ \t\f\v]+\n")
_BLANK_LINES = re.compile("\n{3,}")


def canonical_text(text: str) -> str:
    """The stored form of a prompt turn or answer: Unicode NFC; line breaks as `\\n`, no spaces or tabs at a line's
    end, at most one blank line, the ends trimmed (the first line's indentation with the start). A line's
    indentation and the spaces within it stay: in answers they carry structure (code, tables). Identity
    (`normalize_text`) is stricter, so it does not change ids."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if not _NEEDS_REWRITE.search(text):
        return text
    text = _BLANK_LINES.sub("\n\n", _LINE_ENDS.sub("\n", _LINE_BREAKS.sub("\n", text)))
    return text.strip("\t\n\f\r ")  # RE2's `\\s`, the class the SQL spelling trims


def normalize_text(text: str) -> str:
    """Unicode NFC, whitespace runs collapsed to one space, ends stripped (used for identity)."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())  # str.split() splits on exactly the characters in WHITESPACE


def _quote(text: str) -> str:
    """A JSON string literal as DuckDB's `to_json` writes it (UTF-8 kept, control characters escaped)."""
    if _HEX_ESCAPED.search(text):
        return '"' + text.translate(_DUCKDB_ESCAPES) + '"'
    return _json_quote(text)


def _digest(payload_json: str) -> str:
    return hashlib.md5(payload_json.encode("utf-8"), usedforsecurity=False).hexdigest()


def _prompt_json(prompt: Sequence[dict], images: Sequence[str]) -> str:
    """`[[[role, normalized content], ...], [image hashes]]` as compact JSON."""
    turns = ",".join(f"[{_quote(m['role'])},{_quote(normalize_text(m['content']))}]" for m in prompt)
    return f"[[{turns}],[{','.join(map(_quote, images))}]]"


def compute_prompt_id(prompt: Sequence[dict], images: Sequence[str]) -> str:
    """Hash of the normalized prompt conversation and the image hashes (in order)."""
    return _digest(_prompt_json(prompt, images))


def compute_pair_id(prompt: Sequence[dict], images: Sequence[str], chosen: str, rejected: str) -> str:
    """Hash of the normalized prompt, image hashes, chosen and rejected: independent of the source."""
    return compute_ids(prompt, images, chosen, rejected)[0]


def compute_ids(prompt: Sequence[dict], images: Sequence[str], chosen: str, rejected: str) -> tuple[str, str]:
    """(pair_id, prompt_id), normalizing and encoding the prompt once: the pair's payload is the prompt's list
    with the normalized chosen and rejected answers appended."""
    prompt_json = _prompt_json(prompt, images)
    pair_json = f"{prompt_json[:-1]},{_quote(normalize_text(chosen))},{_quote(normalize_text(rejected))}]"
    return _digest(pair_json), _digest(prompt_json)


def _sql_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


# The same canonical text and identity in DuckDB (`install_text_macros`), so a columnar ingest writes the same
# rows; tests check both spellings agree. Each rewrites only texts its test matches; most texts match nothing.
# The tests run on the text before NFC: NFC maps whitespace to whitespace only (U+2000 -> U+2002, ...). RE2's
# `\s` is [\t\n\f\r ] (the trim's class); trim() would strip spaces only.
_WS = _sql_class(WHITESPACE)
_WS_NOT_SPACE = _sql_class(WHITESPACE.replace(" ", ""))
_NOT_WS = "[^" + _WS[1:]
TEXT_MACROS = f"""
-- Its test, `_NEEDS_REWRITE`, spelled with `contains` (memchr) where a regular expression scans every byte.
CREATE OR REPLACE MACRO canonical_text(s) AS
    CASE WHEN contains(s, chr(13)) OR (contains(s, chr(10)) AND (contains(s, ' ' || chr(10))
                                       OR contains(s, chr(9) || chr(10)) OR contains(s, chr(11) || chr(10))
                                       OR contains(s, chr(12) || chr(10)) OR contains(s, repeat(chr(10), 3))))
              OR left(s, 1) IN (' ', chr(9), chr(10), chr(12)) OR right(s, 1) IN (' ', chr(9), chr(10), chr(12))
         THEN regexp_replace(regexp_replace(regexp_replace(regexp_replace(nfc_normalize(s),
              '\\r\\n?', chr(10), 'g'), '[ \\t\\f\\v]+\\n', chr(10), 'g'), '\\n{{3,}}', chr(10) || chr(10), 'g'),
              '^\\s+|\\s+$', '', 'g')
         ELSE nfc_normalize(s) END;
CREATE OR REPLACE MACRO identity_text(s) AS
    CASE WHEN regexp_matches(s, '{_WS_NOT_SPACE}|  |^ | $')
         THEN trim(regexp_replace(nfc_normalize(s), '{_WS}*{_WS_NOT_SPACE}{_WS}*|  +', ' ', 'g'))
         ELSE nfc_normalize(s) END;
-- Identity of a text already in canonical form. An ASCII canonical text without tabs, vertical tabs, form feeds,
-- the separators U+001C-U+001F, two spaces in a row or a space after a line break (indentation) has no whitespace
-- but single spaces and runs of one or two newlines, none at the ends: collapsing those runs needs no search (a
-- regular expression scans about 1 ns a byte, `replace` and `length` far less).
CREATE OR REPLACE MACRO canonical_identity(c) AS
    CASE WHEN strlen(c) = length(c) AND NOT (contains(c, chr(9)) OR contains(c, chr(11)) OR contains(c, chr(12))
                                             OR contains(c, chr(28)) OR contains(c, chr(29)) OR contains(c, chr(30))
                                             OR contains(c, chr(31)) OR contains(c, '  ')
                                             OR contains(c, chr(10) || ' '))
         THEN CASE WHEN contains(c, chr(10)) THEN replace(replace(c, chr(10) || chr(10), ' '), chr(10), ' ') ELSE c END
         ELSE identity_text(c) END;
-- Whether two texts in canonical form have the same identity (`normalize_text`). Most differ in their first word,
-- which an anchored expression reads without scanning the rest (equal identities have equal first words).
CREATE OR REPLACE MACRO first_word(c) AS regexp_extract(c, '^{_WS}*({_NOT_WS}*)', 1);
CREATE OR REPLACE MACRO same_identity(a, b) AS
    CASE WHEN a = b THEN true
         WHEN first_word(a) <> first_word(b) THEN false
         ELSE canonical_identity(a) = canonical_identity(b) END;
CREATE OR REPLACE MACRO identity_quote(s) AS to_json(s::VARCHAR)::VARCHAR;
CREATE OR REPLACE MACRO identity_digest(payload) AS md5(payload);
-- The ids' payloads, over texts in canonical form (as stored; their identity is the native text's).
CREATE OR REPLACE MACRO prompt_json(prompt, images) AS
    '[[' || array_to_string(list_transform(prompt, lambda m:
        '[' || identity_quote(m.role) || ',' || identity_quote(canonical_identity(m.content)) || ']'), ',')
    || '],[' || array_to_string(list_transform(images, lambda h: identity_quote(h)), ',') || ']]';
CREATE OR REPLACE MACRO pair_json(prompt_json, chosen, rejected) AS
    left(prompt_json, -1) || ',' || identity_quote(canonical_identity(chosen)) || ','
    || identity_quote(canonical_identity(rejected)) || ']';
"""


def install_text_macros(con: Any) -> None:
    """Define `canonical_text`, `identity_text`, `canonical_identity`, `same_identity`, `prompt_json`, `pair_json`
    and `identity_digest` on a DuckDB connection."""
    con.execute(TEXT_MACROS)
