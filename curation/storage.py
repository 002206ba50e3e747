"""Object-store locations (`s3://`, `gs://`, and any URI pyarrow's file systems open) for a recipe's sources and
images and for a build's output, on either engine.

A source at a URI is copied into the build's work folder by whoever ingests it (on a cluster, the task on the node
that runs it, which reads it from the store) and ingested there as a local one: its rows' refs name the same files.
A build whose `--out` is a URI is written to a local staging folder, then uploaded with `manifest.json` last, so a
reader that finds the manifest finds every file it lists; a URI that already holds a manifest is refused.
Credentials come from the environment, as each file system reads them (`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`);
a URI that holds them (`s3://KEY:SECRET@bucket`, `?secret_key=`) is refused, as it would be printed and written.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from curation.errors import InputError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Query parameters of pyarrow's file system URIs that carry credentials.
_SECRET_PARAMETERS = {"access_key", "secret_key", "session_token", "password", "token", "credentials"}


def is_uri(location: str | Path | None) -> bool:
    return location is not None and bool(_URI.match(str(location)))


def check_uri(uri: str) -> None:
    """Refuse a URI that holds credentials: every message and the manifest would show them."""
    parts = urlsplit(uri)
    query = {key.lower() for key, _ in parse_qsl(parts.query)}
    if parts.username or parts.password or query & _SECRET_PARAMETERS:
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        raise InputError(
            f"{shown}: the URI holds credentials, which would be printed and written; give them in the environment "
            "instead (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...)"
        )


def open_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    check_uri(uri)
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


def check_exists(uri: str) -> None:
    fs, path = open_uri(uri)
    _info(fs, path, uri)


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


def check_destination(uri: str) -> None:
    """Refuse an `--out` URI that holds a build, or files of an interrupted upload (they would mix with the new
    build's)."""
    fs, path = open_uri(uri)
    try:
        found = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), allow_not_found=True, recursive=True))
    except OSError as exc:
        raise InputError(f"{uri}: cannot read ({exc})") from None
    files = [f for f in found if f.type == pafs.FileType.File]
    if any(PurePosixPath(f.path).name == "manifest.json" for f in files):
        raise InputError(f"{uri}: already holds a build (manifest.json); choose another --out or remove it")
    if files:
        raise InputError(
            f"{uri}: holds {len(files)} files but no manifest.json (an interrupted upload?); remove them or choose "
            "another --out"
        )


def upload(folder: Path, uri: str) -> None:
    """Copy a finished build folder to `uri`, `manifest.json` last; after a failure, the files copied so far are
    deleted (as far as the store allows), so no half build stays under the URI."""
    fs, root = open_uri(uri)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == "manifest.json" and p.parent == folder)  # stable: the manifest goes last
    local = pafs.LocalFileSystem()
    written: list[str] = []
    try:
        for path in files:
            target = f"{root.rstrip('/')}/{path.relative_to(folder).as_posix()}"
            if fs.type_name == "local":  # an object store needs no folders (it would make empty marker objects)
                fs.create_dir(str(PurePosixPath(target).parent), recursive=True)
            written.append(target)
            pafs.copy_files(str(path), target, source_filesystem=local, destination_filesystem=fs)
    except BaseException as exc:
        for target in written:
            with contextlib.suppress(OSError):  # the one being copied may not exist
                fs.delete_file(target)
        with contextlib.suppress(OSError):
            left = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
            if not any(f.type == pafs.FileType.File for f in left):
                fs.delete_dir(root)  # the folders made on the way
        if isinstance(exc, OSError):
            raise InputError(f"{uri}: cannot write ({exc}); the finished build stays in {folder}") from None
        raise
