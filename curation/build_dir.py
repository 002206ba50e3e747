"""A finished build folder: every path in it, and how to read it.

Every reader of a build (`curate stats/show/export`, `trainer fit/score/ablate/export`, the workbench) opens it
here. Paths are resolved with symlinks followed and refused when their real path leaves the build folder (a
build is one self-contained folder: its files never point elsewhere). Anything wrong with a build is one error
type, `BuildError`, whose message names the path.

The layout (written by `curation.build`):

    manifest.json                  recipe, inputs, per-source funnel, shards with their sha256, timings
    README.md                      the data card
    shards/train-NNNNN-of-NNNNN.arrow  the pairs (Arrow IPC streams; `datasets.Dataset.from_file` opens them)
    images/images.parquet         each image of the shards once, and of the pairs removed as duplicates or as
                                  contaminated (their evidence), sorted by sha256
    rejects/rejects.parquet       every removed or rejected row: source, source_row, pair_id, stage, reason, detail
    rejects/removed_pairs.parquet the removed pairs themselves
    rejects/benchmark_rejects.parquet  the benchmarks' rows rejected at ingest (a recipe with benchmarks):
                                  benchmark, source_row, reason, detail; decontamination never saw them
    dups/<op>.parquet             duplicates and their survivors, per dedupe op
    contamination/contamination.parquet  benchmark matches (removed or recorded)
    contamination/benchmark_images.parquet  the images of the benchmark items matched
    signals/<op>-v<version>-<hash>.parquet  what each op measured
    flags/<op>.parquet            pairs an op flagged without removing them
    flags/<op>_estimate.parquet   per source, what an op estimated to choose its pairs (rm_margin's noise rate)
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curation.errors import InputError
from curation.io import read_shards, sha256_once
from curation.schema import PAIR_SCHEMA, SCHEMA_VERSION

IMAGES = "images/images.parquet"
REJECTS = "rejects/rejects.parquet"
REMOVED_PAIRS = "rejects/removed_pairs.parquet"
BENCHMARK_REJECTS = "rejects/benchmark_rejects.parquet"
CONTAMINATION = "contamination/contamination.parquet"
BENCHMARK_IMAGES = "contamination/benchmark_images.parquet"
CARD = "README.md"
MANIFEST = "manifest.json"
# What a build folder holds at its top: the files and folders above. `--replace` replaces only a folder of these.
ENTRIES = frozenset({MANIFEST, CARD, "shards", "images", "rejects", "dups", "contamination", "signals", "flags"})


class BuildError(InputError):
    """A build folder that cannot be read as asked: not a finished build, or a file that is refused."""


@dataclass
class BuildDir:
    """A finished build, opened read-only. Optional files that are refused (their real path leaves the folder)
    are left out and named in `refused` (path in the build -> why), so a reader that can do without them goes on;
    `file` raises for one it needs."""

    path: Path  # the build folder's real path
    manifest: dict[str, Any]
    refused: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, location: Path | str) -> BuildDir:
        """The build at `location`: the build folder, its `shards/` folder or its `manifest.json`."""
        given = Path(location)
        if given.name in ("shards", MANIFEST) and not (given / MANIFEST).is_file():
            given = given.parent
        try:
            path = given.resolve(strict=True)
        except FileNotFoundError:
            raise BuildError(f"{location}: no such build folder (`curate build --out` makes one)") from None
        except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13), no permission
            raise BuildError(f"{location}: no such build folder ({exc})") from None
        if not path.is_dir():
            raise BuildError(f"{location}: not a build folder")
        try:
            manifest_path = confined(path, MANIFEST)
        except BuildError as exc:
            raise BuildError(f"{location}/{exc}") from None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            manifest = None
        except (OSError, ValueError) as exc:  # JSONDecodeError says where: a manifest cut short, edited by hand
            raise BuildError(f"{location}: not a finished build (manifest.json cannot be read: {exc})") from None
        if not isinstance(manifest, dict) or not {"recipe", "sources", "shards"} <= set(manifest):
            raise BuildError(f"{location}: not a finished build (no readable manifest.json)")
        damage = _manifest_damage(manifest)
        if damage is not None:
            raise BuildError(f"{location}: manifest.json is damaged ({damage}); build again")
        return cls(path, manifest)

    # -- paths -------------------------------------------------------------------------------------------------
    def file(self, relative: str) -> Path:
        """The real path of a file the reader needs; `BuildError` when it is absent or refused."""
        try:
            path = confined(self.path, relative)
        except BuildError as exc:
            raise BuildError(f"{self.path}/{exc}") from None
        if not path.is_file():
            raise BuildError(f"{self.path}: no {relative} (is this a complete `curate build` output?)")
        return path

    def optional(self, relative: str) -> Path | None:
        """The real path of a file a reader can do without: None when absent, refused or (a parquet table) damaged;
        then named in `refused`."""
        try:
            path = confined(self.path, relative)
        except BuildError as exc:
            self.refused[relative] = f"{self.name}/{exc}"
            return None
        if not path.is_file():
            return None
        if path.suffix == ".parquet":
            try:
                pq.read_metadata(path)  # its footer: a damaged or foreign file is left out, not a traceback later
            except (OSError, pa.ArrowException) as exc:
                self.refused[relative] = f"{self.name}/{relative}: damaged, not read ({exc})"
                return None
        return path

    def folder(self, name: str) -> dict[str, Path]:
        """The parquet files of a folder of tables (`dups`, `signals`, `flags`), by stem; refused ones left out. A
        folder whose real path leaves the build is refused whole, unlisted (its file names are not the build's)."""
        try:
            confined(self.path, name)
        except BuildError as exc:
            self.refused[name] = f"{self.name}/{exc}"
            return {}
        listed = sorted((self.path / name).glob("*.parquet")) if (self.path / name).is_dir() else []
        found = {p.stem: self.optional(f"{name}/{p.name}") for p in listed}
        return {stem: p for stem, p in found.items() if p is not None}

    @property
    def shard_paths(self) -> list[Path]:
        """The shards the manifest lists, in order."""
        paths = [self.file(shard["file"]) for shard in self.manifest["shards"]]
        if not paths:
            raise BuildError(f"{self.path}: the build has no shards")
        return paths

    @property
    def name(self) -> str:
        return self.path.name

    def check_shards_unchanged(self) -> None:
        """`BuildError` naming the shards whose sha256 is not the one the manifest records (edited in place, even
        rewritten with the same rows): what a run records or an export publishes would not be this build. Each
        shard is hashed once per process while it is unchanged (`sha256_once`): about 0.6 s a GB."""
        digests = [shard.get("sha256") for shard in self.manifest["shards"]]
        edited = [str(f) for f, d in zip(self.shard_paths, digests, strict=True) if sha256_once(f) != d]
        if edited:
            raise BuildError(f"{self.path}: shards edited since their build ({', '.join(edited)}: not the "
                             "manifest's sha256); build it again")  # fmt: skip

    # -- readers -------------------------------------------------------------------------------------------------
    def pairs(self, columns: list[str] | None = None, check_text: bool = False) -> pa.Table:
        """The pairs in the shards, memory-mapped; a shard that cannot be read, holds other than the rows the
        manifest lists for it or another schema, is an error naming it. `check_text` also reads every value of the
        columns once, so that text that is not UTF-8 is found before it is used (about 0.07 s a GB in memory; the
        trainer's readers ask for it, the lookups and the workbench do not)."""
        tables = []
        for shard, path in zip(self.manifest["shards"], self.shard_paths, strict=True):
            try:
                table = read_shards([path])
            except (pa.ArrowException, OSError) as exc:
                raise BuildError(f"{path}: a damaged shard ({exc}); build again") from None
            if isinstance(shard.get("rows"), int) and table.num_rows != shard["rows"]:
                raise BuildError(f"{path}: {table.num_rows} rows where the manifest lists {shard['rows']}; the shard "
                                 "was changed or cut short; build again")  # fmt: skip
            tables.append(_checked_shard(path, table, columns or PAIR_SCHEMA.names, check_text))
        return pa.concat_tables(tables)

    def removed_pairs(self, columns: list[str] | None = None, required: bool = False) -> pa.Table | None:
        """The pairs the build removed (None where it removed none; a build from before the table too, unless
        `required`: then a build that removed pairs must have them whole, or it is a `BuildError`)."""
        path = self.optional(REMOVED_PAIRS)
        if path is None:
            if required and self._removed_any():
                why = self.refused.get(REMOVED_PAIRS, f"{self.name}/{REMOVED_PAIRS}: missing")
                raise BuildError(f"{why}, though the build removed pairs; build again")
            return None
        try:
            return pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise BuildError(f"{path}: a damaged table of removed pairs ({exc}); build again") from None

    def _removed_any(self) -> bool:
        """Whether the manifest counts a removed pair: by an op (counts by stage and reason) or by the mix."""
        sources = self.manifest["sources"].values()
        by_ops = any(any(by_reason.values()) for s in sources for by_reason in s["removed"].values())
        return by_ops or any(s["mix"].get("selected", 0) < s["mix"]["available"] for s in sources)

    def images(self) -> ImageTable:
        path = self.file(IMAGES)
        try:
            return ImageTable(path)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise BuildError(f"{path}: a damaged image table ({exc}); build again") from None

    def card(self) -> str:
        path = self.optional(CARD)
        return path.read_text(encoding="utf-8") if path is not None else ""

    def signals(self) -> dict[str, Path]:
        return self.folder("signals")

    def dups(self) -> dict[str, Path]:
        return self.folder("dups")


def _checked_shard(path: Path, table: pa.Table, columns: list[str], check_text: bool) -> pa.Table:
    """The shard's `columns`, each of the pair schema's type, with valid contents where `check_text` (UTF-8 text,
    offsets in range: a full scan); a `BuildError` naming the file otherwise."""
    for name in columns:
        if name not in table.schema.names:
            raise BuildError(f"{path}: not a shard of a build (no column {name!r}); build again")
        if table.schema.field(name).type != PAIR_SCHEMA.field(name).type:
            raise BuildError(f"{path}: not a shard of a build (column {name!r} is {table.schema.field(name).type}, "
                             f"not {PAIR_SCHEMA.field(name).type}); build again")  # fmt: skip
    picked = table.select(columns)
    for name in columns:  # a column the schema declares not null holds no null (pandas writes every field nullable)
        if not PAIR_SCHEMA.field(name).nullable and picked.column(name).null_count:
            raise BuildError(f"{path}: not a shard of a build (column {name!r} holds nulls); build again")
    try:
        picked.validate(full=check_text)
    except pa.ArrowInvalid as exc:
        raise BuildError(f"{path}: a damaged shard ({exc}); build again") from None
    # the pair schema's fields and metadata, whatever the writer declared: the shards concatenate
    return picked.cast(pa.schema([PAIR_SCHEMA.field(name) for name in columns], metadata=PAIR_SCHEMA.metadata))


def is_count(value: Any) -> bool:
    """A whole number >= 0 (not a bool, which is an int too), as a manifest or a report counts."""
    return type(value) is int and value >= 0


def _counts(value: Any) -> bool:
    """A mapping of counts (by reason)."""
    return isinstance(value, dict) and all(is_count(v) for v in value.values())


def _source_damage(source: dict[str, Any]) -> str | None:
    """What of one source's entry its funnel and mix rely on is wrong, or None."""
    for key in ("rows_read", "pairs_ingested", "kept", "in_shards"):
        if not is_count(source.get(key)):
            return f"`{key}` is not a count"
    if not _counts(source.get("rejects_at_ingest")):
        return "`rejects_at_ingest` is not a mapping of counts"
    for key in ("removed", "swapped", "flagged"):
        by_stage = source.get(key, None if key == "removed" else {})  # an older build has no swapped or flagged
        if not isinstance(by_stage, dict) or not all(_counts(v) for v in by_stage.values()):
            return f"`{key}` is not a mapping of counts by stage"
    mix = source.get("mix")
    if (
        not isinstance(mix, dict)
        or not all(is_count(mix.get(key)) for key in ("available", "target", "upsampled_copies"))
        or not (mix.get("factor") is None or type(mix.get("factor")) in (int, float))  # None: nothing was available
    ):
        return "`mix` is not a mapping with its available, target and upsampled_copies counts and its factor"
    return None


# libyaml's parser where PyYAML was built with it: 8x faster on a recipe, which the workbench reads per build per page
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=64)
def _parse_recipe(text: str) -> Any:
    return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: plain data, no objects


def manifest_recipe(manifest: dict[str, Any]) -> dict[str, Any]:
    """The recipe a manifest records, parsed once per text and shared by every caller (read it, never change it);
    {} where it is not a YAML mapping (`BuildDir.open` refuses such a manifest)."""
    try:
        recipe = _parse_recipe(manifest["recipe"]["text"])
    except (yaml.YAMLError, KeyError, TypeError):
        return {}
    return recipe if isinstance(recipe, dict) else {}


def _manifest_damage(manifest: dict[str, Any]) -> str | None:
    """What of a manifest's structure its readers rely on is wrong, or None: the recipe, the shards, the counts and
    each source's funnel and mix (the workbench's pages show them all)."""
    recipe, sources, shards = manifest["recipe"], manifest["sources"], manifest["shards"]
    version = manifest.get("schema_version", SCHEMA_VERSION)  # a build from before it was recorded has none
    if not is_count(version) or version > SCHEMA_VERSION:
        return (f"`schema_version` is {version!r}, not one this rm-workbench reads (up to {SCHEMA_VERSION}: a newer "
                "one would read it)")  # fmt: skip
    if not isinstance(recipe, dict) or not isinstance(recipe.get("text"), str):
        return "`recipe` is not a mapping with its `text`"
    try:
        recipe_yaml = _parse_recipe(recipe["text"])
    except yaml.YAMLError:
        recipe_yaml = None
    if not isinstance(recipe_yaml, dict):  # the funnel orders the sources as the recipe does
        return "`recipe.text` is not a recipe (a YAML mapping)"
    if not isinstance(sources, dict) or not all(isinstance(v, dict) for v in sources.values()):
        return "`sources` is not a mapping of sources"
    if not isinstance(shards, list) or not all(isinstance(s, dict) and isinstance(s.get("file"), str) for s in shards):
        return "`shards` is not a list of shards, each with its `file`"
    distinct = ("pairs_in_shards", "images_in_shards")  # a build from before these counts has neither
    for key in ("rows_in_shards", "images", *(distinct if any(k in manifest for k in distinct) else ())):
        if not is_count(manifest.get(key)):
            return f"`{key}` is not a count"
    warnings = manifest.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        return "`warnings` is not a list of texts"
    for name, source in sources.items():
        damage = _source_damage(source)
        if damage is not None:
            return f"source {name!r}: {damage}"
    return None


def enclosing_build(path: Path) -> Path | None:
    """The build folder `path` is, or is (or would be) inside, by real paths: a folder holding `manifest.json` and
    `shards/`; None where there is none. Outputs go elsewhere: a build folder holds only what its build wrote."""
    resolved = path.resolve()
    return next((f for f in (resolved, *resolved.parents) if (f / MANIFEST).is_file() and (f / "shards").is_dir()),
                None)  # fmt: skip


def within_build(path: Path) -> str | None:
    """`is the build B` or `is inside the build B` where `path` is or would be a build folder or in one, else
    None (`enclosing_build`)."""
    build = enclosing_build(path)
    if build is None:
        return None
    return f"is the build {build}" if build == path.resolve() else f"is inside the build {build}"


def confined(root: Path, relative: str, within: str = "the build folder") -> Path:
    """`root / relative` by its real path (`root` itself resolved), refused with a `BuildError` when that leaves
    `root` (`within` names it in the message, which starts with `relative`: callers put their context in front)."""
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise BuildError(f"{relative}: refused, its real path cannot be resolved ({exc})") from None
    if not path.is_relative_to(root):
        raise BuildError(f"{relative}: refused, its real path leaves {within} (a symlink or '..')")
    return path


class ImageTable:
    """Random access by sha256 to a build's image table through its row-group statistics (the table is sorted by
    sha256 in small row groups)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.file = pq.ParquetFile(path) if path is not None and path.is_file() else None
        self.first_hashes: list[str] = []
        if self.file is not None:
            schema = self.file.schema_arrow
            for name, kind in (("sha256", pa.string()), ("bytes", pa.binary())):
                if name not in schema.names or schema.field(name).type != kind:
                    raise ValueError(f"no {kind} column {name!r}")
            column = schema.get_field_index("sha256")
            for group in range(self.file.num_row_groups):
                stats = self.file.metadata.row_group(group).column(column).statistics
                if stats is None or not stats.has_min_max:  # the lookup bisects on them
                    raise ValueError(f"row group {group} has no sha256 statistics")
                self.first_hashes.append(stats.min)

    def get(self, sha256: str) -> bytes | None:
        """The image's bytes, checked against their sha256 (the manifest records no digest of this table: bytes
        changed since the build would otherwise pass as the image the pairs name); None where it has none."""
        if self.file is None or not self.first_hashes:
            return None
        group = bisect.bisect_right(self.first_hashes, sha256) - 1
        table = self.file.read_row_group(max(group, 0), columns=["sha256", "bytes"])
        hashes = table.column("sha256").to_pylist()
        if sha256 not in hashes:
            return None
        data = table.column("bytes")[hashes.index(sha256)].as_py()
        if hashlib.sha256(data or b"").hexdigest() != sha256:
            raise BuildError(f"{self.path}: image {sha256} holds other bytes than those of that sha256 (the table "
                             "was changed since the build); build again")  # fmt: skip
        return data

    def read(self, sha256: str) -> bytes:
        data = self.get(sha256)
        if data is None:
            raise KeyError(f"{self.path}: image {sha256} not found")
        return data
