"""The adapter contract: native rows in, canonical `Pair`s out, or a `RowError` that becomes a reject.

An adapter module defines one `Adapter` subclass with a `SourceInfo`, an optional `Options` dataclass
(adapter options from the CLI's `-o key=value` or a recipe), the native fields it maps into canonical
columns (everything else is kept in `meta`), and `convert`. Reading is shared (`curation.readers`);
an adapter overrides `records` only when its native layout is more than a table of rows.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa

from curation import readers
from curation.errors import InputError, RowError
from curation.images import DEFAULT_MAX_PIXELS, ImageRow, ImagesRoot, decode_image
from curation.pair import Pair
from curation.readers import Record, files_note, iter_location, printable, source_files


@dataclass(frozen=True)
class SourceInfo:
    key: str
    name: str
    kind: Literal["train", "benchmark"]
    modality: str  # what the source holds: text, image, video, or a mix such as "image+text"
    hub_id: str | None
    license: str
    description: str
    default_split: str = "train"  # the Hub split read when none is given
    # The repository's file read when no config is given, where the default config holds other data
    # (MM-RLHF's `dpo_pairs.jsonl` beside a parquet `data/` folder); a local snapshot is read the same way.
    hub_file: str | None = None


@dataclass(frozen=True)
class SqlLayout:
    """A flat native layout's conversion as DuckDB expressions over the native columns, one pair per row
    (run by `curation.columnar`).

    `clean` holds for the rows that `convert` turns into exactly this pair without a reject; the others are
    converted by `convert`. `columns` gives other canonical columns (`chosen_score`, `tie`, `binarization`,
    ...): unnamed ones are NULL, `tie` false, `margin` the score difference as in `Pair.to_row`.
    `image` is the bytes of a layout's one embedded image (its pair then has that image; a row is clean only
    where they decode, checked in Python). `meta_fields` spell the `meta` value of fields an adapter's `meta`
    rewrites, as (JSON spelling, condition under which it is exact). An adapter that overrides `meta` sets
    `spells_meta` where the generic spelling with `meta_fields` is what its `meta` writes; otherwise its rows
    stay row by row.
    """

    clean: str
    prompt: str  # a LIST of STRUCT(role VARCHAR, content VARCHAR)
    chosen: str
    rejected: str
    columns: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    meta_fields: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    spells_meta: bool = False


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class ReadOptions:
    """Where a Hub dataset is read from; a local folder laid out in splits (or written by `save_to_disk`) is read
    by config, split and data_dir too (`readers.source_files`), a local file as it is."""

    config: str | None = None
    split: str | None = None  # None: the adapter's default split
    revision: str | None = None
    data_dir: str | None = None  # a folder of the repository (hh-rlhf's subsets, HelpSteer2's preference data)


class RowContext:
    """What `convert` may use for one row: its reference and image resolution (committed only on success)."""

    def __init__(self, ref: str, images_root: ImagesRoot, max_pixels: int) -> None:
        self.ref = ref
        self.images_root = images_root
        self.max_pixels = max_pixels
        self.new_images: dict[str, ImageRow] = {}

    def _add(self, data: bytes, origin: str) -> str:
        row = decode_image(data, origin, self.max_pixels)  # the reject is prefixed with the row's ref
        self.new_images.setdefault(row.sha256, row)
        return row.sha256

    def image_bytes(self, data: bytes, origin: str = "image") -> str:
        return self._add(data, origin)

    def image_path(self, rel: str, by_basename: bool = False, field: str | None = None) -> str:
        """The image file at `rel` under the images root; a reject names `field` where the path came from one."""
        try:
            data = self.images_root.read(rel, by_basename=by_basename)
        except RowError as exc:
            raise RowError(exc.reason, f"field '{field}': {exc.detail}" if field else exc.detail) from None
        return self._add(data, f"field '{field}': {rel}" if field else rel)

    def image(self, value: Any, field: str = "image", by_basename: bool = False) -> str:
        """An image given as bytes, a `{bytes, path}` struct (parquet / `datasets`), or a relative path."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return self._add(value["bytes"], f"field '{field}'")
            if value.get("path"):
                return self.image_path(value["path"], by_basename, field)
            if value.get("bytes") is not None:  # b"": given, and empty
                raise RowError("image undecodable", f"field '{field}': empty image bytes")
            raise RowError("image not found", f"field '{field}': neither bytes nor path")
        if isinstance(value, (bytes, bytearray)):
            return self._add(bytes(value), f"field '{field}'")
        if isinstance(value, str) and value:
            return self.image_path(value, by_basename, field)
        reason = "missing field" if value is None or value == "" else "wrong type"
        raise RowError(reason, f"field '{field}': no image ({type(value).__name__})")

    def video_frames(self, rel_dir: str, field: str = "video") -> list[str]:
        """The frame images of the folder at `rel_dir` (a video as frames); a reject names `field`."""
        try:
            frames = self.images_root.frames(rel_dir)
        except RowError as exc:
            raise RowError(exc.reason, f"field '{field}': {exc.detail}") from None
        return [self.image_path(rel, field=field) for rel in frames]


class Adapter:
    info: ClassVar[SourceInfo]
    Options: ClassVar[type] = NoOptions
    # Native fields fully represented by canonical columns; all other fields go to `meta` (minus bytes).
    mapped_fields: ClassVar[frozenset[str]] = frozenset()
    # Columns to read from parquet/arrow files (None = all); heavy sources select what they need.
    columns: ClassVar[Sequence[str] | None] = None
    # Native fields that hold a list of records (a `sequence` of structs, as dataset cards declare it). `datasets`
    # serves such a field as one record of lists ({"model": [...], "response": [...]}), a JSON file as a list
    # of records: `normalize` gives `convert` the list of records whichever way the row was stored.
    record_lists: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Mapping[str, Any] | None = None, read: ReadOptions | None = None) -> None:
        self.options = parse_options(self.Options, options or {}, self.info.key)
        self.read = read or ReadOptions()
        self._files: dict[str, list[Path]] = {}  # a folder is listed once per ingest, however many steps ask

    def records(self, location: str, images_root: ImagesRoot) -> Iterator[Record]:
        """Native rows of `location` (a local file/folder or a Hub id)."""
        yield from iter_location(
            location,
            config=self.read.config,
            split=self.read.split or self.default_split(),
            revision=self.read.revision,
            columns=self.columns,
            data_dir=self.read.data_dir,
            files=None if readers.is_hub_id(location) else self.local_files(location),  # listed once per ingest
            data_files=self.hub_file(),
        )

    def hub_file(self) -> str | None:
        """The adapter's own file of its repository, read unless a config, folder or split is asked for."""
        asked = self.read.config is not None or self.read.data_dir is not None or self.read.split is not None
        return None if asked else self.info.hub_file

    def local_files(self, location: str) -> list[Path]:
        """The files of a local file or folder this adapter reads: those of its split (`readers.source_files`),
        or the adapter's `hub_file` in a snapshot of its repository."""
        if location not in self._files:
            split = self.read.split or self.default_split()
            hub_file = self.hub_file()
            if hub_file is not None and (Path(location) / hub_file).is_file():
                self._files[location] = [Path(location) / hub_file]
            else:
                self._files[location] = source_files(Path(location), self.read.config, split, self.read.data_dir)
        return self._files[location]

    def input_files(self, location: str) -> list[Path]:
        """The local files this adapter reads rows from at `location`: what a build's manifest hashes as the
        source's `inputs` and a resumed build checks for changes (not the rest of a repository's snapshot)."""
        return self.local_files(location)

    def images_folder(self, location: str) -> Path | None:
        """Where the rows' image paths are found when no images root is given (None: nowhere)."""
        return None

    def files_note(self, location: str) -> str | None:
        """What of a local folder this adapter leaves unread (another split's files), or None."""
        if readers.is_hub_id(location) or not Path(location).is_dir():
            return None
        hub_file = self.hub_file()
        if hub_file is not None and self.local_files(location) == [Path(location) / hub_file]:
            return (f"{printable(location)}: read {hub_file}, this source's file in its repository (--config, "
                    "--data-dir or --split read the repository's tables instead)")  # fmt: skip
        split = self.read.split or self.default_split()
        read = self.local_files(location)
        listed = source_files(Path(location), self.read.config, split, self.read.data_dir, every_format=True)
        return files_note(Path(location), read, split, sorted(set(listed) - set(read)))

    def default_split(self) -> str:
        """The Hub split read when none is given (an adapter whose configs have other splits says so here)."""
        return self.info.default_split

    def normalize(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with each of `record_lists` as a list of records (a record of equal-length lists is turned
        around; anything else is left for `convert` to judge)."""
        fields = [name for name in self.record_lists if isinstance(row.get(name), dict)]
        return {**row, **{name: records_of(row[name], name) for name in fields}} if fields else row

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        raise NotImplementedError

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in self.mapped_fields}

    def sql_layout(self, schema: pa.Schema) -> SqlLayout | None:
        """The conversion of a flat parquet layout as DuckDB expressions (`curation.columnar`), for adapters
        whose common layout allows it; None (the default) converts every row with `convert`."""
        return None


def records_of(columns: dict[str, Any], name: str) -> Any:
    """{"a": [1, 2], "b": [3, 4]} -> [{"a": 1, "b": 3}, {"a": 2, "b": 4}]; a record whose values are not all
    lists is returned as it is, lists of different lengths are a `RowError`."""
    if not columns or not all(isinstance(v, list) for v in columns.values()):
        return columns
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise RowError("wrong type", f"'{name}': a record of lists of different lengths {lengths}")
    keys = list(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def parse_options(cls: type, values: Mapping[str, Any], source: str) -> Any:
    """Build an options dataclass from strings or typed values; unknown keys and bad types are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        close = [m for name in unknown for m in difflib.get_close_matches(name.replace("-", "_"), list(fields), n=1)]
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise InputError(f"{source}: unknown option(s) {', '.join(unknown)} ({hint}known: {known})")
    parsed = {}
    for name, raw in values.items():
        try:
            parsed[name] = _coerce(raw, hints[name])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: option {name}={raw!r}: {exc}") from exc
    try:
        return cls(**parsed)
    except ValueError as exc:  # the options' own check (`__post_init__`) of a value's range
        raise InputError(f"{source}: {exc}") from exc


def _coerce(raw: Any, hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is Literal:
        if raw not in typing.get_args(hint):
            raise ValueError(f"expected one of {', '.join(map(str, typing.get_args(hint)))}")
        return raw
    if origin in (typing.Union, types.UnionType) and len(args) == 1:  # Optional[X]
        return None if raw in (None, "", "none", "None") else _coerce(raw, args[0])
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1", "yes"):
            return True
        if str(raw).lower() in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if hint is int:  # `3` from the command line, 3 or 3.0 from YAML; never 2.5 cut to 2, or true read as 1
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"expected a whole number, got {raw!r}")
        return int(raw)
    if hint is float:
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, got {raw!r}")
        if not math.isfinite(number := float(raw)):  # a margin of nan compares false with every gap
            raise ValueError(f"expected a finite number, got {raw!r}")
        return number
    if hint is str:
        if not isinstance(raw, str):
            raise TypeError(f"expected a string, got {type(raw).__name__}")
        return raw
    if origin is list and args == [str]:
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise TypeError(f"expected a list of strings, got {raw!r}")
        return raw
    return raw


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Adapter",
    "NoOptions",
    "Pair",
    "ReadOptions",
    "Record",
    "RowContext",
    "RowError",
    "SourceInfo",
    "SqlLayout",
]
