"""Stream native rows from local files (jsonl, compressed jsonl, json, parquet, arrow) or a Hugging Face dataset.

Every row comes out as a `Record` with a reference that locates it (`file:line` or `split:index`); a row
that cannot be read comes out as a `Record` carrying a `RowError`, so the caller records it as a reject instead
of losing it: bad UTF-8, malformed or pathological JSON (nested too deep, numbers too long), text with lone
surrogates, a string value that is not valid UTF-8 in a parquet file, a parquet row group that cannot be
decoded (each of its rows), a truncated compressed file or JSON array (the unreadable tail, `file:line+`). Text
files are read as text editors read them: a UTF-8 (or UTF-16) byte-order mark is not part of the first row, and lines
end at LF, CRLF or a lone CR. In a folder of several files, a file that cannot be read at all is one reject
(`file:0+`) and the others are read; a single file that cannot be read stops the command (`InputError`).
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import io
import json
import lzma
import re
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import zstandard

from curation.errors import HubUnreadable, InputError, RowError

# JSON may come compressed, as `datasets` reads it
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
JSON_LINES_SUFFIXES = tuple(f"{s}{c}" for s in (".jsonl", ".ndjson") for c in ("", *COMPRESSIONS))
JSON_SUFFIXES = (".json", *(f".json{c}" for c in COMPRESSIONS))  # an array, one object, or JSON lines
SUPPORTED_SUFFIXES = (*JSON_LINES_SUFFIXES, *JSON_SUFFIXES, ".parquet", ".arrow")
# Tables `datasets` reads that this reader does not: a folder's are named as not read, never passed over in silence
UNREAD_SUFFIXES = tuple(f"{s}{c}" for s in (".csv", ".tsv") for c in ("", *COMPRESSIONS))
# Files `datasets` never reads as rows of a folder (`datasets.data_files.FILES_TO_IGNORE`)
NOT_DATA = frozenset({"config.json", "dataset_info.json", "dataset_infos.json", "dataset_dict.json"})
# A Hub repo id as the Hub spells them: `owner/name`, each of letters, digits, `-`, `_` and `.`, neither starting
# nor ending with `-` or `.`, without `--` or `..`, at most 96 characters.
_HUB_PART = r"\w(?:[\w.-]{0,94}\w)?"
HUB_ID = re.compile(rf"(?!.*(--|\.\.)){_HUB_PART}/{_HUB_PART}")
_BATCH_ROWS = 1000
# Deeper JSON is no preference row; the bound keeps every later step (meta, writers) far from Python's stack limit.
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")
# In text decoded as UTF-8, a lone surrogate comes only from an escape; the literal prefix keeps the search fast.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# What pyarrow raises for a damaged file: its own errors, I/O errors, and bytes that should be UTF-8 and are not
# (a column name in a footer, a value).
DAMAGED = (pa.ArrowException, OSError, ValueError)
_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True)
class Record:
    ref: str
    data: dict[str, Any] | None
    error: RowError | None = None


def printable(text: str) -> str:
    """`text` as valid UTF-8: lone surrogates (from undecodable file names, or JSON escapes) spelled `\\udc80`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def is_hub_id(location: str) -> bool:
    return not Path(location).exists() and bool(HUB_ID.fullmatch(location))


def hub_commit(hub_id: str, revision: str | None) -> str | None:
    """The commit that `revision` (a branch, tag or commit; None: the default branch) of the Hub dataset `hub_id`
    names now: a read pinned to it reads what the manifest records, however the branch moves. None where the Hub
    cannot be asked (offline, unreachable, or no such dataset: reading it then says why, or `datasets` serves its
    cache)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        return HfApi().dataset_info(hub_id, revision=revision, timeout=30).sha
    except Exception:  # the Hub client raises many types; the read that follows names the problem
        return None


def list_files(root: Path, suffixes: Sequence[str] = SUPPORTED_SUFFIXES, hidden: bool = False) -> list[Path]:
    """A file itself, or every supported file under a folder, in sorted (deterministic) order, but those that
    `datasets` leaves out of a folder: its metadata files (`dataset_info.json`, ...), hidden files, files in hidden
    folders (`.cache/` of `hf download`) and in folders named `__*` (`__pycache__`), unless `hidden` (for patterns
    that name them: `_matching`)."""
    if root.is_file():
        return [root]
    if not root.exists():
        raise InputError(f"{printable(str(root))}: {_not_a_file(root, 'no such file or folder')}")

    def listed(path: Path) -> bool:
        # A dangling symlink is listed too: reading it fails, and the failure is reported, not skipped. A FIFO or a
        # device is not: opening one would wait for a writer that never comes.
        *folders, name = path.relative_to(root).parts
        return (
            (path.is_file() or path.is_symlink())
            and name.endswith(tuple(suffixes))
            and name not in NOT_DATA
            and (hidden or (not name.startswith(".") and not any(f.startswith((".", "__")) for f in folders)))
        )

    files = sorted(p for p in root.rglob("*") if listed(p))
    if not files:
        raise InputError(f"{printable(str(root))}: no {', '.join(suffixes)} files found")
    return files


SAVED_DATASET_DICT = "dataset_dict.json"  # `datasets` save_to_disk of a DatasetDict: one folder per split
SAVED_DATASET = "state.json"  # `datasets` save_to_disk of a Dataset: lists its Arrow files


def source_files(
    root: Path, config: str | None = None, split: str = "train", data_dir: str | None = None, every_format: bool = False
) -> list[Path]:
    """The files of a local file or folder that make up `split` (and `config`, `data_dir`), as the Hub lays out
    a dataset repository and `datasets` reads it:
    - a folder written by `save_to_disk`: the split's folder (of a DatasetDict) and the Arrow files its
      `state.json` lists, never its metadata files;
    - a folder whose README declares `configs`: the config's files of the split (a config to choose, or one not
      declared, is an error naming those declared);
    - a folder where some supported files are named by split (`data/train_prefs-00000-of-00001.parquet`,
      `train.jsonl`, `eval_clean.jsonl`, `train/`, by `datasets`' own patterns): the split's files, even where
      the folder names one split only (files named by no split are left unread, as `datasets` leaves them); a
      split the folder does not hold is an error naming those it does;
    - any other folder (one split): every supported file under it.
    `data_dir` is a folder inside `root` that all of this applies to. Without configs, only the split's files of
    the format most of them have are read (`one_format`), unless `every_format`."""
    if root.is_file():
        return [root]
    if not root.exists():
        raise InputError(f"{printable(str(root))}: {_not_a_file(root, 'no such file or folder')}")
    if (root / SAVED_DATASET_DICT).is_file():
        splits = json_object(root / SAVED_DATASET_DICT).get("splits") or []
        if split not in splits:
            raise _no_split(root, split, splits)
        root = root / split
    if (root / SAVED_DATASET).is_file():
        listed = json_object(root / SAVED_DATASET).get("_data_files") or []
        files = [root / entry["filename"] for entry in listed if isinstance(entry, dict) and "filename" in entry]
        if not files:
            raise InputError(f"{printable(str(root / SAVED_DATASET))}: lists no data files")
        return files
    base = root / data_dir if data_dir else root
    if not base.is_dir():
        what = f"no such folder (--data-dir {data_dir})" if data_dir else "neither a data file nor a folder"
        raise InputError(f"{printable(str(base))}: {what}")
    configs = card_yaml(root).get("configs")
    if data_dir and isinstance(configs, list) and configs:  # a data_dir is read by the split conventions
        if config is not None:  # but a config named must be one the README declares
            _declared_config(root, configs, config)
        configs = None
    if isinstance(configs, list) and configs:  # its paths are relative to the repository's root
        names = [f.relative_to(root).as_posix() for f in list_files(root, hidden=True)]  # a pattern may name them
        by_split = _config_files(root, configs, config, names)
        if split not in by_split:
            raise _no_split(root, split, [f"{name} ({_example(files)})" for name, files in by_split.items()])
        return [root / name for name in by_split[split]]  # declared: read as declared, whatever their formats
    files = list_files(base)
    by_split = _split_files([f.relative_to(base).as_posix() for f in files])
    if by_split is not None and split not in by_split:
        raise _no_split(root, split, [f"{name} ({_example(files)})" for name, files in by_split.items()])
    found = files if by_split is None else [base / name for name in by_split[split]]  # no split named: one split
    return found if every_format else one_format(found)


# The formats `datasets` infers a folder's reader from, of those read here (`datasets.packaged_modules`), and the
# extensions of each that it keeps once chosen
_FORMAT_OF = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".ndjson": "json"}
_EXTENSIONS_OF = {"parquet": (".parquet", ".geoparquet", ".gpq", ".zip"), "arrow": (".arrow", ".zip"),
                  "json": (".json", ".jsonl", ".ndjson", ".zip")}  # fmt: skip


def leading_extension(files: Sequence[Path]) -> str | None:
    """The extension `datasets` chooses a split's format by (`datasets.load.infer_module_for_data_files_list`):
    the one most of the files carry, every dotted part of a name counted (`a.jsonl.gz`: `.jsonl`), of those read
    here; in a draw the first of `.parquet`, `.arrow`, `.jsonl`, `.json`."""
    counts = Counter(f".{part.lower()}" for f in files for part in f.name.split(".")[1:])
    ranked = sorted((ext for ext in counts if ext in _FORMAT_OF), reverse=True,
                    key=lambda ext: (counts[ext], *(ext == e for e in _FORMAT_OF)))  # fmt: skip
    return ranked[0] if ranked else None


def of_format(path: Path, form: str) -> bool:
    """Whether `datasets` keeps `path` among a split's files of the format `form` (`DataFilesList.filter`)."""
    extensions = "|".join(map(re.escape, _EXTENSIONS_OF[form]))
    return re.fullmatch(rf".*({extensions})(\..+)?", path.name) is not None


def one_format(files: Sequence[Path]) -> list[Path]:
    """The files of a split that `datasets` reads: those of the format of its `leading_extension`. A stray file of
    another format is left unread, as the Hub's loader leaves it, and `files_note` names it."""
    extension = leading_extension(files)
    return [f for f in files if extension is not None and of_format(f, _FORMAT_OF[extension])]


def files_note(
    root: Path, files: Sequence[Path], split: str, other_format: Sequence[Path] = (), named: int = 5
) -> str | None:
    """`read 1 of its 2 data files, ...; not read: a.jsonl` where a split (or config) leaves some of a folder's
    files unread, those of `other_format` (the split's files `one_format` left out) and the tables of a format
    this reader does not take (`UNREAD_SUFFIXES`) named apart, the first `named` of each; else None."""
    if not root.is_dir() or (root / SAVED_DATASET).is_file() or (root / SAVED_DATASET_DICT).is_file():
        return None
    found = list_files(root, (*SUPPORTED_SUFFIXES, *UNREAD_SUFFIXES))  # one walk of the folder for both
    every = [f for f in found if f.name.endswith(SUPPORTED_SUFFIXES)]
    tables = [f for f in found if not f.name.endswith(SUPPORTED_SUFFIXES)]
    if len(files) >= len(every) and not tables:
        return None

    def listing(paths: Sequence[Path]) -> str:
        more = f", and {len(paths) - named} more" if len(paths) > named else ""
        return printable(", ".join(p.relative_to(root).as_posix() for p in paths[:named])) + more

    note = f"{printable(str(root))}: read {len(files)} of its {len(every)} data files"
    read, stray = set(files), set(other_format)
    if unread := [p for p in every if p not in read and p not in stray]:
        note += (f", those of the split {split!r} as the Hub names splits (--split, --config and --data-dir choose "
                 f"others); not read: {listing(unread)}")  # fmt: skip
    if other_format:
        note += (f"; not read, as `datasets` reads a split in one format, that of the extension most of its "
                 f"files carry ({leading_extension(files)}; in a draw the first of .parquet, .arrow, .jsonl, .json): "
                 f"{listing(sorted(stray))}")  # fmt: skip
    if tables:
        note += (f"; not read, of a format this reader does not take (CSV or TSV, which `datasets` reads; convert "
                 f"them to parquet or JSON lines to read them): {listing(tables)}")  # fmt: skip
    return note


def json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; `InputError` naming it when it cannot be read or holds something else."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{printable(str(path))}: cannot read ({exc})") from None
    if not isinstance(found, dict):
        raise InputError(f"{printable(str(path))}: not a JSON object")
    return found


def _example(files: Sequence[str]) -> str:
    """`eval_clean.jsonl` or `data/test-00000-of-00002.parquet and 1 more`: the files a split was named by."""
    if not files:
        return "no files"
    return printable(files[0]) + (f" and {len(files) - 1} more" if len(files) > 1 else "")


def _no_split(root: Path, split: str, splits: Sequence[str]) -> InputError:
    return InputError(f"{printable(str(root))}: holds the splits {', '.join(map(str, splits)) or 'none'}, not "
                      f"{split!r}; choose one with --split (a recipe's `split:`)")  # fmt: skip


def _matching(patterns: Sequence[str], names: Sequence[str]) -> list[str]:
    """The names (paths relative to the folder, `/`-separated) that match any of the glob patterns, a hidden part
    (`.cache/`, `.x.jsonl`) or a folder named `__*` only where the pattern names as many, as `datasets` resolves
    patterns (`data_files._is_unrequested_hidden_file_or_is_inside_unrequested_hidden_dir`)."""
    from fsspec.utils import glob_translate

    def hidden(path: str) -> tuple[int, int]:
        *folders, name = PurePosixPath(path).parts or ("",)
        dotted = sum(p.startswith(".") and set(p) != {"."} for p in (*folders, name))
        return dotted, sum(f.startswith("__") for f in folders)

    compiled = [(re.compile(glob_translate(p.removeprefix("./"))), hidden(p.removeprefix("./"))) for p in patterns]
    counted = {n: hidden(n) for n in names}  # once per name, not once per pattern
    return [n for n in names if any(c.match(n) and counted[n] == parts for c, parts in compiled)]


# How the Hub names the splits of a repository without configs, in the order `datasets` tries them
# (https://huggingface.co/docs/hub/datasets-file-names-and-splits; `datasets.data_files`): sharded files
# `data/<split>-00000-of-00001.<ext>` with any split name, else a split keyword in a folder's name, else in a
# file's name. Written out here, as `datasets` takes a second to import.
SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_SEPARATORS = "-._ 0-9"
_KEYWORD_IN_DIR = ("**/{k}/**", "**/{k}[{s}]*/**", "**/*[{s}]{k}/**", "**/*[{s}]{k}[{s}]*/**")
_KEYWORD_IN_FILE = ("**/{k}[{s}]*", "**/*[{s}]{k}[{s}]*")
_SHARDED = re.compile(r"data/(\w+(?:\.\w+)*)-[0-9]{5}-of-[0-9]{5}[^/]*\.[^/]*")


def _split_files(names: Sequence[str]) -> dict[str, list[str]] | None:
    """The supported files by split as the Hub names splits in a repository without configs, or None where no
    convention applies."""
    sharded: dict[str, list[str]] = {}
    for name in names:
        if match := _SHARDED.fullmatch(name):
            sharded.setdefault(match.group(1), []).append(name)
    if sharded:
        return sharded
    for bases in (_KEYWORD_IN_DIR, _KEYWORD_IN_FILE):
        found = {}
        for split, keywords in SPLIT_KEYWORDS.items():
            matched = _matching([b.format(k=k, s=_SEPARATORS) for k in keywords for b in bases], names)
            if matched:
                found[split] = matched
        if found:
            return found
    return None


def _declared_config(root: Path, configs: list[Any], config: str) -> dict[str, Any]:
    """The README's entry of `config`, refused where the README does not declare it."""
    declared = {str(c.get("config_name")): c for c in configs if isinstance(c, dict) and c.get("config_name")}
    if config not in declared:
        raise InputError(f"{printable(str(root))}: its README declares the configs {', '.join(declared) or 'none'}, "
                         f"not {config!r}")  # fmt: skip
    return declared[config]


def _config_files(root: Path, configs: list[Any], config: str | None, names: Sequence[str]) -> dict[str, list[str]]:
    """The files by split of the README config `config` (else the default one, or the only one)."""
    declared = {str(c.get("config_name")): c for c in configs if isinstance(c, dict) and c.get("config_name")}
    if config is None:  # the one marked default, else one named "default", else the only one
        marked = [name for name, c in declared.items() if c.get("default")]
        unnamed = ["default"] if "default" in declared else list(declared) if len(declared) == 1 else []
        if not marked + unnamed:
            raise InputError(f"{printable(str(root))}: its README declares the configs {', '.join(declared)}; "
                             "choose one with --config (a recipe's `config:`)")  # fmt: skip
        config = (marked + unnamed)[0]
    entry = _declared_config(root, configs, config)
    data_files = entry.get("data_files")
    where = f"{printable(str(root / 'README.md'))}: config {config!r}"
    if entry.get("data_dir") is not None and not isinstance(entry["data_dir"], str):
        raise InputError(f"{where}: data_dir is not a folder name ({entry['data_dir']!r})")
    prefix = f"{entry['data_dir'].strip('/')}/" if entry.get("data_dir") else ""
    inside = [n.removeprefix(prefix) for n in names if n.startswith(prefix)]
    if data_files is None:  # a config of a folder: the split conventions inside it
        found = _split_files(inside) or {"train": _matching(["**"], inside)}
        return {split: [prefix + n for n in matched] for split, matched in found.items()}
    if isinstance(data_files, (str, list)) and not (isinstance(data_files, list) and data_files
                                                     and isinstance(data_files[0], dict)):  # fmt: skip
        data_files = [{"split": "train", "path": data_files}]
    by_split: dict[str, list[str]] = {}
    for item in data_files if isinstance(data_files, list) else []:
        if not isinstance(item, dict):
            continue
        paths, split = item.get("path") or [], str(item.get("split", "train"))
        patterns = [paths] if isinstance(paths, str) else paths
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise InputError(f"{where}: the split {split!r} has a path that is not a file pattern ({paths!r})")
        matched = _matching(patterns, inside)
        if not matched:  # `datasets` refuses such a split too
            raise InputError(f"{where}: the split {split!r} is {', '.join(patterns)}, which matches no file of a "
                             f"supported type ({', '.join(SUPPORTED_SUFFIXES)})")  # fmt: skip
        by_split.setdefault(split, []).extend(prefix + n for n in matched)
    return by_split


def card_yaml(root: Path) -> dict[str, Any]:
    """The metadata `datasets` reads a repository's configs from: the YAML block its README starts with (a UTF-8
    byte-order mark or blank lines before it allowed, as `huggingface_hub` finds it), each top-level key of
    `.huggingface.yaml` over the README's; {} where there is none or it is not a mapping."""
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    def mapping(text: str | None) -> dict[str, Any]:
        try:
            found = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            return {}
        return found if isinstance(found, dict) else {}

    def read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            return None

    readme = read(root / "README.md")
    block = REGEX_YAML_BLOCK.search(readme) if readme else None
    return mapping(block.group(2) if block else None) | mapping(read(root / ".huggingface.yaml"))


def iter_file(path: Path, name: str | None = None, columns: Sequence[str] | None = None) -> Iterator[Record]:
    """Rows of one local file; `name` is how refs spell the file (defaults to its file name). A file that cannot
    be read at all raises `InputError`."""
    name = printable(name or path.name)
    shown = printable(str(path))
    if not path.is_file():
        raise InputError(f"{shown}: {_not_a_file(path)}")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{shown}: file is empty")
        if path.name.endswith(JSON_LINES_SUFFIXES):
            yield from _iter_jsonl(path, name)
        elif path.name.endswith(JSON_SUFFIXES):
            yield from _iter_json(path, name)
        elif path.name.endswith(".parquet"):
            yield from _iter_parquet(path, name, columns)
        elif path.name.endswith(".arrow"):
            yield from _iter_arrow(path, name, columns)
        else:
            raise InputError(f"{shown}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})")
    except OSError as exc:  # unreadable (permissions, I/O errors): the file, not a row
        raise InputError(f"{shown}: cannot read ({exc.strerror or exc})") from exc


def _not_a_file(path: Path, missing: str = "no such file") -> str:
    """Why `path`, which `is_file` denies, cannot be read as a file (`missing`: what to say where nothing is)."""
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return "a link to nothing" if path.is_symlink() else missing
    except (OSError, RuntimeError) as exc:  # a link loop (RuntimeError before Python 3.13)
        return f"cannot be resolved ({exc})"
    return "a folder, not a file" if path.is_dir() else "not a regular file (a FIFO, a socket or a device)"


def iter_file_isolated(path: Path, name: str, columns: Sequence[str] | None = None) -> Iterator[Record]:
    """`iter_file` for one file of several: a file that cannot be read at all becomes one reject (`name:0+`),
    after any rows it gave, so the other files are still read."""
    read = 0
    try:
        for record in iter_file(path, name, columns):
            read += 1
            yield record
    except InputError as exc:
        ref = f"{printable(name)}:{read}+"  # rows before a failure part way were read (`read` of them)
        yield Record(ref, None, RowError("unreadable file", f"{ref}: {exc}"))


def iter_local(root: Path, columns: Sequence[str] | None = None, files: list[Path] | None = None) -> Iterator[Record]:
    """Rows of a local file, or of `files` under a folder (default: every supported file)."""
    files = list_files(root) if files is None else files
    if root.is_file():
        yield from iter_file(root, root.name, columns)
        return
    for path in files:
        yield from iter_file_isolated(path, path.relative_to(root).as_posix(), columns)


def iter_hub(
    hub_id: str,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    columns: Sequence[str] | None = None,
    data_dir: str | None = None,
    data_files: str | None = None,
) -> Iterator[Record]:
    """Stream a Hub dataset without decoding images (bytes stay bytes); no remote code is run. A stream that
    breaks part way keeps the rows read and becomes one reject for the rest (`split:N+`). `data_files` reads
    one file of the repository (as the split `train`) instead of a config."""
    import datasets  # imported lazily: only Hub reads need it
    from huggingface_hub.utils import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # its retries are not the one error line
    try:
        ds = datasets.load_dataset(
            hub_id, name=config, split=split, revision=revision, data_dir=data_dir, data_files=data_files,
            streaming=True,
        )  # fmt: skip
    except Exception as exc:  # the Hub client raises many types; the message is what the user needs
        # `owner/name` whose owner is a local folder: most likely a local path mistyped
        local = f"no local path {hub_id} (its folder {Path(hub_id).parent} exists), and " if Path(
            hub_id
        ).parent.is_dir() else ""  # fmt: skip
        hint = (f"; without a network, download it (`hf download {hub_id} --repo-type dataset --local-dir DIR`) and "
                "give DIR in its place") if not local else ""  # fmt: skip
        raise HubUnreadable(
            f"{hub_id}: {local}cannot open on the Hugging Face Hub ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    finally:
        hub_logging.set_verbosity(verbosity)
    if columns is not None:
        ds = ds.select_columns([c for c in columns if c in (ds.column_names or columns)])
    index = 0
    try:
        for row in ds.decode(False):
            yield Record(f"{split}:{index}", dict(row))
            index += 1
    except (pa.ArrowException, ValueError, TypeError, KeyError) as exc:  # damaged data: what was read is kept
        tail = f"{split}:{index}+"
        yield Record(tail, None, RowError("unreadable rows", f"{tail}: {type(exc).__name__}: {exc}"))
    except Exception as exc:  # the connection, not the data: a partial source is not published as complete
        raise InputError(f"{hub_id}: reading stopped at row {index} ({type(exc).__name__}: {exc}); run again") from exc


def iter_location(
    location: str,
    *,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    columns: Sequence[str] | None = None,
    data_dir: str | None = None,
    files: list[Path] | None = None,
    data_files: str | None = None,
) -> Iterator[Record]:
    """Rows of a local file or folder (`files`: those of it to read, when already listed), or of a Hub dataset id
    when no such local path exists (`data_files`: the repository's file to read instead of its config)."""
    if is_hub_id(location):
        yield from iter_hub(location, config=config, split=split, revision=revision, columns=columns,
                            data_dir=data_dir, data_files=data_files)  # fmt: skip
    else:
        listed = files if files is not None else source_files(Path(location), config, split, data_dir)
        yield from iter_local(Path(location), columns, listed)


# -- JSON --------------------------------------------------------------------------------------------------------
def _field_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _unreadable_field(value: Any) -> tuple[str, str] | None:
    """(reason, field path) of the first string holding a lone surrogate, or of nesting beyond `MAX_DEPTH`."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return "malformed json", f"{path or 'row'}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return "invalid unicode", f"field '{printable(path)}': text with a lone surrogate"
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return "invalid unicode", f"key '{printable(_field_path(path, key))}': a lone surrogate"
                stack.append((child, _field_path(path, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{k}]", depth + 1) for k, child in enumerate(item))
    return None


class KeysOnce:
    """A `json` `object_pairs_hook` that builds each object as `json` does and notes the first key an object
    gives twice: Python's parser would keep the last value silently, while pyarrow, DuckDB and `datasets` (the
    Hub's readers) refuse the whole file. Such a row is a reject instead."""

    def __init__(self) -> None:
        self.twice: str | None = None

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) != len(pairs) and self.twice is None:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.twice = key
                    break
                seen.add(key)
        return value


def json_value(text: str) -> tuple[Any, str | None]:
    """The JSON value of `text` and the first key an object in it gives twice (None: none)."""
    keys = KeysOnce()
    return json.loads(text, object_pairs_hook=keys), keys.twice


def _json_row(
    value: Any, ref: str, text: str, start: int = 0, end: int | None = None, raw: bool = False, twice: str | None = None
) -> Record:
    """A parsed JSON value as a row, checked for what later steps cannot write (surrogates, depth) and for a key
    given twice (`twice`). `text[start:end]` is its JSON text; `raw` says the text may hold surrogates itself
    (undecodable bytes kept as such)."""
    if not isinstance(value, dict):
        return Record(ref, None, RowError("not a json object", f"{ref}: got {type(value).__name__}"))
    if twice is not None:
        return Record(
            ref, None, RowError("malformed json", f"{ref}: key '{printable(twice)}' given twice in an object")
        )
    # Depth needs as many brackets as levels; most rows have far fewer, and no surrogate escape.
    end = len(text) if end is None else end
    escape = _SURROGATE_ESCAPE.search(text, start, end) is not None
    if raw or escape or text.count("[", start, end) + text.count("{", start, end) > MAX_DEPTH:
        found = _unreadable_field(value)
        if found is not None:
            return Record(ref, None, RowError(found[0], f"{ref}: {found[1]}"))
    return Record(ref, value)


def _json_error(exc: Exception, ref: str) -> Record:
    if isinstance(exc, json.JSONDecodeError):
        detail = f"column {exc.colno}: {exc.msg}"
    elif isinstance(exc, RecursionError):
        detail = "nested too deeply to parse"
    elif "integer string conversion" in str(exc):  # beyond Python's digit limit for int()
        detail = f"a number of more than {sys.get_int_max_str_digits()} digits"
    else:
        detail = printable(str(exc))
    return Record(ref, None, RowError("malformed json", f"{ref}: {detail}"))


def _parse_json_line(raw: bytes, ref: str) -> Record:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(ref, None, RowError("invalid utf-8", f"{ref}: byte {exc.start}: {exc.reason}"))
    try:
        value, twice = json_value(text)
    except (ValueError, RecursionError) as exc:
        return _json_error(exc, ref)
    return _json_row(value, ref, text, twice=twice)


def _lines(handle: Iterable[bytes]) -> Iterator[bytes]:
    """Lines as a text editor splits them (LF, CRLF, or a lone CR), without their ends. JSON never holds a raw
    CR inside a value, so a CR within a line always ends one."""
    for raw in handle:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        if b"\r" in line:
            yield from line.split(b"\r")
        else:
            yield line


def _utf16_as_utf8(handle: Any) -> Iterator[bytes]:
    for line in io.TextIOWrapper(handle, encoding="utf-16", errors="surrogateescape", newline=""):
        yield line.encode("utf-8", "surrogateescape")


def _iter_jsonl(path: Path, name: str) -> Iterator[Record]:
    line_no = 0
    yielded = 0
    opened = _open_decompressed(path)  # outside the `try`: a file that cannot be opened is refused whole (`iter_file`)
    try:
        with opened as handle:
            utf16 = handle.peek(2)[:2] in _UTF16_BOMS  # type: ignore[attr-defined]
            for line_no, line in enumerate(_lines(_utf16_as_utf8(handle) if utf16 else handle)):
                if line_no == 0:
                    line = line.removeprefix(_UTF8_BOM)
                if not line.strip():
                    continue  # blank lines (a trailing newline) are not rows
                yielded += 1
                yield _parse_json_line(line, f"{name}:{line_no}")
    except (*DECOMPRESSION_ERRORS, UnicodeDecodeError) as exc:
        # A truncated or corrupt compressed stream, or UTF-16 cut inside a character: what was read is kept; the
        # unreadable tail is one reject. (A bz2 stream that is not one is an OSError; a file that cannot be opened
        # is refused above.)
        tail = f"{name}:{line_no + 1 if yielded else 0}+"
        detail = f"{printable(str(path))}: unreadable from line {tail}: {exc}"
        yield Record(tail, None, RowError("truncated file", detail))
        return
    if not yielded:
        raise InputError(f"{printable(str(path))}: file has no rows")


# A truncated or corrupt compressed stream (a bz2 stream that is not one is an OSError)
DECOMPRESSION_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError, lzma.LZMAError, zstandard.ZstdError)


def _open_decompressed(path: Path) -> io.BufferedReader:
    """A file's bytes, decompressed as its name says (.gz, .bz2, .xz, .zst), readable and peekable."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    decompressors: dict[str, Callable[[], Any]] = {
        ".bz2": bz2.BZ2Decompressor,
        ".xz": lzma.LZMADecompressor,
        ".zst": lambda: zstandard.ZstdDecompressor().decompressobj(),
    }
    for suffix, decompressor in decompressors.items():
        if path.name.endswith(suffix):
            return io.BufferedReader(_Streams(open(path, "rb"), decompressor))
    return open(path, "rb")


def _decompressed(path: Path) -> bytes:
    """A file's whole content, decompressed; of a compressed file cut short or corrupt, the bytes before the damage."""
    chunks = []
    with contextlib.suppress(*DECOMPRESSION_ERRORS), _open_decompressed(path) as handle:
        while block := handle.read1(1 << 16):  # a read that fails loses only its own bytes
            chunks.append(block)
    return b"".join(chunks)


class _Streams(io.RawIOBase):
    """The decompressed bytes of a file of one or more compressed streams (bz2, xz or zstd frames, one after the
    other). Bytes after a stream that do not start another, or a stream cut short, raise (zstandard's own reader
    ends quietly at a cut; Python's bz2 and lzma readers drop what follows the last stream)."""

    def __init__(self, raw: io.BufferedReader, decompressor: Callable[[], Any]) -> None:
        self.raw, self.new, self.frame = raw, decompressor, decompressor()
        self.pending, self.started = b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            data = self.frame.unused_data if self.frame.eof else self.raw.read(1 << 16)
            if self.frame.eof:  # the next stream, if any, starts in what the last one left
                self.frame, self.started = self.new(), False
                data = data or self.raw.read(1 << 16)
            if not data:
                if self.started:
                    raise EOFError("compressed file ended before the end of its stream")
                return 0
            self.started = True
            self.pending = self.frame.decompress(data)
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _iter_json(path: Path, name: str) -> Iterator[Record]:
    # A .json file is a JSON array of objects (POVID, LLaVA-RLHF) or, as often on the Hub, json lines.
    with _open_decompressed(path) as handle:
        head = handle.peek(1024)[:1024]
    encoding = "utf-16" if head[:2] in _UTF16_BOMS else "utf-8-sig"
    if not head.decode(encoding, errors="ignore").lstrip(_JSON_SPACE).startswith("["):
        whole = _one_object(path, encoding)
        if whole is not None:  # one object written over several lines: one row (row 0, as on one line)
            yield _json_row(whole[0], f"{name}:0", whole[1], twice=whole[2])
            return
        yield from _iter_jsonl(path, name)
        return
    # Undecodable bytes are kept as surrogates, so that only the rows holding them are rejected. A compressed file
    # cut short gives the bytes before the cut: the array's elements up to there, then one reject for the rest.
    yield from _iter_json_array(_decompressed(path).decode(encoding, errors="surrogateescape"), path, name)


def _one_object(path: Path, encoding: str) -> tuple[Any, str, str | None] | None:
    """The file's one JSON object, its text and the first key it gives twice, where the file is one object spread
    over several lines (a pretty-printed .json) rather than JSON lines; None otherwise."""
    with _open_decompressed(path) as handle:
        first = handle.readline(1 << 20)
    if encoding != "utf-8-sig" or first.strip() not in (b"{", b"\xef\xbb\xbf{"):
        return None  # a pretty-printed object opens with a line of its own; anything else is read line by line
    if path.stat().st_size > MAX_ONE_OBJECT_BYTES:
        return None
    try:
        text = _decompressed(path).decode(encoding)
        value, twice = json_value(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # not one object either: read line by line, each bad line a reject
    return (value, text, twice) if isinstance(value, dict) else None


_JSON_SPACE = " \t\n\r"
MAX_ONE_OBJECT_BYTES = 256 << 20  # a larger .json that is not an array is read as JSON lines
_SPACE = re.compile(r"[ \t\n\r]*")


def _iter_json_array(text: str, path: Path, name: str) -> Iterator[Record]:
    """The elements of a JSON array one at a time: a malformed element ends the array there (one reject for the
    rest, `file:index+`), and the elements before it are kept."""
    keys = KeysOnce()
    decoder = json.JSONDecoder(object_pairs_hook=keys)
    raw = bool(_SURROGATE.search(text))  # undecodable bytes somewhere: each element is searched
    pos = _SPACE.match(text, 0).end() + 1  # type: ignore[union-attr]  # past '['
    index = 0
    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith("]", pos) and index == 0:
            raise InputError(f"{printable(str(path))}: file has no rows")
        keys.twice = None
        try:
            value, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            tail = f"{name}:{index}+"
            error = _json_error(exc, tail).error
            assert error is not None
            yield Record(tail, None, RowError("truncated file", f"{error.detail}; elements from here on unread"))
            return
        ref = f"{name}:{index}"
        yield _json_row(value, ref, text, pos, end, raw, keys.twice)
        index += 1
        pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", pos):
            pos += 1
        elif text.startswith("]", pos):
            rest = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
            if rest < len(text):  # a second array, or garbage: not silently dropped
                tail = f"{name}:{index}+"
                detail = f"{tail}: data after the array's end, at character {rest}; not read"
                yield Record(tail, None, RowError("truncated file", detail))
            return
        else:
            tail = f"{name}:{index}+"
            yield Record(tail, None, RowError("truncated file", f"{tail}: expected ',' or ']' at character {pos}"))
            return


# -- Arrow tables ------------------------------------------------------------------------------------------------
def table_record(batch: pa.RecordBatch, index: int, ref: str) -> Record:
    """Row `index` of `batch`; a value Python cannot hold (a string that is not valid UTF-8) makes it a reject
    naming the field."""
    try:
        return Record(ref, batch.slice(index, 1).to_pylist()[0])
    except (UnicodeDecodeError, ValueError, pa.ArrowException) as exc:
        for field_name, column in zip(batch.schema.names, batch.columns, strict=True):
            try:
                column[index].as_py()
            except (UnicodeDecodeError, ValueError, pa.ArrowException) as inner:
                reason = "invalid utf-8" if isinstance(inner, UnicodeDecodeError) else "unreadable value"
                return Record(ref, None, RowError(reason, f"{ref}: field '{field_name}': {inner}"))
        return Record(ref, None, RowError("unreadable value", f"{ref}: {exc}"))


def _batch_records(batch: pa.RecordBatch, name: str, first: int) -> Iterator[Record]:
    try:
        rows = batch.to_pylist()
    except (UnicodeDecodeError, ValueError, pa.ArrowException):  # one bad value: find it row by row
        for k in range(batch.num_rows):
            yield table_record(batch, k, f"{name}:{first + k}")
        return
    for k, row in enumerate(rows):
        yield Record(f"{name}:{first + k}", row)


def _iter_parquet(path: Path, name: str, columns: Sequence[str] | None) -> Iterator[Record]:
    """Row group by row group: a group that cannot be decoded (a corrupt page) makes each of its unread rows a
    reject naming the group, and the next groups are read."""
    try:
        parquet = pq.ParquetFile(path)
    except DAMAGED as exc:
        raise InputError(f"{printable(str(path))}: not a readable parquet file ({printable(str(exc))})") from exc
    with parquet:
        if columns is not None:
            columns = [c for c in columns if c in parquet.schema_arrow.names]
        first = 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            done = 0
            cause = None
            try:
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=columns):
                    yield from _batch_records(batch, name, first + done)
                    done += batch.num_rows
            except DAMAGED as exc:
                cause = " ".join(str(exc).split())
            if done < size:  # a damaged page can also end a group early without an error
                span = f"row group {group} (rows {first}-{first + size - 1}, {size} rows)"
                cause = cause or f"it gave {done} of its {size} rows"
                for row in range(first + done, first + size):
                    ref = f"{name}:{row}"
                    yield Record(ref, None, RowError("unreadable row group", f"{ref}: {span}: {cause}"))
            first += size


def _iter_arrow(path: Path, name: str, columns: Sequence[str] | None) -> Iterator[Record]:
    # `datasets` writes the Arrow IPC stream format; other tools write the file format.
    source = pa.memory_map(str(path))
    try:
        reader: Any = ipc.open_file(source)
        batches: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except DAMAGED:
        try:
            reader = ipc.open_stream(pa.memory_map(str(path)))
        except DAMAGED as exc:
            raise InputError(f"{printable(str(path))}: not a readable Arrow file ({printable(str(exc))})") from exc
        batches = iter(reader)
    keep = None if columns is None else [c for c in columns if c in reader.schema.names]
    first = 0
    try:
        for batch in batches:
            batch.validate(full=True)  # converting a damaged batch can crash the process, not only raise
            yield from _batch_records(batch if keep is None else batch.select(keep), name, first)
            first += batch.num_rows
    except DAMAGED as exc:  # a damaged batch: what was read is kept
        tail = f"{name}:{first}+"
        yield Record(tail, None, RowError("truncated file", f"{tail}: unreadable from here on: {exc}"))
