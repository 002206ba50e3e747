"""Conversions that many adapters share: typed field access, chat messages, LLaVA turns, binarization."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import pyarrow as pa

from curation.errors import RowError
from curation.pair import MARGIN_SLACK
from curation.readers import SUPPORTED_SUFFIXES, json_value, printable
from curation.schema import IMAGE_TOKEN
from curation.sql import quote_identifier, sql_literal

_MISSING = object()
Policy = Literal["max_gap", "best_vs_random", "all_pairs"]
LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def field(row: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, *, optional: bool = False) -> Any:
    """`row[name]` checked against `kind`; missing or mistyped fields raise `RowError` naming the field."""
    value = row.get(name, _MISSING)
    if value is _MISSING or value is None:
        if optional:
            return None
        raise RowError("missing field", f"'{name}'" + (" is null" if value is None else ""))
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RowError("wrong type", f"'{name}': expected {expected}, got {type(value).__name__}")
    return value


def text_field(row: dict[str, Any], name: str) -> str:
    return field(row, name, str)


def parse_score(value: Any, name: str) -> float:
    """A rating that may be stored as a string ("4", " 3.5 "); `RowError` when it is not a finite number."""
    if isinstance(value, bool):
        raise RowError("unparsable score", f"'{name}': {value!r}")
    try:
        score = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of hundreds of digits
        raise RowError("unparsable score", f"'{name}': {value!r}") from None
    if not math.isfinite(score):
        raise RowError("unparsable score", f"'{name}': {value!r}")
    return score


def maybe_score(value: Any, name: str) -> float | None:
    """Like `parse_score`, but unparsable values ("N/A", "") give None for callers that tolerate them."""
    try:
        return parse_score(value, name)
    except RowError:
        return None


def score_sql(expr: str, dtype: Any) -> str | None:
    """`maybe_score` in DuckDB: SQL giving a finite number or NULL for the column `expr` of Arrow type `dtype`
    (`dtype` None when the row has no such column). Returns None for types parsed in Python only (strings,
    booleans)."""
    if dtype is None or pa.types.is_null(dtype):
        return "NULL::DOUBLE"
    if not (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)):
        return None
    return f"CASE WHEN isfinite(CAST({expr} AS DOUBLE)) THEN CAST({expr} AS DOUBLE) END"


def load_json_field(row: dict[str, Any], name: str) -> Any:
    """A JSON document serialized inside a string column (RLHF-V `text`, R1-Reward `message`)."""
    raw = row.get(name)
    if isinstance(raw, (dict, list)):
        return raw
    raw = field(row, name, str)
    try:
        value, twice = json_value(raw)
    except json.JSONDecodeError as exc:
        raise RowError("malformed json field", f"'{name}': {exc.msg} at column {exc.colno}") from None
    if twice is not None:  # which of the two values is meant cannot be known
        raise RowError("malformed json field", f"'{name}': key '{printable(twice)}' given twice in an object")
    return value


def parsed_json_or_text(value: Any) -> Any:
    """A JSON document serialized in a string column, parsed when it parses; anything else unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


@dataclass(frozen=True)
class JsonObjectSql:
    """SQL over a string column holding a flat JSON object of strings (RLAIF-V's `origin_split`): `exact` holds
    where `spelled` is `json.dumps(parsed_json_or_text(value), ensure_ascii=False, sort_keys=True)` and `key(k)`
    is the parsed object's string at key `k` (NULL where absent); NULL values are exact (spelled `null`)."""

    exact: str
    spelled: str
    column: str

    def key(self, name: str) -> str:
        return f"json_extract_string(TRY_CAST({self.column} AS JSON), {sql_literal('$.' + name)})"


def json_object_sql(column: str) -> JsonObjectSql:
    # No backslash: no escapes, so each key and value is spelled as written. DuckDB's JSON reader accepts
    # trailing commas, which Python's rejects; a map cast fails (NULL) on duplicate keys, which Python allows.
    parsed = f"TRY_CAST(TRY_CAST({column} AS JSON) AS MAP(VARCHAR, JSON))"
    is_string = "lambda v: coalesce(json_type(v) = 'VARCHAR', false)"
    strings = f"coalesce(list_bool_and(list_transform(map_values({parsed}), {is_string})), true)"
    exact = (
        f"({column} IS NULL OR (NOT contains({column}, '\\') AND NOT regexp_matches({column}, ',\\s*[\\]}}]') "
        f"AND json_type(TRY_CAST({column} AS JSON)) = 'OBJECT' AND {parsed} IS NOT NULL AND {strings}))"
    )
    entries = f"list_transform(list_sort(map_entries({parsed})), lambda e: '\"' || e.key || '\": ' || e.value::VARCHAR)"
    spelled = f"CASE WHEN {column} IS NULL THEN 'null' ELSE '{{' || array_to_string({entries}, ', ') || '}}' END"
    return JsonObjectSql(exact, spelled, column)


def content_text(content: Any, name: str) -> str:
    """Message content as text: a string, or OpenAI-style parts with images replaced by the placeholder."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict):
                raise RowError("wrong type", f"'{name}': content part is {type(part).__name__}")
            if part.get("type") == "text":
                parts.append(str(part.get("text") or ""))
            elif part.get("type") in ("image", "image_url"):
                parts.append(IMAGE_TOKEN)
            else:
                raise RowError("wrong type", f"'{name}': unknown content part type {part.get('type')!r}")
        return "\n".join(parts)
    raise RowError("wrong type", f"'{name}': message content is {type(content).__name__}")


def messages(value: Any, name: str) -> list[dict[str, str]]:
    """A chat message list `[{role, content}]` (also LLaVA `{from, value}`), roles normalized."""
    if not isinstance(value, list):
        raise RowError("missing field" if value is None else "wrong type", f"'{name}': expected a message list")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowError("wrong type", f"'{name}[{i}]': expected an object")
        role = message.get("role", message.get("from"))
        content = message.get("content", message.get("value"))
        if not isinstance(role, str) or role not in LLAVA_ROLES:  # a list or dict role is not hashable
            raise RowError("unknown role", f"'{name}[{i}]': {role!r}")
        out.append({"role": LLAVA_ROLES[role], "content": content_text(content, f"{name}[{i}]")})
    return out


def final_answer(conversation: list[dict[str, str]], name: str) -> tuple[list[dict[str, str]], str]:
    """Split a conversation into (turns before the final answer, final assistant answer)."""
    if not conversation or conversation[-1]["role"] != "assistant":
        raise RowError("no final answer", f"'{name}': the conversation does not end with an assistant turn")
    return conversation[:-1], conversation[-1]["content"]


def split_shared_prompt(
    chosen: list[dict[str, str]], rejected: list[dict[str, str]]
) -> tuple[list[dict[str, str]], str, str]:
    """Two message lists that repeat the prompt: (shared prompt, chosen answer, rejected answer)."""
    prompt_c, answer_c = final_answer(chosen, "chosen")
    prompt_r, answer_r = final_answer(rejected, "rejected")
    if prompt_c != prompt_r:
        raise RowError("prompt differs between sides", "chosen and rejected do not share the turns before the answer")
    return prompt_c, answer_c, answer_r


@dataclass(frozen=True)
class MessagePairSql:
    """`split_shared_prompt(messages(chosen), messages(rejected))` as DuckDB expressions (see `message_pair_sql`)."""

    clean: str  # the rows Python would split without a reject, with a prompt `Pair.check` accepts for text
    prompt: str
    chosen: str
    rejected: str


def message_pair_sql(schema: pa.Schema, chosen: str = "chosen", rejected: str = "rejected") -> MessagePairSql | None:
    """The shared-prompt split of two message-list columns in DuckDB, for lists of `{role, content}` strings;
    None for other layouts (LLaVA `{from, value}` turns, content parts), which stay row by row. The clean rows:
    both lists present with every turn present, a known role and string content, each ending with an assistant
    turn after the same earlier turns (roles mapped as `messages` maps them), which end with a user turn and
    hold no image placeholder (a text pair has no image)."""
    for name in (chosen, rejected):
        kind = schema.field(name).type if name in schema.names else None
        if kind is None or not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            return None
        turn = kind.value_type
        if not pa.types.is_struct(turn) or sorted(f.name for f in turn) != ["content", "role"]:
            return None
        if not all(pa.types.is_string(f.type) for f in turn):
            return None
    roles = ", ".join(f"'{r}'" for r in LLAVA_ROLES)
    mapped = "CASE __t.role " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in LLAVA_ROLES.items()) + " END"

    def turns_ok(column: str) -> str:
        # coalesce: a NULL role makes `IN` NULL, which list_bool_and would skip
        present = f"__t IS NOT NULL AND __t.role IN ({roles}) AND __t.content IS NOT NULL"
        return f"list_bool_and(list_transform({column}, lambda __t: coalesce({present}, false)))"

    def prompt_of(column: str) -> str:
        return (
            f"list_transform({column}[1:len({column}) - 1], lambda __t: {{'role': {mapped}, 'content': __t.content}})"
        )

    c, r = quote_identifier(chosen), quote_identifier(rejected)
    final = "IN ('gpt', 'assistant')"
    clean = (
        f"len({c}) > 1 AND len({r}) > 1 AND {turns_ok(c)} AND {turns_ok(r)} AND {c}[-1].role {final} "
        f"AND {r}[-1].role {final} AND {prompt_of(c)} = {prompt_of(r)} AND {c}[-2].role IN ('human', 'user') "
        f"AND NOT list_bool_or(list_transform({c}[1:len({c}) - 1], lambda __t: contains(__t.content, '{IMAGE_TOKEN}')))"
    )
    return MessagePairSql(clean, prompt_of(c), f"{c}[-1].content", f"{r}[-1].content")


def answer_text(row: dict[str, Any], name: str) -> str:
    """An answer given as one assistant turn (`{from: gpt, value}` or `{role, content}`) or as a plain string."""
    value = row.get(name)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        turn = messages([value], name)[0]
        if turn["role"] != "assistant":
            raise RowError("unknown role", f"'{name}': expected an assistant turn, got {turn['role']!r}")
        return turn["content"]
    raise RowError("missing field" if value is None else "wrong type", f"'{name}': expected a string or one turn")


def user_prompt(text: str, system: str | None = None) -> list[dict[str, str]]:
    prompt = [{"role": "system", "content": system}] if system else []
    return [*prompt, {"role": "user", "content": text}]


def with_image_tokens(prompt: list[dict[str, str]], n_images: int) -> list[dict[str, str]]:
    """Make the prompt hold exactly one placeholder per image: add them to the first user turn when absent."""
    present = sum(m["content"].count(IMAGE_TOKEN) for m in prompt)
    if present == n_images:
        return prompt
    if present == 0:
        for i, message in enumerate(prompt):
            if message["role"] == "user":
                tokens = "\n".join([IMAGE_TOKEN] * n_images)
                return [*prompt[:i], {**message, "content": f"{tokens}\n{message['content']}"}, *prompt[i + 1 :]]
        raise RowError("no user turn", "the prompt has no user turn to hold the image")
    raise RowError("image placeholders mismatch", f"{present} placeholders for {n_images} images")


def check_min_margin(value: float) -> None:
    """`min_margin` is a score gap: a negative one would be read as 0 (every gap reaches it)."""
    if value < 0:
        raise ValueError(f"option min_margin={value:g}: expected 0 or more (a score gap)")


def binarize(
    scores: Sequence[float | None], policy: Policy, *, min_margin: float = 0.0, seed_text: str = ""
) -> list[tuple[int, int, bool]]:
    """Pairs (chosen index, rejected index, tie) from scored responses under a declared policy.

    Responses whose score is None (unparsable) take no part. Ties are returned with `tie=True` (a later
    stage decides); with `min_margin > 0`, non-tied pairs whose gap is below it are not formed.
    `best_vs_random` draws the rejected response from a hash of `seed_text`, never from process state.
    """
    scored = [(i, s) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return []
    if policy == "all_pairs":
        candidates = []
        for (i, si), (j, sj) in itertools.combinations(scored, 2):
            candidates.append((i, j, True) if si == sj else ((i, j, False) if si > sj else (j, i, False)))
    elif policy == "max_gap":
        best = max(scored, key=lambda x: (x[1], -x[0]))  # first-listed among equals
        worst = min(scored, key=lambda x: (x[1], x[0]))  # first-listed among equals
        if best[0] == worst[0]:
            worst = next(x for x in scored if x[0] != best[0])
        candidates = [(best[0], worst[0], best[1] == worst[1])]
    elif policy == "best_vs_random":
        best = max(scored, key=lambda x: (x[1], -x[0]))
        others = [x for x in scored if x[0] != best[0]]
        pick = int(hashlib.blake2b(seed_text.encode("utf-8"), digest_size=8).hexdigest(), 16) % len(others)
        other = others[pick]
        candidates = [(best[0], other[0], best[1] == other[1])]
    else:
        raise ValueError(f"unknown binarization policy {policy!r}")
    score = dict(scored)
    return [(c, r, tie) for c, r, tie in candidates if tie or score[c] - score[r] >= min_margin - MARGIN_SLACK]


def ref_file(ref: str) -> str:
    """The file (or Hub split) a row's ref `file:line` names."""
    return ref.rpartition(":")[0]


def file_stem(file_ref: str) -> str:
    """A file's name without the reader's suffix ("chart/chart.jsonl" -> "chart")."""
    name = PurePosixPath(file_ref).name
    return next((name[: -len(s)] for s in SUPPORTED_SUFFIXES if name.endswith(s)), name)
