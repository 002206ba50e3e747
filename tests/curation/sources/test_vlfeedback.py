import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cards import declared_features, source_cards
from tests.conftest import RunIngest, image_bytes, write_image, write_jsonl


def completion(model: str, response: str, helpful: Any, ethical: Any, faithful: Any) -> dict[str, Any]:
    def aspect(rating: Any) -> dict[str, Any]:
        return {"Rating": rating, "Rationale": f"because {rating}"}

    annotations = {
        "Helpfulness": aspect(helpful),
        "Ethical Considerations": aspect(ethical),
        "Visual Faithfulness": aspect(faithful),
    }
    return {"model": model, "response": response, "annotations": annotations}


ROW = {
    "id": "svit-1",
    "prompt": "What is on the table?",
    "models": ["m-low", "m-none", "m-best", "m-mid"],
    "completions": [
        completion("m-low", "A cat.", "2", "N/A", "3"),  # N/A is left out: mean 2.5
        completion("m-none", "Unrated.", "bad", "", "n/a"),  # no numeric rating: takes no part
        completion("m-best", "A red apple.", "5", "4", "5"),  # mean 14/3
        completion("m-mid", "Fruit.", "3", "3", "3"),
    ],
}


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_max_gap_orientation_string_ratings_and_embedded_image(tmp_path: Path, run_ingest: RunIngest) -> None:
    row = {**ROW, "image": {"bytes": image_bytes(1), "path": "svit-1.jpg"}}
    result = run_ingest("vlfeedback", write_parquet(tmp_path / "train.parquet", [row]))
    assert len(result.pairs) == 1 and not result.rejects
    pair = result.pairs[0]
    assert (pair["chosen"], pair["rejected"]) == ("A red apple.", "A cat.")
    assert (pair["chosen_model"], pair["rejected_model"]) == ("m-best", "m-low")
    assert pair["chosen_score"] == pytest.approx(14 / 3) and pair["rejected_score"] == 2.5
    assert pair["margin"] == pytest.approx(14 / 3 - 2.5)
    assert pair["tie"] is False and pair["binarization"] == "max_gap"
    assert pair["prompt"] == [{"role": "user", "content": "<image>\nWhat is on the table?"}]
    assert pair["modality"] == "image" and len(pair["images"]) == 1
    assert [img["sha256"] for img in result.images] == pair["images"]
    meta = result.meta(0)
    assert sorted(meta) == ["_derived", "completions", "id", "models"]
    assert meta["id"] == "svit-1" and meta["_derived"] == {"chosen_index": 2, "rejected_index": 0}
    assert meta["completions"][0]["annotations"]["Ethical Considerations"]["Rating"] == "N/A"


def test_all_pairs_keeps_ties_and_min_margin_drops_small_gaps(tmp_path: Path, run_ingest: RunIngest) -> None:
    write_image(tmp_path / "imgs" / "merged_images" / "a.png", seed=2)
    row = {
        "id": "lrv-2",
        "prompt": "Describe.",
        "img_path": "merged_images/a.png",
        "completions": [
            completion("x", "first", "4", "4", "4"),
            completion("y", "second", "4", "4", "4"),
            completion("z", "third", "3", "4", "3"),
        ],
    }
    path = write_jsonl(tmp_path / "vlf.jsonl", [row])
    result = run_ingest("vlfeedback", path, images_root=tmp_path / "imgs", options={"policy": "all_pairs"})
    got = [(p["chosen"], p["rejected"], p["tie"]) for p in result.pairs]
    assert got == [("first", "second", True), ("first", "third", False), ("second", "third", False)]
    assert result.pairs[1]["margin"] == pytest.approx(2 / 3)

    strict = run_ingest(
        "vlfeedback", path, images_root=tmp_path / "imgs", options={"policy": "all_pairs", "min_margin": "1"}
    )
    assert [(p["chosen"], p["rejected"], p["tie"]) for p in strict.pairs] == [("first", "second", True)]
    assert strict.pairs[0]["binarization"] == "all_pairs,gap>=1"


def test_rejects_unparsable_scores_small_gaps_and_missing_images(tmp_path: Path, run_ingest: RunIngest) -> None:
    one_rated = {**ROW, "img_path": "a.png", "completions": [ROW["completions"][0], ROW["completions"][1]]}
    close = {
        **ROW,
        "img_path": "a.png",
        "completions": [completion("x", "p", "4", "4", "4"), completion("y", "q", "4", "4", "3")],
    }
    missing = {**ROW, "img_path": "nowhere.png"}
    write_image(tmp_path / "imgs" / "a.png", seed=3)
    path = write_jsonl(tmp_path / "vlf.jsonl", [one_rated, close, missing])
    result = run_ingest("vlfeedback", path, images_root=tmp_path / "imgs", options={"min_margin": 0.5})
    assert [r["reason"] for r in result.rejects] == ["unparsable score", "margin below minimum", "image not found"]
    assert result.rejects[0]["detail"] == (
        "vlf.jsonl:0: 'completions': fewer than two numerically rated responses [2.5, None]"
    )
    assert not result.pairs


def test_a_rating_off_the_scale_rejects_its_row(tmp_path: Path, run_ingest: RunIngest) -> None:
    """Two ratings of 1e308 summed to infinity, which became the chosen answer's score; -3 counted in a mean."""
    write_image(tmp_path / "imgs" / "a.png", seed=3)
    huge = {**ROW, "img_path": "a.png", "completions": [completion("x", "p", "5", "5", "5"),
                                                        completion("y", "q", "-3", "1e308", "1e308")]}  # fmt: skip
    path = write_jsonl(tmp_path / "vlf.jsonl", [huge, {**ROW, "img_path": "a.png"}])
    result = run_ingest("vlfeedback", path, images_root=tmp_path / "imgs")
    assert [r["detail"] for r in result.rejects] == [
        "vlf.jsonl:0: 'completions[1].annotations.Helpfulness.Rating': '-3' (rated 1 to 5)"
    ]
    assert [r["reason"] for r in result.rejects] == ["rating out of range"] and len(result.pairs) == 1


@pytest.mark.parametrize(("value", "said"), [("nan", "expected a finite number"), ("inf", "expected a finite number"),
                                             ("-1", "expected 0 or more (a score gap)")])  # fmt: skip
def test_a_min_margin_that_is_no_gap_is_refused(value: str, said: str) -> None:
    """A margin of nan kept ties alone, inf nothing but ties, -1 read as 0: each is one error now."""
    from curation.errors import InputError
    from curation.sources import get_adapter

    for source in ("vlfeedback", "ultrafeedback"):
        with pytest.raises(InputError, match=f"^{source}: option min_margin=.*{re.escape(said)}"):
            get_adapter(source)({"min_margin": value})


def test_best_vs_random_is_deterministic(tmp_path: Path, run_ingest: RunIngest) -> None:
    row = {**ROW, "image": {"bytes": image_bytes(4), "path": None}}
    path = write_parquet(tmp_path / "train.parquet", [row])
    runs = [run_ingest("vlfeedback", path, options={"policy": "best_vs_random"}) for _ in range(2)]
    assert runs[0].pairs[0]["pair_id"] == runs[1].pairs[0]["pair_id"]
    pair = runs[0].pairs[0]
    assert pair["chosen"] == "A red apple." and pair["rejected"] in ("A cat.", "Fruit.")
    assert pair["binarization"] == "best_vs_random"


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any) -> None:
    """The card's declared features: `completions` is a `sequence` of structs, which `datasets` serves as one
    record of lists; `img_path` is a path under the images root (the loader's `merged_images.zip`)."""
    features = declared_features(source_cards()["vlfeedback"])
    completions = ROW["completions"]
    row = {
        "id": "svit-1", "prompt": "What is on the table?", "models": ROW["models"], "img_path": "merged/svit-1.jpg",
        "completions": {name: [c[name] for c in completions] for name in ("annotations", "model", "response")},
    }  # fmt: skip
    write_image(tmp_path / "media" / "merged" / "svit-1.jpg", seed=1)
    for way, result in hub_ingest("vlfeedback", [row], features, images_root=tmp_path / "media").items():
        [pair] = result.pairs
        assert (pair["chosen"], pair["rejected"]) == ("A red apple.", "A cat."), way
        assert (pair["chosen_model"], pair["rejected_model"]) == ("m-best", "m-low"), way
        assert pair["chosen_score"] == pytest.approx(14 / 3) and pair["margin"] == pytest.approx(14 / 3 - 2.5), way
        picture = hashlib.sha256((tmp_path / "media" / "merged" / "svit-1.jpg").read_bytes()).hexdigest()
        assert pair["images"] == [picture] and [i["sha256"] for i in result.images] == [picture], way
        # Both shapes leave the same `meta`: the rationales as a list of records.
        assert json.loads(pair["meta"])["completions"][0]["model"] == "m-low", way
