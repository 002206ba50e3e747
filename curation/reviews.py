"""Curators' reviews of a build's pairs: `DATA_ROOT/reviews/<build>.parquet`, append-only.

A review marks one pair `keep`, `drop` or `swap` (chosen and rejected exchanged) with a note, who and when. The
workbench appends reviews; builds stay read-only. A file is rewritten whole under a temporary name and renamed,
under a lock, so a reader never sees half a file and two writers never lose each other's reviews. The latest
review of a pair is the one that counts (`latest`); the `human_review` op applies them in the next build.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.io import atomic_file, open_lock

ACTIONS = ("keep", "drop", "swap")
REVIEWS = "reviews"  # the folder of a data root that holds every build's reviews file
REVIEW_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("note", pa.string(), nullable=False),
        pa.field("reviewer", pa.string(), nullable=False),
        pa.field("reviewed_at", pa.string(), nullable=False),  # UTC, ISO 8601
        pa.field("build", pa.string(), nullable=False),  # the build the pair was reviewed in
        pa.field("queue", pa.string(), nullable=False),  # where the curator found it ("pairs", "rm_margin", ...)
    ],
    metadata={"schema": "review", "schema_version": "1"},
)


@dataclass(frozen=True)
class Review:
    pair_id: str
    source: str
    source_row: str
    action: str
    note: str
    reviewer: str
    build: str
    queue: str = "pairs"
    reviewed_at: str = ""  # set when appended

    def check(self) -> None:
        if self.action not in ACTIONS:
            raise InputError(f"review action {self.action!r}: use one of {', '.join(ACTIONS)}")
        if not self.reviewer.strip():
            raise InputError("a review needs a reviewer name")
        if not self.pair_id:
            raise InputError("a review needs the pair id it is about")


def reviews_path(root: Path, build: str) -> Path:
    """Where the reviews of `build` (a build folder's name under the data root) are kept."""
    if not build or "/" in build or "\x00" in build or build in {".", ".."} or len(build) > 200:
        raise InputError(f"{build!r} is not a build name")
    return root / REVIEWS / f"{build}.parquet"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock(path.with_name(path.name + ".lock"), what="the reviews' lock")
    with os.fdopen(fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_review(path: Path, review: Review) -> Review:
    """Append one review (stamped with the current UTC time) to the file at `path`, a plain file (a link is
    refused: it could lead into a build or out of the data root); returns it as written."""
    review.check()
    stamped = Review(**{**asdict(review), "reviewed_at": datetime.now(UTC).isoformat(timespec="seconds")})
    with _locked(path):
        if path.is_symlink():
            raise InputError(f"{path}: a link; reviews are written to a plain file only")
        rows = read_reviews(path).to_pylist() if path.exists() else []
        table = pa.Table.from_pylist([*rows, asdict(stamped)], schema=REVIEW_SCHEMA)
        with atomic_file(path) as file:
            pq.write_table(table, file, compression="zstd")
    return stamped


def review_time(text: str) -> datetime:
    """A review's `reviewed_at` as a UTC time (ISO 8601 with its offset; `read_reviews` refuses others)."""
    return datetime.fromisoformat(text).astimezone(UTC)


def read_reviews(path: Path) -> pa.Table:
    """Every review in the file, in the order written."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a reviews file ({exc})") from None
    missing = [name for name in REVIEW_SCHEMA.names if name not in table.column_names]
    if missing:
        raise InputError(f"{path}: not a reviews file (no column {', '.join(missing)})")
    table = table.select(REVIEW_SCHEMA.names)
    wrong = [f.name for f in REVIEW_SCHEMA if table.schema.field(f.name).type != f.type]
    if wrong:  # a file written by something else: no silent conversion of ids or actions
        raise InputError(f"{path}: not a reviews file (column {', '.join(wrong)} is not text)")
    try:
        table = table.cast(REVIEW_SCHEMA)
    except (pa.ArrowException, ValueError) as exc:
        raise InputError(f"{path}: not a reviews file ({exc})") from None
    for row, (pair_id, action) in enumerate(
        zip(table["pair_id"].to_pylist(), table["action"].to_pylist(), strict=True)
    ):
        if action not in ACTIONS or not pair_id:
            raise InputError(
                f"{path}: review {row} has action {action!r} and pair id {pair_id!r}; an action is one of "
                f"{', '.join(ACTIONS)} and a pair id is not empty"
            )
    for row, text in enumerate(table["reviewed_at"].to_pylist()):  # across files, the newest review wins
        try:
            if datetime.fromisoformat(text).tzinfo is None:
                raise ValueError("no offset from UTC")
            review_time(text)
        except (ValueError, OverflowError) as exc:
            raise InputError(f"{path}: review {row} has reviewed_at {text!r}, not an ISO 8601 time with its "
                             f"offset ({exc})") from None  # fmt: skip
    return table


def latest(table: pa.Table) -> list[dict[str, str]]:
    """The latest review of each pair in one reviews file (later rows win: the file is appended to under its
    lock, so its order is the order written, whatever the clocks said), in pair_id order."""
    by_pair = {row["pair_id"]: row for row in table.to_pylist()}
    return [by_pair[k] for k in sorted(by_pair)]


def newest(tables: list[pa.Table]) -> list[dict[str, str]]:
    """The review of each pair that applies across several reviews files: each file's latest (`latest`), then
    the newest of those by `reviewed_at`, a later file winning a tie; in pair_id order."""
    chosen: dict[str, dict[str, str]] = {}
    for table in tables:
        for row in latest(table):
            held = chosen.get(row["pair_id"])
            if held is None or review_time(row["reviewed_at"]) >= review_time(held["reviewed_at"]):
                chosen[row["pair_id"]] = row
    return [chosen[k] for k in sorted(chosen)]


def list_review_files(root: Path) -> list[Path]:
    folder = root / REVIEWS
    return sorted(p for p in folder.glob("*.parquet") if p.is_file()) if folder.is_dir() else []


def export_reviews(table: pa.Table, path: Path) -> None:
    """Write reviews as parquet, jsonl or csv (by the file's suffix), under a temporary name, then renamed."""
    import json

    import pyarrow.csv as pa_csv

    writers = {".parquet", ".jsonl", ".csv"}
    if path.suffix not in writers:
        raise InputError(f"{path}: export to a .parquet, .jsonl or .csv file")
    with atomic_file(path) as file:
        if path.suffix == ".parquet":
            pq.write_table(table, file, compression="zstd")
        elif path.suffix == ".csv":
            pa_csv.write_csv(table, file)
        else:
            file.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()).encode())
