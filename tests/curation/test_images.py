import struct
import zipfile
import zlib
from functools import partial
from pathlib import Path

import pytest

from curation.errors import InputError, RowError
from curation.images import ImagesRoot, decode_image
from tests.conftest import image_bytes, write_image


def _png_claiming_size(width: int, height: int) -> bytes:
    """A real PNG whose header is rewritten to claim a huge size: a decompression bomb's signature."""
    data = bytearray(image_bytes(1, (4, 4)))
    ihdr = 8 + 8  # signature, then chunk length + type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_decode_image_row() -> None:
    row = decode_image(image_bytes(3, (10, 7)), "x")
    assert (row.width, row.height, row.format) == (10, 7, "png")
    assert len(row.sha256) == 64


def test_corrupt_and_truncated_images_are_row_errors() -> None:
    with pytest.raises(RowError, match="image undecodable"):
        decode_image(b"definitely not an image", "row 3: field 'image'")
    truncated = image_bytes(2, (64, 64), "JPEG")[:200]
    with pytest.raises(RowError, match="image undecodable") as info:
        decode_image(truncated, "row 4: field 'image'")
    assert "row 4: field 'image'" in info.value.detail
    with pytest.raises(RowError, match="image undecodable"):
        decode_image(b"", "empty")


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    with pytest.raises(RowError, match="image too large") as info:
        decode_image(_png_claiming_size(100_000, 100_000), "bomb.png")
    assert info.value.detail == "bomb.png: 100000x100000 exceeds 50000000 pixels"  # the limit given, not Pillow's
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    # above Pillow's own limit, within the one given: that one decides (Pillow refused it)
    with pytest.raises(RowError, match="image undecodable"):  # the header's size passes; its data is not there
        decode_image(_png_claiming_size(20_000, 20_000), "huge.png", max_pixels=500_000_000)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's own limit as it was, for other readers
    with pytest.raises(RowError, match="image too large") as info:
        decode_image(_png_claiming_size(9_000, 9_000), "big.png")  # under Pillow's limit, over ours
    assert "9000x9000 exceeds" in info.value.detail
    with pytest.raises(RowError, match="image too large"):
        decode_image(image_bytes(1, (20, 20)), "small", max_pixels=100)


def test_a_bomb_found_while_decoding_is_too_large_not_undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow checks a GIF's later frames as they decode, after the header passed `max_pixels`."""
    from PIL import Image, PngImagePlugin

    def bomb(self: Image.Image) -> None:
        raise Image.DecompressionBombError("Image size (200000000 pixels) exceeds limit of 178956970 pixels")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", bomb)
    with pytest.raises(RowError, match="image too large"):
        decode_image(image_bytes(1, (20, 20)), "frames.png")


def test_images_root_folder_zip_and_escape(tmp_path: Path) -> None:
    write_image(tmp_path / "root" / "coco" / "a.jpg", seed=1)
    folder = ImagesRoot(tmp_path / "root")
    assert folder.read("./coco/a.jpg") == (tmp_path / "root" / "coco" / "a.jpg").read_bytes()
    assert folder.read("/data/somewhere/a.jpg", by_basename=True) == folder.read("coco/a.jpg")
    write_image(tmp_path / "outside.png", seed=2)
    with pytest.raises(RowError, match="image not found"):
        folder.read("../outside.png")  # never outside the images root
    with pytest.raises(RowError, match="image not found"):
        folder.read("/data/somewhere/a.jpg")  # absolute paths resolve by basename only when asked

    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("coco/a.jpg", (tmp_path / "root" / "coco" / "a.jpg").read_bytes())
        for name in ("video/v1/0002.jpg", "video/v1/0001.jpg", "video/v1/0010.jpg", "video/v1/notes.txt"):
            zf.writestr(name, image_bytes(len(name)))
    zipped = ImagesRoot(archive)
    assert zipped.read("coco/a.jpg") == folder.read("coco/a.jpg")
    assert zipped.frames("video/v1") == ["video/v1/0001.jpg", "video/v1/0002.jpg", "video/v1/0010.jpg"]
    with pytest.raises(RowError, match="image not found"):
        zipped.frames("video/missing")


def test_ambiguous_basenames_are_not_guessed(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "x.png", seed=1)
    write_image(tmp_path / "b" / "x.png", seed=2)
    with pytest.raises(RowError, match="image not found"):
        ImagesRoot(tmp_path).read("/elsewhere/x.png", by_basename=True)


def test_images_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        ImagesRoot(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="folder or a zip"):
        ImagesRoot(tmp_path / "file.txt")
    with pytest.raises(RowError, match="no images root given"):
        ImagesRoot(None).read("a.png")


def test_names_that_escape_the_root_are_refused_alike_in_a_folder_and_a_zip(tmp_path: Path) -> None:
    ok = image_bytes(1)
    write_image(tmp_path / "root" / "ok" / "a.png", seed=1)
    assert (tmp_path / "root" / "ok" / "a.png").read_bytes() == ok
    write_image(tmp_path / "evil.png", seed=2)  # beside the folder root: what `../evil.png` would reach
    write_image(tmp_path / "evil2.png", seed=3)
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.png", ok)
        # zipfile writes these names as given: an archive's own member names can escape.
        zf.writestr("../evil.png", image_bytes(2))
        zf.writestr("a/../../evil2.png", image_bytes(3))
        zf.writestr("/abs.png", image_bytes(4))
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["../evil.png", "/abs.png", "a/../../evil2.png", "ok/a.png"]
    zipped = ImagesRoot(archive)
    for images in (ImagesRoot(tmp_path / "root"), zipped):
        assert images.read("ok/a.png") == images.read("ok/../ok/a.png") == ok  # normalizes to a name inside
        by_basename = partial(images.read, by_basename=True)
        refused = [
            partial(images.read, "../evil.png"),
            partial(images.read, "a/../../evil2.png"),
            partial(by_basename, "/elsewhere/evil.png"),
            partial(by_basename, "/elsewhere/evil2.png"),
            partial(images.read, "/abs.png"),
            partial(by_basename, "/elsewhere/abs.png"),
            partial(images.frames, ".."),
        ]
        details = []
        for read in refused:
            with pytest.raises(RowError, match="image not found") as info:
                read()
            details.append(info.value.detail)
        assert details[:2] == ["../evil.png (outside the images root)", "a/../../evil2.png (outside the images root)"]
        assert details[-1] == ".. (outside the images root)"
        assert images.frames("ok/..//ok") == ["ok/a.png"]


def test_a_name_that_cannot_be_a_file_is_an_image_reject(tmp_path: Path) -> None:
    """A NUL in a name, a name too long for the file system, a link loop, an empty name: each row's own reject
    with an image reason naming the name, never an `adapter error`."""
    (tmp_path / "self.png").symlink_to("self.png")
    root = ImagesRoot(tmp_path)
    cases = {"a\0b.png": ("image not found", "'a\\x00b.png': not a file name (it holds a NUL)"),
             "x" * 300 + ".png": ("image unreadable", "OSError"), "self.png": ("image unreadable", "self.png: "),
             " ": ("image not found", "' ' (an empty name)")}  # fmt: skip
    for name, (reason, detail) in cases.items():
        with pytest.raises(RowError) as caught:
            root.read(name)
        assert caught.value.reason == reason and detail in caught.value.detail, (name, caught.value.detail)
        assert not root.holds(name)
    with pytest.raises(RowError, match="not a file name"):
        root.frames("a\0b")
