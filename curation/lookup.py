"""Look pairs up in a finished build: one pair by a prefix of its id or by its source row, with its fate, images
and signals (found by the keys each signal table declares); pairs by the text of their prompt or answers."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from curation.build_dir import REJECTS, REMOVED_PAIRS, BuildDir
from curation.errors import InputError
from curation.io import row_group_ends
from curation.ops import OPS
from curation.perceptual import as_unsigned
from curation.shards import id_before_swap
from curation.sql import parquet_relation
from curation.words import quantity, visible

# Signal tables that no op writes: `trainer score`'s rewards.
OTHER_KEYS = {"rm_scores": {"pair_id": "pair"}}


def signal_keys(name: str) -> dict[str, str]:
    """The key columns of a signal table by its name (`<op>-v<version>-<hash>`, `rm_scores-<model>`)."""
    prefix = name.split("-v")[0] if name.split("-v")[0] in OPS else name.split("-")[0]
    return OPS[prefix].signal_keys if prefix in OPS else OTHER_KEYS.get(prefix, {})


def pair_signals(
    db: duckdb.DuckDBPyConnection,
    files: Mapping[str, Path],
    pair_id: str,
    prompt_id: str | None,
    images: Sequence[str] = (),
) -> dict[str, list[dict[str, Any]]]:
    """Rows of every signal table (`files`: name -> path, as `BuildDir.signals` lists them) keyed by the pair, its
    prompt or one of its images."""
    values = {"pair": [pair_id], "prompt": [prompt_id] if prompt_id else [], "image": list(images)}
    out = {}
    for name, path in files.items():
        keys = [(column, values[kind]) for column, kind in signal_keys(name).items() if values[kind]]
        if not keys:
            continue
        source = parquet_relation(db, path)
        where = " OR ".join(f"{column} IN ({', '.join('?' * len(wanted))})" for column, wanted in keys)
        cursor = db.execute(f"SELECT * FROM {source} WHERE {where}", [v for _, wanted in keys for v in wanted])
        names = [c[0] for c in cursor.description]
        found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in found:  # a perceptual hash is 64 bits stored as a signed integer: shown as its hex digits
            if isinstance(row.get("phash"), int):
                row["phash"] = f"{as_unsigned(row['phash']):016x}"
        if found:
            out[name] = found
    return out


# -- one pair by id prefix or source row; pairs by text ----------------------------------------------------------
MIN_PREFIX = 6  # the fewest hex characters of a pair id that `curate show` takes (more where they are ambiguous)
CANDIDATES = 10  # ambiguous ids listed in the error
KEY_COLUMNS = ["pair_id", "source", "source_row"]
TEXT_COLUMNS = [*KEY_COLUMNS, "prompt", "chosen", "rejected"]
FOUND_SCHEMA = pa.schema([*((c, pa.string()) for c in KEY_COLUMNS), ("kept", pa.bool_())])
SNIPPET_CONTEXT = 40  # characters shown either side of a match


@dataclass
class Occurrence:
    """One row of a source that gave the pair, and its fate: in the shards (`copies` > 0, upsampled copies
    counted), or removed at `stage` for `reason`."""

    source: str
    source_row: str
    copies: int = 0
    stage: str | None = None
    reason: str | None = None
    detail: str | None = None
    swapped_from: str | None = None  # a kept pair whose chosen and rejected the build swapped: its id before

    @property
    def kept(self) -> bool:
        return self.copies > 0

    def fate(self) -> str:
        if self.kept:
            swap = f", chosen and rejected swapped in this build (pair id before: {self.swapped_from})"
            return f"in shards ({quantity(self.copies, 'copy', 'copies')})" + (swap if self.swapped_from else "")
        if self.stage is None:  # the rejects table that says where and why is damaged, missing or lacks the row
            return "removed (where and why not recorded in the build's readable rejects table)"
        return f"removed at {self.stage}: {self.reason}"


@dataclass
class PairRecord:
    """A pair as `curate show` prints it: its row (its kept copy's where it has one, else the removed pair's),
    every source row that gave it, its images and its signals."""

    pair: dict[str, Any]
    occurrences: list[Occurrence]
    images: list[dict[str, Any]]
    signals: dict[str, list[dict[str, Any]]]


@dataclass
class Match:
    """A row whose prompt or answer holds the text `curate find` looked for; `snippet[start:end]` is the match."""

    occurrence: Occurrence
    pair_id: str
    field: str
    snippet: str
    start: int
    end: int


def resolve(build: BuildDir, key: str) -> str:
    """The pair id that `key` names: a unique prefix (at least `MIN_PREFIX` hex characters) of a pair id, or a source
    row that gave one pair (`uf.jsonl:12`, as `source_row` spells it); `InputError` otherwise."""
    if ":" in key:
        wanted, what = pc.field("source_row") == key, f"source row {key!r}"
    else:
        prefix = key.lower()
        if not MIN_PREFIX <= len(prefix) <= 32 or prefix.strip("0123456789abcdef"):
            raise InputError(
                f"{key!r} is neither a pair id (or a prefix of at least {MIN_PREFIX} hex characters) nor a source row "
                "such as uf.jsonl:12"
            )
        wanted, what = pc.starts_with(pc.field("pair_id"), prefix), f"pair id {prefix}"
    found = [build.pairs(KEY_COLUMNS).filter(wanted)]
    removed = build.optional(REMOVED_PAIRS)
    if removed is not None:
        found.append(pq.read_table(removed, columns=KEY_COLUMNS, filters=wanted))
    candidates: dict[str, tuple[str, str]] = {}
    for row in pa.concat_tables(found).to_pylist():
        candidates.setdefault(row["pair_id"], (row["source"], row["source_row"]))
    if len(candidates) == 1:
        return next(iter(candidates))
    if candidates:
        listed = "; ".join(f"{p} ({s} {r})" for p, (s, r) in list(candidates.items())[:CANDIDATES])
        more = f"; and {len(candidates) - CANDIDATES} more" if len(candidates) > CANDIDATES else ""
        hint = "give more characters" if ":" not in key else "give one of their ids"
        raise InputError(f"{what} is ambiguous, {len(candidates)} pairs match ({hint}): {listed}{more}")
    if ":" not in key and (swapped := _swapped_from(build, prefix)):  # its id before a swap (review or rm_margin)
        if len(swapped) == 1:
            return swapped[0]
        listed = "; ".join(swapped[:CANDIDATES]) + (
            f"; and {len(swapped) - CANDIDATES} more" if len(swapped) > CANDIDATES else ""
        )
        raise InputError(
            f"{what} is ambiguous, {len(swapped)} swapped pairs had ids with it (give more characters): {listed}"
        )
    rejects = build.optional(REJECTS)
    rejected = pq.read_table(rejects, filters=wanted).to_pylist() if ":" in key and rejects is not None else []
    if rejected:  # a row rejected at ingest gave no pair: say why
        row = rejected[0]
        raise InputError(
            f"{what} ({row['source']}) gave no pair: rejected at {row['stage']}: {row['reason']} ({row['detail']})"
        )
    raise InputError(f"no pair with {what} in {build.path}")


def _swapped_from(build: BuildDir, prefix: str) -> list[str]:
    """The ids of the kept pairs a swap (`human_review` or `rm_margin`) changed whose id before it starts with
    `prefix`."""
    table = build.pairs(["pair_id", "meta"])
    table = table.filter(pc.match_substring(table["meta"], "pair_id_before"))
    found = {row["pair_id"] for row in table.to_pylist() if (id_before_swap(row["meta"]) or "").startswith(prefix)}
    return sorted(found)


def pair_record(build: BuildDir, db: duckdb.DuckDBPyConnection, pair_id: str) -> PairRecord:
    """Everything a build holds about the pair `pair_id` (which must be in it: see `resolve`)."""
    kept = build.pairs().filter(pc.field("pair_id") == pair_id).to_pylist()
    occurrences: dict[tuple[str, str], Occurrence] = {}
    for row in kept:
        key = (row["source"], row["source_row"])
        occurrences.setdefault(key, Occurrence(*key)).copies += 1
    rejects = build.optional(REJECTS)
    if rejects is not None:
        for row in pq.read_table(rejects, filters=pc.field("pair_id") == pair_id).to_pylist():
            occurrences[(row["source"], row["source_row"])] = Occurrence(
                row["source"], row["source_row"], stage=row["stage"], reason=row["reason"], detail=row["detail"]
            )
    pair = kept[0] if kept else _removed_pair(build, pair_id)
    if pair is None:
        raise InputError(f"no pair {pair_id} in {build.path}")
    before = id_before_swap(pair.get("meta"))
    for occurrence in occurrences.values():
        occurrence.swapped_from = before if occurrence.kept else None
    table = build.images()
    images = []
    for sha256 in pair["images"]:
        image = {"sha256": sha256, "bytes": None, "width": None, "height": None, "format": None}
        data = table.get(sha256)
        if data is not None:  # None where the build does not keep it (see the layout in `curation.build_dir`)
            with Image.open(io.BytesIO(data)) as opened:
                image.update(bytes=len(data), width=opened.width, height=opened.height, format=opened.format)
        images.append(image)
    files = build.signals()
    signals = pair_signals(db, files, pair_id, pair["prompt_id"], pair["images"])
    if before:  # a pair whose labels a review swapped: the per-pair signals know it by its old id
        for stem, rows in pair_signals(db, files, before, pair["prompt_id"], []).items():
            signals.setdefault(stem, rows)
    return PairRecord(pair, list(occurrences.values()), images, signals)


def _removed_pair(build: BuildDir, pair_id: str) -> dict[str, Any] | None:
    """The removed pair `pair_id`, reading its ids first and then only the row group that holds it."""
    path = build.optional(REMOVED_PAIRS)
    if path is None:
        return None
    file = pq.ParquetFile(path)
    ids = file.read(columns=["pair_id"]).column("pair_id")
    rows = pc.indices_nonzero(pc.equal(ids, pair_id))
    if not len(rows):
        return None
    row = rows[0].as_py()
    ends = row_group_ends(file.metadata)
    group = int(np.searchsorted(ends, row, side="right"))
    start = int(ends[group - 1]) if group else 0
    return file.read_row_group(group).slice(row - start, 1).to_pylist()[0]


class Found(NamedTuple):
    matches: int  # (pair, source row, kept or removed) occurrences holding the text (upsampled copies count once)
    rows: int  # distinct source rows among them (a ranked row gives several pairs)
    pairs: int  # distinct pairs among them (a pair may come from several rows)
    shown: list[Match]  # the first `limit` matches, kept ones first


def find_pairs(build: BuildDir, text: str, source: str | None = None, limit: int = 20) -> Found:
    """Rows whose prompt or answer holds `text` (case-insensitive), in the shards and among the removed pairs. The
    texts are searched in Arrow, a batch at a time, so memory does not grow with the build; only shown rows reach
    Python. The text is searched in NFC, as the build stores texts (a decomposed `Café` finds the stored one)."""
    text = unicodedata.normalize("NFC", text)
    pattern = re.compile(re.escape(text), re.IGNORECASE)
    keys: list[pa.RecordBatch] = []
    shown: dict[tuple[str, str, str, bool], Match] = {}
    for kept, batch in _text_batches(build):
        holds = _holds(batch, text, source)
        hits = batch.select(KEY_COLUMNS).filter(holds)  # the texts are read only for the rows shown
        keys.append(pa.RecordBatch.from_arrays([*hits.columns, pa.repeat(kept, hits.num_rows)], schema=FOUND_SCHEMA))
        for i in pc.indices_nonzero(holds).to_numpy():
            if len(shown) >= limit:
                break
            row = batch.slice(i, 1).to_pylist()[0]
            key = (row["pair_id"], row["source"], row["source_row"], kept)
            if key not in shown:
                shown[key] = _match(row, kept, pattern)
    found = pa.Table.from_batches(keys, FOUND_SCHEMA).group_by([*KEY_COLUMNS, "kept"]).aggregate([([], "count_all")])
    shown_ids = pa.array([key[0] for key in shown], pa.string())
    for row in found.filter(pc.is_in(found["pair_id"], shown_ids)).to_pylist():
        key = (row["pair_id"], row["source"], row["source_row"], row["kept"])
        if key in shown and row["kept"]:
            shown[key].occurrence.copies = row["count_all"]
    _add_swaps(build, [m for m in shown.values() if m.occurrence.kept])
    _add_fates(build, [m for m in shown.values() if not m.occurrence.kept])
    rows = found.group_by(["source", "source_row"]).aggregate([]).num_rows
    return Found(found.num_rows, rows, pc.count_distinct(found["pair_id"]).as_py(), list(shown.values()))


def _text_batches(build: BuildDir) -> Iterator[tuple[bool, pa.RecordBatch]]:
    """(kept, batch) over the searched columns: the shards' (memory-mapped), then the removed pairs'."""
    for batch in build.pairs(TEXT_COLUMNS).to_batches():
        yield True, batch
    removed = build.optional(REMOVED_PAIRS)
    if removed is not None:
        for batch in pq.ParquetFile(removed).iter_batches(columns=TEXT_COLUMNS):
            yield False, batch


def _holds(batch: pa.RecordBatch, text: str, source: str | None) -> pa.Array:
    """The rows of `batch` (of `source`, when given) whose prompt turns or answers hold `text`, ignoring case."""
    found = pc.or_(
        pc.match_substring(batch["chosen"], text, ignore_case=True),
        pc.match_substring(batch["rejected"], text, ignore_case=True),
    )
    turns = pc.match_substring(pc.struct_field(pc.list_flatten(batch["prompt"]), "content"), text, ignore_case=True)
    in_prompt = np.zeros(batch.num_rows, np.bool_)
    in_prompt[pc.filter(pc.list_parent_indices(batch["prompt"]), turns).to_numpy()] = True
    found = pc.or_(found, pa.array(in_prompt))
    return found if source is None else pc.and_(found, pc.equal(batch["source"], source))


def _match(row: dict[str, Any], kept: bool, pattern: re.Pattern[str]) -> Match:
    fields = [("prompt", m["content"] or "") for m in row["prompt"]]
    fields += [("chosen", row["chosen"]), ("rejected", row["rejected"])]
    # Arrow and Python fold case alike for nearly every text; where they differ, the chosen answer's start is shown.
    first_found = ((f, t, m) for f, t in fields if (m := pattern.search(t)))
    field, text, found = next(first_found, ("chosen", row["chosen"], None))
    at, end = (found.start(), found.end()) if found else (0, 0)
    first, last = max(at - SNIPPET_CONTEXT, 0), min(end + SNIPPET_CONTEXT, len(text))
    before = ("…" if first else "") + visible(text[first:at]).replace("\n", " ")
    matched = visible(text[at:end]).replace("\n", " ")
    after = visible(text[end:last]).replace("\n", " ") + ("…" if last < len(text) else "")
    occurrence = Occurrence(row["source"], row["source_row"], copies=int(kept))
    return Match(occurrence, row["pair_id"], field, before + matched + after, len(before), len(before) + len(matched))


def _add_swaps(build: BuildDir, kept: list[Match]) -> None:
    """Each kept row's id before a swap, where the build swapped its chosen and rejected."""
    if not kept:
        return
    table = build.pairs(["pair_id", "meta"])
    table = table.filter(pc.is_in(table["pair_id"], pa.array(sorted({m.pair_id for m in kept}), pa.string())))
    before = {row["pair_id"]: id_before_swap(row["meta"]) for row in table.to_pylist()}
    for match in kept:
        match.occurrence.swapped_from = before.get(match.pair_id)


def _add_fates(build: BuildDir, removed: list[Match]) -> None:
    """Each removed row's stage, reason and detail, from the rejects."""
    path = build.optional(REJECTS)
    if not removed or path is None:
        return
    ids = pa.array(sorted({m.pair_id for m in removed}), pa.string())
    rejects = pq.read_table(path, filters=pc.field("pair_id").isin(ids))
    fates = {(r["pair_id"], r["source"], r["source_row"]): r for r in rejects.to_pylist()}
    for match in removed:
        reject = fates.get((match.pair_id, match.occurrence.source, match.occurrence.source_row))
        if reject is not None:
            match.occurrence.stage, match.occurrence.reason = reject["stage"], reject["reason"]
            match.occurrence.detail = reject["detail"]
