"""The canonical preference-pair schema, the image table and the rejects table.

One row of `PAIR_SCHEMA` is one preference pair. Identity is content-derived: `pair_id` hashes the
normalized prompt, the image hashes and both answers, so the same pair from two sources collides.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from json.encoder import encode_basestring as _quote  # json.dumps' escaping, ensure_ascii=False

import pyarrow as pa

SCHEMA_VERSION = 1

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


def normalize_text(text: str) -> str:
    """Unicode NFC, whitespace runs collapsed to one space, ends stripped (used for identity)."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())  # str.split() splits on exactly the characters that `\s` matches


def _digest(payload_json: str) -> str:
    return hashlib.blake2b(payload_json.encode("utf-8"), digest_size=16).hexdigest()


def _prompt_json(prompt: Sequence[dict], images: Sequence[str]) -> str:
    """`json.dumps([[[role, normalized content], ...], [image hashes]], ensure_ascii=False, separators=(",", ":"))`,
    spelled out with the encoder's own string escaping: the same bytes, without building a JSON encoder per call."""
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
