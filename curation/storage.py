"""Object-store locations (`s3://`, `gs://`, and any URI pyarrow's file systems open) for a recipe's sources and
images and for a build's output, on either engine.

A source at a URI is copied into the build's work folder by whoever ingests it (on a cluster, the task on the node
that runs it, which reads it from the store) and ingested there as a local one: its rows' refs name the same files.
A build whose `--out` is a URI is written to a local staging folder, then uploaded with `manifest.json` last, so a
reader that finds the manifest finds every file it lists; a URI that already holds a manifest is refused.
Credentials come from the environment, as each file system reads them (`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`);
nothing here logs or stores them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from curation.errors import InputError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str | Path | None) -> bool:
    return location is not None and bool(_URI.match(str(location)))


def open_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise InputError(f"{uri}: cannot open ({exc})") from None


def _info(fs: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise InputError(f"{uri}: cannot read ({exc})") from None
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{uri}: no such file or folder")
    return info


def listing(uri: str) -> dict[str, Any]:
    """What the manifest records of an input at a URI: each file's size and modification time (a store's files
    are not read twice to hash them)."""
    fs, path = open_uri(uri)
    info = _info(fs, path, uri)
    found = [info] if info.type == pafs.FileType.File else fs.get_file_info(pafs.FileSelector(path, recursive=True))
    base = PurePosixPath(path).parent if info.type == pafs.FileType.File else PurePosixPath(path)
    files = {
        PurePosixPath(f.path).relative_to(base).as_posix(): {"bytes": f.size, "mtime": str(f.mtime)}
        for f in sorted(found, key=lambda f: f.path)
        if f.type == pafs.FileType.File
    }
    return {"uri": uri, "files": files}


def download(uri: str, into: Path) -> Path:
    """Copy the file or folder at `uri` into the fresh folder `into`, under its own name; returns the local copy."""
    fs, path = open_uri(uri)
    info = _info(fs, path, uri)
    shutil.rmtree(into, ignore_errors=True)  # what an interrupted copy left
    target = into / (PurePosixPath(path).name or "input")
    local = pafs.LocalFileSystem()
    try:
        if info.type == pafs.FileType.File:
            copies = [(path, target)]
        else:
            found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            copies = [(f.path, target / PurePosixPath(f.path).relative_to(path).as_posix())
                      for f in found if f.type == pafs.FileType.File]  # fmt: skip
        for source, copy in copies:
            copy.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(source, str(copy), source_filesystem=fs, destination_filesystem=local)
    except OSError as exc:
        raise InputError(f"{uri}: cannot read ({exc})") from None
    return target


def build_exists(uri: str) -> bool:
    fs, path = open_uri(uri)
    try:
        return fs.get_file_info(f"{path.rstrip('/')}/manifest.json").type != pafs.FileType.NotFound
    except OSError as exc:
        raise InputError(f"{uri}: cannot read ({exc})") from None


def upload(folder: Path, uri: str) -> None:
    """Copy a finished build folder to `uri`, `manifest.json` last."""
    fs, root = open_uri(uri)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == "manifest.json" and p.parent == folder)  # stable: the manifest goes last
    local = pafs.LocalFileSystem()
    try:
        for path in files:
            target = f"{root.rstrip('/')}/{path.relative_to(folder).as_posix()}"
            fs.create_dir(str(PurePosixPath(target).parent), recursive=True)
            pafs.copy_files(str(path), target, source_filesystem=local, destination_filesystem=fs)
    except OSError as exc:
        raise InputError(f"{uri}: cannot write ({exc}); the finished build stays in {folder}") from None
