import struct
import zipfile
import zlib
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
    assert info.value.detail.startswith("bomb.png: ")
    with pytest.raises(RowError, match="image too large") as info:
        decode_image(_png_claiming_size(9_000, 9_000), "big.png")  # under Pillow's limit, over ours
    assert "9000x9000 exceeds" in info.value.detail
    with pytest.raises(RowError, match="image too large"):
        decode_image(image_bytes(1, (20, 20)), "small", max_pixels=100)


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
    with pytest.raises(RowError, match="no --images-root"):
        ImagesRoot(None).read("a.png")
