from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from curation.sources import REGISTRY
from tests.conftest import RunIngest, write_jsonl


def test_ratings_give_margin_and_models(tmp_path: Path, run_ingest: RunIngest) -> None:
    system = {"role": "system", "content": "Be brief."}
    ask = {"role": "user", "content": "Capital of France?"}
    row = {
        "id": "olmo-1",
        "prompt": "Capital of France?",
        "chosen": [system, ask, {"role": "assistant", "content": "Paris."}],
        "rejected": [system, ask, {"role": "assistant", "content": "Lyon."}],
        "chosen_rating": 5.0,
        "rejected_rating": 1.5,
        "chosen_model": "gpt-4o",
        "rejected_model": "olmo-1b",
        "source": "ultrafeedback_cleaned",
    }
    result = run_ingest("olmo2_preference", write_jsonl(tmp_path / "olmo.jsonl", [row]))
    [pair] = result.pairs
    assert pair["prompt"] == [system, ask]
    assert (pair["chosen"], pair["rejected"], pair["margin"]) == ("Paris.", "Lyon.", 3.5)
    assert (pair["chosen_model"], pair["rejected_model"]) == ("gpt-4o", "olmo-1b")
    assert pair["subset"] == "ultrafeedback_cleaned"
    assert (pair["source"], pair["license"], pair["binarization"], pair["modality"]) == (
        "olmo2_preference",
        "ODC-BY-1.0",
        "best_vs_random",
        "text",
    )
    assert result.meta(0) == {"id": "olmo-1"}
    assert REGISTRY["olmo2_preference"].info.hub_id == "allenai/olmo-2-0425-1b-preference-mix"


def test_prompt_must_end_with_a_user_turn(tmp_path: Path, run_ingest: RunIngest) -> None:
    ask = {"role": "user", "content": "Q"}
    row = {
        "chosen": [ask, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
        "rejected": [ask, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "c"}],
    }
    result = run_ingest("olmo2_preference", write_jsonl(tmp_path / "olmo.jsonl", [row]))
    assert [r["reason"] for r in result.rejects] == ["no user turn"]


def olmo(i: int, chosen_rating: float | None, rejected_rating: float | None) -> dict[str, Any]:
    ask = {"role": "user", "content": f"Question {i}?"}
    return {
        "prompt": f"Question {i}?",
        "chosen": [ask, {"role": "assistant", "content": f"good {i}"}],
        "rejected": [ask, {"role": "assistant", "content": f"bad {i}"}],
        "chosen_rating": chosen_rating,
        "rejected_rating": rejected_rating,
        "chosen_model": "gpt-4o",
        "rejected_model": "olmo-1b",
        "source": "wildchat",
        "id": f"olmo-{i}",
    }


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The declared features (float64 ratings): margin = chosen - rejected rating, equal ratings tie, absent
    ratings leave an unscored pair, a rating that is not a number is rejected; both paths agree."""
    features = declared_features(source_cards()["olmo2_preference"])
    rows = [olmo(0, 4.5, 2.25), olmo(1, 3.0, 3.0), olmo(2, None, None), olmo(3, float("nan"), 1.0)]
    for way, result in hub_ingest("olmo2_preference", rows, features).items():
        rated, tie, unrated = result.pairs
        assert (rated["chosen"], rated["rejected"], rated["prompt"][-1]["content"]) == (
            "good 0",
            "bad 0",
            "Question 0?",
        ), way
        assert (rated["chosen_score"], rated["rejected_score"], rated["margin"], rated["tie"]) == (
            4.5,
            2.25,
            2.25,
            False,
        ), way
        assert (rated["chosen_model"], rated["rejected_model"], rated["subset"]) == ("gpt-4o", "olmo-1b", "wildchat"), (
            way
        )
        assert (rated["binarization"], unrated["binarization"]) == ("best_vs_random", None), way
        assert (tie["tie"], tie["margin"], unrated["margin"], unrated["tie"]) == (True, 0.0, None, False), way
        assert result.meta(0) == {"id": "olmo-0"}, way
        assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
            ("unparsable score", "'chosen_rating': nan")
        ], way
