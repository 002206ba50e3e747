"""The build recipe: one YAML file naming the sources, the ops with their thresholds, the mix and the shards.

Mistakes are caught before anything runs: unknown keys, unknown ops or adapters, bad types and missing local
paths are reported with the recipe's file and line and a hint.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curation.errors import InputError
from curation.ops import OPS
from curation.ops.base import file_fields, model_fields
from curation.readers import is_hub_id
from curation.sources import REGISTRY
from curation.storage import check_uri, is_uri


class RecipeError(InputError):
    """A recipe mistake, reported as FILE:LINE: message (hint)."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    adapter: str
    path: str  # local path (resolved against the recipe's folder), Hub id, or an object store's URI
    images_root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    data_dir: str | None = None  # a folder of the Hub repository
    weight: float | None = None  # multiplier of the kept pairs: <1 subsamples, >1 upsamples
    count: int | None = None  # or an exact number of pairs
    max_upsample: float = 10.0  # the most `weight` or `count` may ask for, as a multiple of the kept pairs


@dataclass(frozen=True)
class ShardSpec:
    rows_per_shard: int = 50_000

    def check(self) -> None:
        if self.rows_per_shard < 1:
            raise ValueError("rows_per_shard must be at least 1")


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int
    sources: tuple[SourceSpec, ...]
    benchmarks: tuple[SourceSpec, ...]
    ops: dict[str, Any]
    shards: ShardSpec
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def op(self, name: str) -> Any:
        """The op's parameters: the recipe's, the defaults of an op that runs by default, or None (off)."""
        if name in self.ops:
            return self.ops[name]
        return OPS[name].Params() if OPS[name].default_on else None

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


_TOP = {"name", "seed", "sources", "benchmarks", "ops", "shards"}
_SOURCE_KEYS = {f.name for f in dataclasses.fields(SourceSpec)} - {"name"}


class _Located:
    """Line numbers of the YAML nodes, so errors can point at the recipe line."""

    def __init__(self, node: yaml.Node, path: Path) -> None:
        self.node, self.path = node, path

    def line(self, *keys: str) -> int:
        node = self.node
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                match = next((k for k, v in node.value if k.value == key), None)
                return (match.start_mark.line if match else node.start_mark.line) + 1
            node = match
        return node.start_mark.line + 1

    def error(self, keys: tuple[str, ...], message: str, hint: str = "") -> RecipeError:
        return RecipeError(f"{self.path}:{self.line(*keys)}: {message}" + (f" ({hint})" if hint else ""))


class _RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML keeps the last one silently, so a
    source written twice would vanish). Keys are compared as YAML resolves them (`1` and `0x1`, `yes` and `on`
    are equal); keys a merge (`<<`) brings in may be overridden, as YAML intends."""

    path: Path

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise RecipeError(f"{self.path}:{line}: duplicate key {key!r} (first at line {seen[key]})")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep)


def load_unique_yaml(text: str, path: Path) -> Any:
    """YAML text by the safe loader, a key written twice in one mapping an `InputError` at its line."""
    loader = _RecipeLoader(text)
    loader.path = path
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(sorted(choices))}"


def _check_keys(loc: _Located, keys: tuple[str, ...], value: dict, allowed: set[str]) -> None:
    for key in value:
        if key not in allowed:
            raise loc.error((*keys, key), f"unknown key {key!r}", _suggest(str(key), allowed))


def _typed(loc: _Located, keys: tuple[str, ...], cls: type, value: Any, base: Path | None = None) -> Any:
    """`value` parsed into `cls` by its type hints. Its file fields (`curation.ops.base.file_fields`) are resolved
    against `base` (the recipe's folder) as sources' paths are."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise loc.error(keys, f"expected a mapping of {cls.__name__} settings, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    _check_keys(loc, keys, value, set(hints))
    out = {}
    for key, raw in value.items():
        hint = hints[key]
        allowed = tuple(a for a in typing.get_args(hint) if a is not type(None)) or (hint,)
        if typing.get_origin(hint) is typing.Literal:
            if raw not in typing.get_args(hint):
                choices = ", ".join(map(str, typing.get_args(hint)))
                raise loc.error((*keys, key), f"{key} must be one of {choices}, got {raw!r}")
            out[key] = raw
            continue
        if typing.get_origin(hint) is tuple:
            raw = [raw] if isinstance(raw, str) else raw  # one string is a list of one
            if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                raise loc.error((*keys, key), f"{key} must be a string or a list of strings")
            out[key] = tuple(raw)
            continue
        ok = raw is None and type(None) in typing.get_args(hint)
        ok = ok or any(isinstance(raw, t) and not (t is not bool and isinstance(raw, bool)) for t in allowed)
        ok = ok or (float in allowed and isinstance(raw, int) and not isinstance(raw, bool))
        if not ok:
            names = " or ".join(t.__name__ for t in allowed)
            raise loc.error((*keys, key), f"{key} must be {names}, got {raw!r}")
        if isinstance(raw, float) and not math.isfinite(raw):  # YAML's .nan and .inf compare false to any bound
            raise loc.error((*keys, key), f"{key} must be a finite number, got {raw!r}")
        out[key] = float(raw) if float in allowed and isinstance(raw, int) else raw
    for name in file_fields(cls) if base is not None else []:
        if not out.get(name):
            continue
        given = out[name]
        paths = given if isinstance(given, tuple) else [given]
        for p in paths:
            if is_uri(p):
                raise loc.error((*keys, name), f"{p}: an object store's URI; this op reads a local file")
        try:
            resolved = [str((base / Path(p).expanduser()).resolve()) if p else p for p in paths]
        except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
            raise loc.error((*keys, name), f"{given}: cannot be resolved ({exc})") from None
        out[name] = tuple(resolved) if isinstance(given, tuple) else resolved[0]
    for name in model_fields(cls) if base is not None else []:
        if out.get(name):
            out[name] = _model(loc, (*keys, name), out[name], base)
    params = cls(**out)
    if hasattr(params, "check"):
        try:
            params.check()
        except ValueError as exc:
            about_a_file = base is not None and str(base) in str(exc)  # a resolved path is named
            raise loc.error(keys, str(exc), f"relative paths resolve against {base}" if about_a_file else "") from None
    return params


def _model(loc: _Located, keys: tuple[str, ...], given: str, base: Path) -> str:
    """A model's local folder, resolved against the recipe's folder, or else its Hub name as given."""
    if is_uri(given):
        raise loc.error(keys, f"{given}: an object store's URI; give a Hub name or a local folder")
    try:
        local = (base / Path(given).expanduser()).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise loc.error(keys, f"{given}: cannot be resolved ({exc})") from None
    if local.exists():
        return str(local)
    if given.startswith((".", "/", "~")) or given.count("/") > 1 or "\\" in given:  # a path, not a Hub name
        raise loc.error(keys, f"{given}: no such folder", f"resolved against {base}")
    if Path(given).exists():  # a name that loads from the working directory would change with it
        raise loc.error(
            keys,
            f"{given}: no such folder beside the recipe, only in the working directory",
            f"paths in a recipe resolve against its folder, {base}",
        )
    return given


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _name_text(value: Any) -> str | None:
    """A recipe value that names something, as text: YAML reads `2024` as a number and `2024-01-01` as a date,
    which name a folder as well as text does; None for what names nothing (empty, a list, a mapping, true or
    false, text holding a NUL)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, datetime.date)):
        return None
    text = str(value)
    return text if text.strip() and "\0" not in text else None


def _source(loc: _Located, section: str, name: str, value: Any, base: Path) -> SourceSpec:
    keys = (section, name)
    if not _NAME.match(name):
        raise loc.error(keys, f"source name {name!r} may hold only letters, digits, '_', '.' and '-'")
    if not isinstance(value, dict):
        raise loc.error(keys, f"source {name!r} must be a mapping with at least `path`")
    _check_keys(loc, keys, value, _SOURCE_KEYS)
    adapter = value.get("adapter", name)
    if adapter not in REGISTRY:
        raise loc.error(keys, f"unknown adapter {adapter!r}", _suggest(adapter, REGISTRY))
    if "path" not in value:
        raise loc.error(keys, f"source {name!r} has no `path`", "a local file or folder, or a Hub dataset id")
    raw_path = _name_text(value["path"])
    if raw_path is None:
        raise loc.error((*keys, "path"), f"path must be a file or folder name, or a Hub dataset id; got "
                        f"{value['path']!r}")  # fmt: skip
    try:
        local = None if is_uri(raw_path) else (base / Path(raw_path).expanduser()).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise loc.error((*keys, "path"), f"{raw_path}: cannot be resolved ({exc})") from None
    if local is None:  # an object store's URI, read when the source is ingested
        try:
            check_uri(raw_path)
        except InputError as exc:
            raise loc.error((*keys, "path"), str(exc)) from None
        path = raw_path
    elif local.exists():
        path = str(local)
    elif is_hub_id(raw_path) and not raw_path.startswith((".", "/", "~")):
        if local.parent.is_dir():  # `owner/name` whose owner is a folder beside the recipe: a local path mistyped
            raise loc.error((*keys, "path"), f"{raw_path}: no such file or folder",
                            f"resolved against {base}, where {local.parent.name}/ exists; a Hub dataset id's owner "
                            "would not be a folder")  # fmt: skip
        path = raw_path
    else:
        if raw_path.startswith("~"):
            raise loc.error((*keys, "path"), f"{raw_path}: no such file or folder", f"expanded to {local}")
        here = Path(raw_path).exists()
        elsewhere = "; it exists in the working directory, but paths in a recipe resolve against its folder"
        raise loc.error((*keys, "path"), f"{raw_path}: no such file or folder",
                        f"resolved against {base}{elsewhere if here else ''}")  # fmt: skip
    images_root = value.get("images_root")
    if is_uri(images_root):
        try:
            check_uri(str(images_root))
        except InputError as exc:
            raise loc.error((*keys, "images_root"), str(exc)) from None
    elif images_root is not None:
        named = _name_text(images_root)
        if named is None:
            raise loc.error((*keys, "images_root"), f"images_root must be a folder or zip name; got {images_root!r}")
        images_root = named
        try:
            root = (base / Path(images_root).expanduser()).resolve()
        except (OSError, RuntimeError) as exc:
            raise loc.error((*keys, "images_root"), f"{images_root}: cannot be resolved ({exc})") from None
        if not root.exists():
            raise loc.error((*keys, "images_root"), f"{images_root}: no such folder or zip", f"resolved against {base}")
        images_root = str(root)
    for key in ("weight", "count"):  # written but empty: not the default (weight 1) said silently
        if key in value and value[key] is None:
            raise loc.error((*keys, key), f"{key} is empty; give a number, or leave the key out (all kept pairs once)")
    if value.get("weight") is not None and value.get("count") is not None:
        raise loc.error(keys, "give either weight or count, not both")
    weight, count = value.get("weight"), value.get("count")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf
    ):
        # YAML 1.1 reads `1e3` or `1.0e3` as text (a float needs a dot and a signed exponent): a number was meant
        hint = (f" (YAML reads {weight} as text: write a dot and the exponent's sign, as in 1.0e+3)"
                if _looks_like_a_number(weight) else "")  # fmt: skip
        raise loc.error((*keys, "weight"), f"weight must be a finite number >= 0, got {weight!r}{hint}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise loc.error((*keys, "count"), f"count must be an integer >= 0, got {count!r}")
    max_upsample = value.get("max_upsample", SourceSpec.max_upsample)
    if isinstance(max_upsample, bool) or not isinstance(max_upsample, (int, float)) or not 1 <= max_upsample < math.inf:
        raise loc.error((*keys, "max_upsample"), f"max_upsample must be a finite number >= 1, got {max_upsample!r}")
    if weight is not None and weight > max_upsample:
        raise loc.error(
            (*keys, "weight"),
            f"weight {weight} upsamples more than max_upsample {max_upsample:g}",
            "raise max_upsample for this source to allow it",
        )
    options = value.get("options") or {}
    if not isinstance(options, dict):
        raise loc.error((*keys, "options"), "options must be a mapping")
    try:
        REGISTRY[adapter](options)  # adapter options are checked now, not halfway through a build
    except InputError as exc:
        raise loc.error((*keys, "options"), str(exc)) from None
    return SourceSpec(
        name=name, adapter=adapter, path=path, images_root=images_root, options=dict(options),
        config=value.get("config"), split=value.get("split"), revision=value.get("revision"),
        data_dir=value.get("data_dir"),
        weight=None if weight is None else float(weight), count=count, max_upsample=float(max_upsample),
    )  # fmt: skip


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line for a YAML error: the file, line and column of the problem, what it is and where its context
    began."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"{path}: not valid YAML: {' '.join(str(exc).split())}"
    mark = exc.problem_mark
    context = f" ({exc.context}, line {exc.context_mark.line + 1})" if exc.context and exc.context_mark else ""
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {exc.problem}{context}"


def _looks_like_a_number(value: object) -> bool:
    try:
        return isinstance(value, str) and math.isfinite(float(value))
    except ValueError:
        return False


def load_recipe(path: Path) -> Recipe:
    """Parse and check a recipe; paths in it are relative to the recipe's folder."""
    if path.is_dir():
        raise RecipeError(f"{path}: a folder, not a recipe file (a YAML file such as mixes/demo.yaml)")
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the recipe as UTF-8"
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = load_unique_yaml(text, path)
    except yaml.YAMLError as exc:
        raise RecipeError(_yaml_error(path, exc)) from None
    if not isinstance(data, dict) or node is None:
        raise RecipeError(f"{path}:1: a recipe is a mapping with name, seed, sources, ops")
    loc = _Located(node, path)
    _check_keys(loc, (), data, _TOP)
    base = path.resolve().parent
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise loc.error(("sources",), "the recipe needs a non-empty `sources` mapping")
    benchmarks = data.get("benchmarks") or {}
    if not isinstance(benchmarks, dict):
        raise loc.error(("benchmarks",), "`benchmarks` must be a mapping")
    ops_raw = data.get("ops") or {}
    if not isinstance(ops_raw, dict):
        raise loc.error(("ops",), "`ops` must be a mapping of op name to parameters")
    for name in ops_raw:
        if name not in OPS:
            raise loc.error(("ops", name), f"unknown op {name!r}", _suggest(str(name), OPS))
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise loc.error(("seed",), f"seed must be an integer, got {seed!r}")
    name = path.stem if data.get("name") is None else _name_text(data["name"])
    if name is None or not name.isprintable():
        raise loc.error(("name",), f"name must be text on one line, without control characters; got {data['name']!r}")
    return Recipe(
        name=name,
        seed=seed,
        sources=tuple(_source(loc, "sources", str(k), v, base) for k, v in sources.items()),
        benchmarks=tuple(_source(loc, "benchmarks", str(k), v, base) for k, v in benchmarks.items()),
        ops={name: _typed(loc, ("ops", name), OPS[name].Params, params, base) for name, params in ops_raw.items()},
        shards=_typed(loc, ("shards",), ShardSpec, data.get("shards")),
        path=path.resolve(),
        text=text,
    )
