"""The costly signals outlive a build: a rebuild whose change is a threshold reuses them from the cache and
writes the same bytes as a cold build of the changed recipe; a change of what they measure computes them again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from curation.build import build
from curation.recipe import load_recipe


def _variant(demo_recipe: Path, name: str, **ops: dict) -> Path:
    data = yaml.safe_load(demo_recipe.read_text())
    for op, params in ops.items():
        data["ops"][op] = {**data["ops"].get(op, {}), **params}
    data["name"] = name
    path = demo_recipe.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "README.md")
    }


def test_a_threshold_change_reuses_the_costly_signals(demo_recipe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = build(load_recipe(demo_recipe), tmp_path / "first", cache=cache)
    assert first["signals_reused"] == []
    changed = _variant(demo_recipe, "thresholds", near_dedupe={"threshold": 0.6},
                       decontaminate={"min_overlap": 0.3}, image_dedupe={"max_distance": 8})  # fmt: skip
    warm = build(load_recipe(changed), tmp_path / "warm", cache=cache)
    assert warm["signals_reused"] == ["near_dedupe", "image_dedupe", "decontaminate"]
    cold = build(load_recipe(changed), tmp_path / "cold", cache=tmp_path / "empty-cache")
    assert cold["signals_reused"] == []
    # The same shards, rejects, duplicates, contamination and signals, byte for byte.
    assert _files(tmp_path / "warm") == _files(tmp_path / "cold")
    # The thresholds did decide again: the changed recipe removes differently from the first.
    assert [s["sha256"] for s in warm["shards"]] != [s["sha256"] for s in first["shards"]]


def test_a_change_of_what_a_signal_measures_is_computed_again(demo_recipe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(load_recipe(demo_recipe), tmp_path / "first", cache=cache)
    changed = _variant(demo_recipe, "ngram", near_dedupe={"ngram": 2})  # a scoring parameter
    assert build(load_recipe(changed), tmp_path / "again", cache=cache)["signals_reused"] == [
        "image_dedupe",
        "decontaminate",
    ]
    fewer = yaml.safe_load(demo_recipe.read_text())
    del fewer["sources"]["hh_rlhf"]  # other input: other prompts
    path = demo_recipe.with_name("fewer.yaml")
    path.write_text(yaml.safe_dump(fewer))
    assert build(load_recipe(path), tmp_path / "fewer", cache=cache)["signals_reused"] == ["image_dedupe"]


def test_a_cached_signal_damaged_in_place_is_computed_again(demo_recipe: Path, tmp_path: Path) -> None:
    """A cache file is reused only while its bytes are those written (its sha256 is kept beside it)."""
    cache = tmp_path / "cache"
    build(load_recipe(demo_recipe), tmp_path / "first", cache=cache)
    (near,) = cache.glob("near_dedupe-*.parquet")
    assert (near.parent / f"{near.name}.sha256").read_text().strip() == hashlib.sha256(near.read_bytes()).hexdigest()
    data = bytearray(near.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a failing disk: the same size, the footer intact
    near.write_bytes(bytes(data))
    again = build(load_recipe(demo_recipe), tmp_path / "again", cache=cache)
    assert "near_dedupe" not in again["signals_reused"] and "image_dedupe" in again["signals_reused"]
    assert _files(tmp_path / "again") == _files(tmp_path / "first")
    assert (near.parent / f"{near.name}.sha256").read_text().strip() == hashlib.sha256(near.read_bytes()).hexdigest()
