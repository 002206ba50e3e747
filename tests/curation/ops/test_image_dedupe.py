import io
from pathlib import Path

from PIL import Image

from curation.demo import photo_png
from curation.perceptual import close_pairs, phash
from tests.curation.ops.conftest import BuildRows, run_op_on_rows


def _variants(root: Path) -> None:
    original = photo_png("chelsea")
    (root / "cat.png").write_bytes(original)
    with Image.open(io.BytesIO(original)) as image:
        image.convert("RGB").save(root / "cat_jpeg.jpg", format="JPEG", quality=90)
        image.resize((image.width - 6, image.height - 4)).save(root / "cat_small.png")
        image.crop((0, 0, int(image.width * 0.9), int(image.height * 0.9))).save(root / "cat_crop.png")
    (root / "coffee.png").write_bytes(photo_png("coffee"))


def _row(question: str, image: str, chosen: str = "A cat.") -> dict:
    return {"question": question, "chosen": chosen, "rejected": "A dog.", "image_path": image}


def test_close_pairs_finds_exactly_the_pairs_within_distance() -> None:
    hashes = {"a": 0b0, "b": 0b111, "c": 0b1111, "d": (1 << 63) | 0b11110000}
    assert close_pairs(hashes, None, 3) == [("a", "b", 3), ("b", "c", 1)]
    assert close_pairs(hashes, None, 4) == [("a", "b", 3), ("a", "c", 4), ("b", "c", 1)]
    assert close_pairs(hashes, None, 5) == [("a", "b", 3), ("a", "c", 4), ("a", "d", 5), ("b", "c", 1)]
    assert close_pairs({"x": 0b1}, hashes, 1) == [("x", "a", 1)]


def test_reencoded_and_resized_images_are_near_duplicates(tmp_path: Path, build_rows: BuildRows) -> None:
    _variants(tmp_path)
    hashes = {p.name: phash(p.read_bytes()) for p in tmp_path.iterdir()}
    assert close_pairs({k: v for k, v in hashes.items() if k.startswith("cat")}, None, 4)[0][2] <= 4
    rows = [
        _row("What animal is this?", "cat.png"),
        _row("What animal is this?", "cat_jpeg.jpg", chosen="It is a cat."),  # same prompt, re-encoded image
        _row("What animal is this?", "cat_small.png", chosen="A cat, surely."),  # same prompt, resized image
        _row("What color is the cat?", "cat_jpeg.jpg"),  # another question about the same picture: kept
        _row("What animal is this?", "coffee.png"),  # same question, another picture: kept
        _row("What animal is this?", "cat_crop.png", chosen="Cat."),  # cropped: 20 bits away
    ]
    built = build_rows({"rv": ("rlaif_v", rows)}, ops={"image_dedupe": {"max_distance": 6}}, images_root=tmp_path)
    removed = built.removed("image_dedupe")
    assert sorted(r["source_row"] for r in removed) == ["rv.jsonl:1", "rv.jsonl:2"]
    assert all("same prompt and image as rv rv.jsonl:0" in r["detail"] for r in removed)
    assert built.manifest["sources"]["rv"]["kept"] == 4
    loose = build_rows({"rv": ("rlaif_v", rows)}, ops={"image_dedupe": {"max_distance": 24}}, images_root=tmp_path)
    assert sorted(r["source_row"] for r in loose.removed("image_dedupe")) == ["rv.jsonl:1", "rv.jsonl:2", "rv.jsonl:5"]
    # The threshold only decides: both builds stored the same signal table.
    signal = [p.name for p in (built.root / "signals").glob("image_dedupe-*")]
    assert len(signal) == 1
    assert (built.root / "signals" / signal[0]).read_bytes() == (loose.root / "signals" / signal[0]).read_bytes()


def test_prompts_that_differ_by_a_vowel_sign_are_not_the_same_text(tmp_path: Path, build_rows: BuildRows) -> None:
    """Python's `\\w` left out combining vowel signs, so `क` and `कि` (ka, ki) were one word and the second pair,
    on the same picture, was removed as a duplicate; the words are those near_dedupe compares (`tokenize`)."""
    _variants(tmp_path)
    rows = [_row("\u0915 \u0915\u094b?", "cat.png"), _row("\u0915\u093f \u0915\u094b?", "cat_jpeg.jpg"),
            _row("\u0915 \u0915\u094b?", "cat_jpeg.jpg", chosen="Cat.")]  # fmt: skip
    built = build_rows({"rv": ("rlaif_v", rows)}, ops={"image_dedupe": {"max_distance": 6}}, images_root=tmp_path)
    assert [r["source_row"] for r in built.removed("image_dedupe")] == ["rv.jsonl:2"]


def test_brute_force_and_multi_index_agree() -> None:
    import random

    from curation import perceptual

    rng = random.Random(3)
    base = [rng.getrandbits(64) for _ in range(40)]
    hashes = {f"h{i}": b ^ (1 << rng.randrange(64)) * (i % 3 == 0) for i, b in enumerate(base + base[:20])}
    brute = perceptual.close_pairs(hashes, None, 5)  # small enough for the vectorized all-pairs path
    multi = sorted((a, b, d) for a, b, d in perceptual._multi_index(hashes, hashes, 5, 64) if a < b)
    assert brute == multi and len(brute) >= 20


def test_near_duplicate_images_through_the_ops_context(tmp_path: Path) -> None:
    _variants(tmp_path)
    image = {name: (tmp_path / name).read_bytes() for name in ("cat.png", "cat_jpeg.jpg", "coffee.png")}
    ask = "<image>What animal is this?"
    rows = [
        {"prompt": ask, "chosen": "A cat.", "rejected": "A dog.", "images": [image["cat.png"]]},
        {"prompt": ask, "chosen": "It is a cat.", "rejected": "A dog.", "images": [image["cat_jpeg.jpg"]]},
        {"prompt": ask, "chosen": "Coffee.", "rejected": "Tea.", "images": [image["coffee.png"]]},
        {"prompt": "<image>What colour is it?", "chosen": "Grey.", "rejected": "Red.", "images": [image["cat.png"]]},
    ]
    run = run_op_on_rows(tmp_path / "build", "image_dedupe", rows, cache=tmp_path / "cache")
    shas = sorted({sha for (images,) in run.ctx.rows("SELECT images FROM all_pairs") for sha in images})
    assert [s["sha256"] for s in run.signals] == shas  # one perceptual hash per image, keyed by its sha256
    assert list(run.removed()) == [1]
    assert run.removed()[1][1].startswith("same prompt and image as s s.jsonl:0 (phash similarity ")
    assert run.evidence("dups/image_dedupe.parquet")[0]["method"] == "phash-hamming"
