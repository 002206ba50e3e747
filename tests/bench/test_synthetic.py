import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bench.synthetic import KINDS, generate, jaccard, main
from tests.conftest import RunIngest

N = 2000
ROWS_PER_FILE = 700  # several text files, so refs must name the right one


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate(out, N, seed=3, rows_per_file=ROWS_PER_FILE)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "truth.parquet").to_pylist()


def _by_ref(pairs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["source_row"]: p for p in pairs}


def _dhash(data: bytes) -> np.ndarray:
    gray = np.asarray(Image.open(io.BytesIO(data)).convert("L").resize((9, 8), Image.Resampling.LANCZOS), float)
    return (gray[:, 1:] > gray[:, :-1]).ravel()


def test_same_arguments_same_bytes(collection: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    out, counts = collection
    again = generate(tmp_path / "again", N, seed=3, rows_per_file=ROWS_PER_FILE)
    assert again == counts
    assert _files(tmp_path / "again") == _files(out)
    other = generate(tmp_path / "other", 300, seed=4)
    assert (tmp_path / "other" / "text" / "pairs-00000.parquet").read_bytes() != (
        out / "text" / "pairs-00000.parquet"
    ).read_bytes()
    assert other["text_files"] == 1


def test_layout_and_planted_counts(collection: tuple[Path, dict[str, int]]) -> None:
    out, counts = collection
    assert counts["text_pairs"] == 1900 and counts["image_pairs"] == 100
    assert sorted(p.name for p in (out / "text").iterdir()) == [f"pairs-0000{i}.parquet" for i in range(3)]
    assert [pq.read_metadata(p).num_rows for p in sorted((out / "text").iterdir())] == [700, 700, 500]
    kinds = Counter(r["kind"] for r in _truth(out))
    expected = {
        "exact_dup": round(0.05 * 1900),
        "near_dup": round(0.05 * 1900),
        "contaminated_text": round(0.02 * 1900),
        "near_dup_image": round(0.05 * 100),
        "contaminated_image": round(0.02 * 100),
    }
    assert kinds == expected and set(kinds) == set(KINDS)
    assert all(counts[k] == v for k, v in expected.items())
    assert counts["truth_rows"] == sum(expected.values())
    rows = pq.read_table(out / "text").to_pylist()
    scores = [(r["metadata"]["score_chosen"], r["metadata"]["score_rejected"]) for r in rows]
    assert all(1.0 <= r <= c <= 10.0 and (2 * c).is_integer() and (2 * r).is_integer() for c, r in scores)
    assert 0.07 < sum(c == r for c, r in scores) / len(scores) < 0.13
    words = [len(r["prompt"].split()) for r in rows]
    assert min(words) >= 8 and 35 < np.median(words) < 45
    assert 120 < np.median([len(r["chosen"].split()) for r in rows]) < 180


def test_adapters_ingest_every_row_and_truth_holds(
    collection: tuple[Path, dict[str, int]], run_ingest: RunIngest
) -> None:
    out, counts = collection
    text = run_ingest("ultrafeedback_binarized", out / "text")
    images = run_ingest("rlaif_v", out / "images")
    bench_text = run_ingest("rewardbench", out / "benchmarks" / "text.jsonl")
    vl = out / "benchmarks" / "vl"
    bench_vl = run_ingest("vl_rewardbench", vl / "data.jsonl", images_root=vl / "images")
    for result, rows in ((text, 1900), (images, 100), (bench_text, 1000), (bench_vl, counts["benchmark_images"])):
        assert result.summary.rows_rejected == 0 and result.summary.pairs == rows
    assert text.summary.ties == counts["text_ties"]
    assert images.summary.images == counts["pictures"] + counts["near_dup_image"] + counts["contaminated_image"]

    text_rows, image_rows = _by_ref(text.pairs), _by_ref(images.pairs)
    bench_rows = _by_ref(bench_text.pairs)
    vl_rows = {json.loads(p["meta"])["id"]: p for p in bench_vl.pairs}
    image_bytes = {img["sha256"]: img["bytes"] for img in images.images}
    planted = {(r["dataset"], r["ref"]) for r in _truth(out)}
    for truth in _truth(out):
        assert truth["ref"] == f"{truth['file']}:{truth['row']}"
        rows = text_rows if truth["dataset"] == "text" else image_rows
        row = rows[truth["ref"]]
        kind = truth["kind"]
        if kind in {"exact_dup", "near_dup"}:
            assert ("text", truth["original"]) not in planted  # originals are unplanted rows
        if kind == "exact_dup":
            original = text_rows[truth["original"]]
            assert row["pair_id"] == original["pair_id"] and row["meta"] != original["meta"]
            assert [row[k] for k in ("chosen_score", "rejected_score", "tie")] == [
                original[k] for k in ("chosen_score", "rejected_score", "tie")
            ]
        elif kind == "near_dup":
            original = text_rows[truth["original"]]
            new, old = row["prompt"][0]["content"].split(), original["prompt"][0]["content"].split()
            assert len(old) >= 20 and len(new) == len(old) and new != old
            assert jaccard(new, old) == pytest.approx(truth["jaccard"], abs=1e-12) and truth["jaccard"] >= 0.7
            assert row["chosen"] != original["chosen"] and row["rejected"] != original["rejected"]
        elif kind == "contaminated_text":
            item = bench_rows[f"text.jsonl:{truth['original']}"]
            assert json.loads(item["meta"])["id"] == int(truth["original"])
            new, old = row["prompt"][0]["content"].split(), item["prompt"][0]["content"].split()
            if truth["variant"] == "exact":
                assert row["prompt_id"] == item["prompt_id"] and truth["jaccard"] == 1.0
            else:
                assert truth["variant"] == "edited" and sum(a != b for a, b in zip(new, old, strict=True)) == 1
                assert jaccard(new, old) == pytest.approx(truth["jaccard"], abs=1e-12)
            assert row["chosen"] != item["chosen"]
        elif kind == "near_dup_image":
            original = image_rows[truth["original"]]
            assert (truth["dataset"], truth["original"]) not in planted
            assert [row[k] for k in ("prompt", "chosen", "rejected")] == [
                original[k] for k in ("prompt", "chosen", "rejected")
            ]
            assert row["images"] != original["images"] and truth["variant"] in {"jpeg", "resize"}
            near, first = (_dhash(image_bytes[r["images"][0]]) for r in (row, original))
            assert int((near != first).sum()) <= 6
        else:
            assert kind == "contaminated_image"
            item = vl_rows[truth["original"]]
            assert row["images"] == item["images"] and row["prompt_id"] == item["prompt_id"]
            assert row["chosen"] != item["chosen"]

    # Unplanted pictures are far apart perceptually.
    rng = np.random.default_rng(0)
    pictures = {p["images"][0] for p in images.pairs if ("images", p["source_row"]) not in planted}
    assert len(pictures) == counts["pictures"]
    hashes = [_dhash(image_bytes[sha]) for sha in sorted(pictures)]
    distances = [int((hashes[a] != hashes[b]).sum()) for a, b in rng.integers(0, len(hashes), (300, 2)) if a != b]
    assert min(distances) > 10


def test_near_duplicates_planted_and_only_planted(collection: tuple[Path, dict[str, int]]) -> None:
    out, _ = collection
    truth = _truth(out)
    near = [r["jaccard"] for r in truth if r["kind"] == "near_dup"]
    assert near and min(near) >= 0.7 and 0.7 < float(np.mean(near)) < 0.95
    planted = {r["ref"] for r in truth if r["dataset"] == "text"}
    prompts = []
    for path in sorted((out / "text").iterdir()):
        for row, prompt in enumerate(pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()):
            if f"{path.name}:{row}" not in planted:
                prompts.append(prompt.split())
    bench = [json.loads(line)["prompt"].split() for line in (out / "benchmarks" / "text.jsonl").open()]
    rng = np.random.default_rng(1)
    pairs = [(prompts[a], prompts[b]) for a, b in rng.integers(0, len(prompts), (500, 2)) if a != b]
    pairs += [(prompts[a], bench[b]) for a, b in rng.integers(0, [len(prompts), len(bench)], (500, 2))]
    assert max(jaccard(a, b) for a, b in pairs) < 0.2


def test_cli_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "cli"), "--n", "300", "--seed", "1"]) == 0
    printed = dict(line.split(": ") for line in capsys.readouterr().out.splitlines())
    assert printed["pairs"] == "300" and printed["exact_dup"] == str(round(0.05 * 285))
    assert (tmp_path / "cli" / "truth.parquet").is_file()
