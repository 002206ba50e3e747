"""Content-addressed images: decode once to check them, keep the original bytes once per sha256.

Images arrive as bytes (parquet `{bytes, path}` structs, Hub rows), as paths relative to an images root
(a folder or a zip archive), or as a folder of video frames. Anything that cannot be found or decoded,
or that is larger than the pixel limit (decompression bombs), raises `RowError` so the row becomes a reject.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from curation.errors import InputError, RowError

# Pillow's own bomb threshold (89.5 MP) is far above anything a VLM is trained on; 50 MP is still generous.
DEFAULT_MAX_PIXELS = 50_000_000
# No image a VLM trains on needs more bytes than this (50 MP as uncompressed RGB is 150 MB).
MAX_IMAGE_BYTES = 256 * 2**20
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
NO_ROOT = "no images root given: --images-root, or images_root in a recipe"  # said where an image is not found


@dataclass(frozen=True)
class ImageRow:
    sha256: str
    bytes: bytes
    width: int
    height: int
    format: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "bytes": self.bytes,
            "width": self.width,
            "height": self.height,
            "format": self.format,
        }


# Pillow's own decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, about 89 million pixels) is process-wide: opening
# an image (which reads its header only) lifts it while holding this lock, so that `max_pixels`, checked on the
# header's size before anything is decoded, is the one limit. Decoding runs outside the lock.
_OPENING = threading.Lock()


def decode_image(data: bytes, origin: str, max_pixels: int = DEFAULT_MAX_PIXELS, sha256: str | None = None) -> ImageRow:
    """Check that `data` is a complete, decodable image within `max_pixels`; return its table row (`sha256`:
    the bytes' digest when the caller has it already)."""
    if not data:
        raise RowError("image undecodable", f"{origin}: empty image bytes")
    try:
        with _OPENING:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                opened = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        with opened as image:
            width, height = image.size
            if width * height > max_pixels:
                raise RowError("image too large", f"{origin}: {width}x{height} exceeds {max_pixels} pixels")
            image.load()  # full decode: catches truncated and corrupt files that open() accepts
            fmt = (image.format or "unknown").lower()
    except RowError:
        raise
    except Image.DecompressionBombError as exc:  # a GIF's frames, checked again as they decode, outside the lock
        raise RowError("image too large", f"{origin}: {exc}") from exc
    except UnidentifiedImageError:
        # Pillow's own message names a memory address, which would make rejects differ between runs.
        raise RowError("image undecodable", f"{origin}: not a recognised image format") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise RowError("image undecodable", f"{origin}: {type(exc).__name__}: {exc}") from exc
    return ImageRow(sha256 or hashlib.sha256(data).hexdigest(), data, width, height, fmt)


class ImagesRoot:
    """Files referenced by relative path, under a folder or inside a zip archive."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._zip: zipfile.ZipFile | None = None
        self._zip_names: dict[str, str] = {}  # normalized name -> the archive's own member name
        self._basenames: dict[str, str] | None = None
        self._zip_folders: set[str] | None = None  # the folders the archive's names lie in, made on first use
        if root is None:
            return
        if not root.exists():
            raise InputError(f"{root}: images root does not exist")
        if root.is_file():
            if not zipfile.is_zipfile(root):
                raise InputError(f"{root}: images root must be a folder or a zip archive")
            try:
                self._zip = zipfile.ZipFile(root)
            except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError) as exc:
                raise InputError(f"{root}: images root is a damaged zip archive ({exc})") from None
            # Members whose own name escapes the archive (`../x`, `a/../../x`, `/x`) are never served.
            normal = {n: _contained(n) for n in self._zip.namelist() if not n.endswith("/")}
            self._zip_names = {name: member for member, name in normal.items() if name is not None}

    def holds(self, rel: str) -> bool:
        """Whether `rel` names a file or a folder inside the root."""
        name = None if self.root is None else _contained(self._clean(rel))
        if name is None:
            return False
        if self._zip is not None:
            if self._zip_folders is None:
                self._zip_folders = {str(p) for n in self._zip_names for p in PurePosixPath(n).parents}
            return name in self._zip_names or name in self._zip_folders
        assert self.root is not None
        try:
            path = (self.root / name).resolve()
            return path.is_relative_to(self.root.resolve()) and path.exists()
        except (OSError, RuntimeError, ValueError):  # a link loop, a name too long or holding a NUL: not held
            return False

    @staticmethod
    def _clean(rel: str) -> str:
        return PurePosixPath(rel.replace("\\", "/").lstrip("/")).as_posix().removeprefix("./")

    def read(self, rel: str, by_basename: bool = False) -> bytes:
        """Bytes of the file at `rel`; with `by_basename`, fall back to a unique file of the same name."""
        if self.root is None:
            raise RowError("image not found", f"{rel} ({NO_ROOT})")
        if not rel.strip():
            raise RowError("image not found", f"{rel!r} (an empty name)")
        clean = self._clean(rel)
        # A name that escapes the root is never looked up; only the basename fallback (inside the root) applies.
        name = _contained(clean)
        if name is not None and self._zip is not None and name in self._zip_names:
            member = self._zip.getinfo(self._zip_names[name])
            return _read_checked(rel, member.file_size, lambda: self._zip.read(member))  # type: ignore[union-attr]
        linked_out = False  # a name inside the root whose link leads out of it
        if name is not None and self._zip is None:
            path = _resolved(rel, self.root / name)
            linked_out = not path.is_relative_to(self.root.resolve())
            if not linked_out and _exists_as(rel, path):
                return _read_checked(rel, path.stat().st_size, path.read_bytes)
        if by_basename:
            found = self._by_basename().get(PurePosixPath(name or clean).name)
            if found is not None:
                return self.read(found)
        if name is None:
            raise RowError("image not found", f"{rel} (outside the images root)")
        raise RowError("image not found", f"{rel} (a link to outside the images root)" if linked_out else rel)

    def frames(self, rel_dir: str) -> list[str]:
        """Relative paths of the frame images in a folder, in name order (video as frames)."""
        if self.root is None:
            raise RowError("image not found", f"{rel_dir} ({NO_ROOT})")
        folder_name = _contained(self._clean(rel_dir))
        if folder_name is None:
            raise RowError("image not found", f"{rel_dir} (outside the images root)")
        prefix = "" if folder_name == "." else folder_name + "/"
        if self._zip is not None:
            names = [n for n in self._zip_names if n.startswith(prefix) and "/" not in n[len(prefix) :]]
        else:
            folder = _resolved(rel_dir, self.root / prefix)
            if not folder.is_relative_to(self.root.resolve()) or not _exists_as(rel_dir, folder, folder=True):
                raise RowError("image not found", rel_dir)
            names = [prefix + p.name for p in folder.iterdir() if p.is_file()]
        names = sorted(n for n in names if n.lower().endswith(FRAME_SUFFIXES))
        if not names:
            raise RowError("image not found", f"{rel_dir} (no frames)")
        return names

    def _by_basename(self) -> dict[str, str]:
        if self._basenames is None:
            assert self.root is not None
            if self._zip is not None:
                names = sorted(self._zip_names)
            else:
                names = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
            counts: dict[str, int] = {}
            for n in names:
                counts[PurePosixPath(n).name] = counts.get(PurePosixPath(n).name, 0) + 1
            # Ambiguous basenames are left out: resolving them would pick an arbitrary file.
            self._basenames = {PurePosixPath(n).name: n for n in names if counts[PurePosixPath(n).name] == 1}
        return self._basenames


def _resolved(rel: str, path: Path) -> Path:
    """`path`'s real path; a name that cannot be one (a NUL in it, too long, a link loop) makes its row a reject."""
    try:
        return path.resolve()
    except ValueError:  # an embedded NUL
        raise RowError("image not found", f"{rel!r}: not a file name (it holds a NUL)") from None
    except (OSError, RuntimeError) as exc:  # a link loop (RuntimeError before Python 3.13), a name too long
        raise RowError("image unreadable", f"{rel}: {type(exc).__name__}: {exc}") from None


def _exists_as(rel: str, path: Path, folder: bool = False) -> bool:
    """Whether `path` is a file (`folder`: a folder); a name the file system refuses makes its row a reject."""
    try:
        return path.is_dir() if folder else path.is_file()
    except OSError as exc:  # a name too long, say (they answer False only for a missing file or a loop)
        raise RowError("image unreadable", f"{rel}: {type(exc).__name__}: {exc}") from None


def _read_checked(rel: str, size: int, read: Callable[[], bytes]) -> bytes:
    """An image file's bytes, refused beyond `MAX_IMAGE_BYTES` before reading (a zip member can expand to far
    more than the archive holds); a file that cannot be read makes its row a reject."""
    if size > MAX_IMAGE_BYTES:
        raise RowError("image too large", f"{rel}: {size} bytes, above {MAX_IMAGE_BYTES} bytes for one image file")
    try:
        return read()
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise RowError("image unreadable", f"{rel}: {type(exc).__name__}: {exc}") from None


def _contained(name: str) -> str | None:
    """`name` normalized (`a/./b`, `a/../b`); None when it escapes the root (absolute, or `..` left after)."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        return None
    return normal
