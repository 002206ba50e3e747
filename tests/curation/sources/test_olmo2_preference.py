from pathlib import Path

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
