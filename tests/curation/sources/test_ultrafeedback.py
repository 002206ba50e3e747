import copy
from pathlib import Path
from typing import Any

from curation.cards import declared_features, features_from_yaml, source_cards
from tests.conftest import RunIngest, write_jsonl

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


def completion(i: int, overall: Any, ratings: tuple[str, str, str, str] = ("3", "3", "3", "3")) -> dict[str, Any]:
    return {
        "model": f"model-{i}",
        "principle": "helpfulness",
        "custom_system_prompt": f"system {i}",
        "response": f"answer {i}",
        "annotations": {a: {"Rating": r, "Rationale": "..."} for a, r in zip(ASPECTS, ratings, strict=True)},
        "critique": "ok",
        "fine-grained_score": 3.0,
        "overall_score": overall,
    }


def uf_row(instruction: str, completions: list[dict[str, Any]], source: str = "evol_instruct") -> dict[str, Any]:
    return {
        "source": source,
        "instruction": instruction,
        "models": [c["model"] for c in completions],
        "correct_answers": ["none"],
        "incorrect_answers": [],
        "completions": completions,
    }


# overall_score 7, 9, 3, 5.5: the largest gap is answer 1 (9) over answer 2 (3).
RANKED = uf_row("Write a haiku.", [completion(0, 7.0), completion(1, 9.0), completion(2, "3"), completion(3, 5.5)])


def answers(pairs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(p["chosen"], p["rejected"]) for p in pairs]


def test_max_gap_is_ultra_hard(tmp_path: Path, run_ingest: RunIngest) -> None:
    result = run_ingest("ultrafeedback", write_jsonl(tmp_path / "uf.jsonl", [RANKED]))
    [pair] = result.pairs
    assert pair["prompt"] == [{"role": "user", "content": "Write a haiku."}]
    assert (pair["chosen"], pair["rejected"]) == ("answer 1", "answer 2")
    assert (pair["chosen_score"], pair["rejected_score"], pair["margin"], pair["tie"]) == (9.0, 3.0, 6.0, False)
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-1", "model-2")
    assert (pair["subset"], pair["binarization"], pair["modality"], pair["license"]) == (
        "evol_instruct",
        "max_gap",
        "text",
        "MIT",
    )
    meta = result.meta(0)
    assert sorted(meta) == ["_derived", "completions", "correct_answers", "incorrect_answers"]
    assert meta["_derived"] == {"chosen_index": 1, "rejected_index": 2}
    assert meta["completions"][2]["annotations"]["honesty"]["Rationale"] == "..."


def test_all_pairs_orients_each_pair_and_min_margin_filters(tmp_path: Path, run_ingest: RunIngest) -> None:
    path = write_jsonl(tmp_path / "uf.jsonl", [RANKED])
    every = run_ingest("ultrafeedback", path, options={"policy": "all_pairs"})
    assert answers(every.pairs) == [
        ("answer 1", "answer 0"),
        ("answer 0", "answer 2"),
        ("answer 0", "answer 3"),
        ("answer 1", "answer 2"),
        ("answer 1", "answer 3"),
        ("answer 3", "answer 2"),
    ]
    assert [p["margin"] for p in every.pairs] == [2.0, 4.0, 1.5, 6.0, 3.5, 2.5]
    assert {p["binarization"] for p in every.pairs} == {"all_pairs"}
    wide = run_ingest("ultrafeedback", path, options={"policy": "all_pairs", "min_margin": "3"})
    assert answers(wide.pairs) == [("answer 0", "answer 2"), ("answer 1", "answer 2"), ("answer 1", "answer 3")]
    none = run_ingest("ultrafeedback", path, options={"min_margin": 10})
    assert [(r["reason"], r["source_row"]) for r in none.rejects] == [("margin too small", "uf.jsonl:0")]


def test_best_vs_random_keeps_the_best_and_is_deterministic(tmp_path: Path, run_ingest: RunIngest) -> None:
    path = write_jsonl(tmp_path / "uf.jsonl", [RANKED])
    first = run_ingest("ultrafeedback", path, options={"policy": "best_vs_random"})
    again = run_ingest("ultrafeedback", path, options={"policy": "best_vs_random"})
    [pair] = first.pairs
    assert pair["chosen"] == "answer 1" and pair["rejected"] in {"answer 0", "answer 2", "answer 3"}
    assert pair["binarization"] == "best_vs_random"
    assert answers(again.pairs) == answers(first.pairs)


def test_mean_rating_skips_na_ratings(tmp_path: Path, run_ingest: RunIngest) -> None:
    # overall_score ranks answer 3 first; the aspect ratings rank answer 0 first, so the option must matter.
    row = uf_row(
        "Explain DNS.",
        [
            completion(0, 2.0, ("5", "5", "5", "5")),
            completion(1, 5.0, ("N/A", "N/A", "N/A", "N/A")),
            completion(2, 4.0, ("2", "N/A", "3", " 4 ")),
            completion(3, 9.0, ("1", "1", "1", "1")),
        ],
    )
    path = write_jsonl(tmp_path / "uf.jsonl", [row])
    by_overall = run_ingest("ultrafeedback", path)
    assert answers(by_overall.pairs) == [("answer 3", "answer 0")]
    by_mean = run_ingest("ultrafeedback", path, options={"score": "mean_rating", "policy": "all_pairs"})
    # Answer 1 (all "N/A") takes no part; answer 2 averages its three parsable ratings to 3.
    assert answers(by_mean.pairs) == [("answer 0", "answer 2"), ("answer 0", "answer 3"), ("answer 2", "answer 3")]
    assert [(p["chosen_score"], p["rejected_score"]) for p in by_mean.pairs] == [(5.0, 3.0), (5.0, 1.0), (3.0, 1.0)]


def test_unparsable_scores_and_ties(tmp_path: Path, run_ingest: RunIngest) -> None:
    na = uf_row("q1", [completion(0, "N/A"), completion(1, 8.0), completion(2, None), completion(3, "")])
    equal = uf_row("q2", [completion(i, 6.0) for i in range(4)], source="truthful_qa")
    broken = {**uf_row("q3", [completion(0, 1.0), completion(1, 2.0)]), "completions": [completion(0, 1.0), "x"]}
    no_answer = uf_row("q4", [completion(0, 1.0), {**completion(1, 2.0), "response": None}])
    path = write_jsonl(tmp_path / "uf.jsonl", [na, equal, broken, no_answer])
    result = run_ingest("ultrafeedback", path)
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [
        ("uf.jsonl:0", "unparsable score"),
        ("uf.jsonl:2", "wrong type"),
        ("uf.jsonl:3", "missing field"),
    ]
    assert result.rejects[0]["detail"] == "uf.jsonl:0: 'completions': 1 of 4 have a parsable overall_score"
    assert result.rejects[2]["detail"] == "uf.jsonl:3: 'completions[1].response'"
    [tie] = result.pairs
    assert (tie["chosen"], tie["rejected"], tie["tie"], tie["margin"]) == ("answer 0", "answer 1", True, 0.0)
    assert tie["subset"] == "truthful_qa"


def hub_rows() -> list[dict[str, Any]]:
    """Rows with the declared types: float overall scores, string ratings ("N/A" among them)."""
    ranked = uf_row("Write a haiku.", [completion(0, 7.0), completion(1, 9.0), completion(2, 3.0), completion(3, 5.5)])
    mixed = uf_row(
        "Explain DNS.",
        [
            completion(0, 2.0, ("5", "5", "5", "5")),
            completion(1, None, ("N/A", "N/A", "N/A", "N/A")),
            completion(2, 4.0, ("2", "N/A", "3", " 4 ")),
            completion(3, 9.0, ("1", "1", "1", "1")),
        ],
        source="truthful_qa",
    )
    unscored = uf_row("q", [completion(0, 1.0), completion(1, None), completion(2, None), completion(3, None)])
    return [ranked, mixed, unscored]


def as_sequence(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`completions` as the record of lists `datasets` serves for a `sequence` of structs."""
    return [{**r, "completions": {k: [c[k] for c in r["completions"]] for k in r["completions"][0]}} for r in rows]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The card's features (`completions` a list of records) and the same data declared as a `sequence` of
    structs (one record of lists): both give the same pairs, by overall_score and by mean aspect rating."""
    card = source_cards()["ultrafeedback"]
    as_seq = copy.deepcopy(card.front["features"]["configs"]["default"])
    [completions] = [f for f in as_seq if f["name"] == "completions"]
    completions["sequence"] = completions.pop("list")
    features = declared_features(card)
    shapes = {
        "list": (features, hub_rows()),
        "sequence": (features_from_yaml(as_seq), as_sequence(hub_rows())),
    }
    outputs = {}
    for shape, (declared, rows) in shapes.items():
        by_overall = hub_ingest("ultrafeedback", rows, declared)
        by_mean = hub_ingest("ultrafeedback", rows, declared, options={"score": "mean_rating"})
        for way, result in by_overall.items():
            ranked, mixed = result.pairs
            assert answers(result.pairs) == [("answer 1", "answer 2"), ("answer 3", "answer 0")], (shape, way)
            assert (ranked["margin"], ranked["chosen_model"], ranked["rejected_model"]) == (6.0, "model-1", "model-2")
            assert (mixed["subset"], mixed["binarization"], mixed["tie"]) == ("truthful_qa", "max_gap", False)
            honesty = result.meta(0)["completions"][2]["annotations"]["honesty"]
            assert honesty == {"Rating": "3", "Rationale": "..."}, (shape, way)
            assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
                ("unparsable score", "'completions': 1 of 4 have a parsable overall_score")
            ], (shape, way)
        for way, result in by_mean.items():
            # All aspects rated 3: a tie; answer 1 (all "N/A") takes no part in the second row's mean ranking.
            tie, mixed, rated = result.pairs
            assert (tie["tie"], tie["margin"], rated["tie"]) == (True, 0.0, True), (shape, way)
            assert (mixed["chosen"], mixed["rejected"], mixed["chosen_score"], mixed["rejected_score"]) == (
                "answer 0",
                "answer 3",
                5.0,
                1.0,
            ), (shape, way)
            assert not result.rejects, (shape, way)
        outputs[shape] = [{k: v for k, v in p.items() if k != "source_row"} for p in by_overall["streaming"].pairs]
    assert outputs["list"] == outputs["sequence"]
