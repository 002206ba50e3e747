import math
from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from curation.sources.shp import subreddit
from tests.conftest import RunIngest, write_jsonl


def shp_row(labels: Any, score_a: int, score_b: int, ratio: Any) -> dict[str, Any]:
    return {
        "post_id": "abc123",
        "domain": "askscience_train",
        "upvote_ratio": 0.97,
        "history": "Why is the sky blue?",
        "c_root_id_A": "cA",
        "c_root_id_B": "cB",
        "created_at_utc_A": 1600000000,
        "created_at_utc_B": 1600000500,
        "score_A": score_a,
        "score_B": score_b,
        "human_ref_A": "Rayleigh scattering.",
        "human_ref_B": "Because the ocean is blue.",
        "labels": labels,
        "seconds_difference": 500.0,
        "score_ratio": ratio,
    }


def test_labels_orient_the_pair(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [shp_row(1, 40, 10, 4.0), shp_row(0, 3, 12, 4.0)]
    result = run_ingest("shp", write_jsonl(tmp_path / "shp.jsonl", rows))
    a_wins, b_wins = result.pairs
    assert a_wins["prompt"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert (a_wins["chosen"], a_wins["rejected"]) == ("Rayleigh scattering.", "Because the ocean is blue.")
    assert (a_wins["chosen_score"], a_wins["rejected_score"]) == (40.0, 10.0)
    assert (b_wins["chosen"], b_wins["rejected"]) == ("Because the ocean is blue.", "Rayleigh scattering.")
    assert (b_wins["chosen_score"], b_wins["rejected_score"]) == (12.0, 3.0)
    # margin = log(score_ratio), not the upvote difference.
    assert a_wins["margin"] == b_wins["margin"] == math.log(4.0)
    # `domain` joins subreddit and split; the subreddit is the subset, the whole value stays in meta.
    assert (a_wins["subset"], a_wins["modality"], a_wins["tie"]) == ("askscience", "text", False)
    assert a_wins["license"] == "Reddit API terms (no standard license)"
    assert result.meta(1) == {
        "post_id": "abc123",
        "domain": "askscience_train",
        "upvote_ratio": 0.97,
        "c_root_id_A": "cA",
        "c_root_id_B": "cB",
        "created_at_utc_A": 1600000000,
        "created_at_utc_B": 1600000500,
        "seconds_difference": 500.0,
        "_derived": {"chosen_side": "B"},
    }


def test_bad_labels_and_ratios_are_rejected(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [
        shp_row(2, 5, 1, 5.0),
        shp_row(True, 5, 1, 5.0),
        shp_row(1, 5, 1, "inf"),
        shp_row(1, 5, 1, 0),
        shp_row(1, 3, 12, 0.25),  # the preferred comment has fewer upvotes: label and scores disagree
        {**shp_row(1, 5, 1, 5.0), "human_ref_B": None},
        shp_row(1, 5, 1, "5.0"),
    ]
    result = run_ingest("shp", write_jsonl(tmp_path / "shp.jsonl", rows))
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("undetermined preference", "shp.jsonl:0: 'labels': 2 (expected 1 for A or 0 for B)"),
        ("wrong type", "shp.jsonl:1: 'labels': expected int, got bool"),
        ("unparsable score", "shp.jsonl:2: 'score_ratio': 'inf'"),
        ("undetermined preference", "shp.jsonl:3: 'score_ratio': 0.0 is below 1 for the preferred comment"),
        ("undetermined preference", "shp.jsonl:4: 'score_ratio': 0.25 is below 1 for the preferred comment"),
        ("missing field", "shp.jsonl:5: 'human_ref_B' is null"),
    ]
    assert [p["margin"] for p in result.pairs] == [math.log(5.0)]


def test_subreddit_drops_only_a_split_suffix() -> None:
    assert [subreddit(d) for d in ("askculinary_validation", "legaladvice_test", "askhr", "_test", None)] == [
        "askculinary",
        "legaladvice",
        "askhr",
        "_test",
        None,
    ]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The card's declared features (integers for scores and labels, floats for the ratios): `labels` orients
    the pair, margin = log(score_ratio); a label outside 0/1 is rejected."""
    features = declared_features(source_cards()["shp"])
    rows = [
        shp_row(1, 340, 166, 2.0481927711),
        {**shp_row(0, 3, 12, 4.0), "domain": "legaladvice_validation"},
        shp_row(2, 5, 1, 5.0),
    ]
    for way, result in hub_ingest("shp", rows, features).items():
        a_wins, b_wins = result.pairs
        assert (a_wins["chosen"], a_wins["rejected"]) == ("Rayleigh scattering.", "Because the ocean is blue."), way
        assert (b_wins["chosen"], b_wins["rejected"]) == ("Because the ocean is blue.", "Rayleigh scattering."), way
        assert (a_wins["chosen_score"], a_wins["rejected_score"]) == (340.0, 166.0), way
        assert (b_wins["chosen_score"], b_wins["rejected_score"]) == (12.0, 3.0), way
        assert a_wins["margin"] == math.log(2.0481927711) and b_wins["margin"] == math.log(4.0), way
        assert [p["subset"] for p in result.pairs] == ["askscience", "legaladvice"], way
        assert result.meta(1)["domain"] == "legaladvice_validation", way
        assert result.meta(0)["created_at_utc_A"] == 1600000000, way  # int64 kept as an integer
        assert [r["reason"] for r in result.rejects] == ["undetermined preference"], way
