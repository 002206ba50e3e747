import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from tests.conftest import RunIngest, write_jsonl

ASK = "Write a Python function that reverses a string."


def state(model: str, answer: str, turns: list[list[str]] | None = None) -> dict[str, Any]:
    return {
        "chat_mode": "battle_anony",
        "conv_id": f"conv-{model}",
        "messages": [*(turns or [["USER", ASK]]), ["ASSISTANT", answer]],
        "model_name": model,
        "offset": 0,
        "roles": ["USER", "ASSISTANT"],
        "sandbox_logs_by_round": ["x" * 1000],
    }


def arena(vote: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "chat",
        "feedback": {"correctness": "A", "efficiency": "tie", "vote_type": vote},
        "models": {"model_A": "gpt-4o", "model_B": "claude-3.5"},
        "chat_session_id": "s1",
        "instruction": ASK,
        "states": {
            "model_A": state("gpt-4o", "def r(s): return s[::-1]"),
            "model_B": state("claude-3.5", "use a loop"),
        },
        "timestamp": "2025-01-01",
        **extra,
    }


def test_votes_orient_the_pair_from_parquet(tmp_path: Path, run_ingest: RunIngest) -> None:
    path = tmp_path / "train-00000-of-00003.parquet"
    rows = [arena("leftvote"), arena("rightvote"), arena("tievote"), arena("bothbad_vote"), arena("Right"),
            arena("both_bad")]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = run_ingest("swe_arena", path)
    left, right, tie, both_bad, right_cased, both_bad_button = result.pairs
    assert left["prompt"] == [{"role": "user", "content": ASK}]
    assert (left["chosen"], left["rejected"]) == ("def r(s): return s[::-1]", "use a loop")
    assert (left["chosen_model"], left["rejected_model"], left["tie"]) == ("gpt-4o", "claude-3.5", False)
    assert (right["chosen"], right["chosen_model"], right["rejected_model"]) == ("use a loop", "claude-3.5", "gpt-4o")
    assert right_cased["chosen"] == "use a loop"
    assert (tie["chosen"], tie["tie"], both_bad["chosen"], both_bad["tie"]) == (
        "def r(s): return s[::-1]",
        True,
        "def r(s): return s[::-1]",
        True,
    )
    assert result.meta(3)["_derived"] == {"chosen_side": "model_A", "both_bad": True}
    assert both_bad_button["tie"] and result.meta(5)["_derived"]["both_bad"]  # the app's button value
    meta = result.meta(1)
    # Only the selected columns are read (no `timestamp`); the sandbox logs and the messages stay out of meta.
    assert sorted(meta) == ["_derived", "chat_session_id", "feedback", "instruction", "states", "type"]
    assert meta["states"]["model_B"] == {
        "chat_mode": "battle_anony",
        "conv_id": "conv-claude-3.5",
        "model_name": "claude-3.5",
        "offset": 0,
        "roles": ["USER", "ASSISTANT"],
    }
    assert meta["feedback"]["vote_type"] == "rightvote"
    assert (left["modality"], left["license"], left["margin"]) == ("text", "unknown (unverified)", None)


def test_json_columns_plain_roles_and_rejects(tmp_path: Path, run_ingest: RunIngest) -> None:
    as_json = arena("model_B")
    as_json["feedback"] = json.dumps(as_json["feedback"])
    as_json["states"] = json.dumps(as_json["states"])
    plain = arena("left", models=None)
    plain["states"]["model_B"]["roles"] = []
    plain["states"]["model_B"]["messages"] = [["user", ASK], ["assistant", "B says hi"]]
    multi_turn = arena("left")
    for side, answer in (("model_A", "a1"), ("model_B", "b1")):
        multi_turn["states"][side]["messages"] = [
            ["USER", ASK],
            ["ASSISTANT", answer],
            ["USER", "More"],
            ["ASSISTANT", "x"],
        ]
    no_b = arena("left")
    del no_b["states"]["model_B"]
    rows = [as_json, plain, arena("skip"), arena(None), multi_turn, no_b, {**arena("left"), "states": "{oops"}]
    result = run_ingest("swe_arena", write_jsonl(tmp_path / "arena.jsonl", rows))
    from_json, from_plain = result.pairs
    assert (from_json["chosen"], from_json["chosen_model"]) == ("use a loop", "claude-3.5")
    # Without `models`, the names come from the states; plain user/assistant roles need no `roles`.
    assert (from_plain["chosen"], from_plain["rejected"]) == ("def r(s): return s[::-1]", "B says hi")
    assert (from_plain["chosen_model"], from_plain["rejected_model"]) == ("gpt-4o", "claude-3.5")
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("undetermined preference", "arena.jsonl:2: 'feedback.vote_type': 'skip'"),
        ("missing field", "arena.jsonl:3: 'feedback.vote_type'"),
        ("prompt differs between sides", "arena.jsonl:4: model_A and model_B differ before their final answers"),
        ("missing side", "arena.jsonl:5: 'states.model_B': NoneType"),
        (
            "malformed json field",
            "arena.jsonl:6: 'states': Expecting property name enclosed in double quotes at column 2",
        ),
    ]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The declared features: nested structs, each side's messages a list of [role, text] lists with FastChat
    role names; BigCodeArena's vote spellings orient the pair."""
    features = declared_features(source_cards()["swe_arena"])

    def hub_row(vote: str) -> dict[str, Any]:
        row = arena(vote)
        del row["timestamp"]  # not a declared column
        for side in row["states"].values():
            del side["sandbox_logs_by_round"]  # not declared (see the card)
            side |= {"chat_session_id": "s1", "chat_start_time": "2025-04-03 18:24:58"}
        row["feedback"] |= {"explainability": "A", "maintainability": "B", "ui_ux_design": "tie"}
        return row

    rows = [hub_row("vote_model_B"), hub_row("vote_left"), hub_row("vote_both_bad"), hub_row("vote_skip")]
    for way, result in hub_ingest("swe_arena", rows, features).items():
        right, left, both_bad = result.pairs
        assert right["prompt"] == [{"role": "user", "content": ASK}], way
        assert (right["chosen"], right["rejected"]) == ("use a loop", "def r(s): return s[::-1]"), way
        assert (right["chosen_model"], right["rejected_model"], right["tie"]) == ("claude-3.5", "gpt-4o", False), way
        assert (left["chosen"], left["chosen_model"], left["tie"]) == ("def r(s): return s[::-1]", "gpt-4o", False), way
        assert (both_bad["tie"], result.meta(2)["_derived"]) == (True, {"chosen_side": "model_A", "both_bad": True}), (
            way
        )
        meta = result.meta(0)
        assert meta["states"]["model_A"] == {
            "chat_mode": "battle_anony",
            "chat_session_id": "s1",
            "chat_start_time": "2025-04-03 18:24:58",
            "conv_id": "conv-gpt-4o",
            "model_name": "gpt-4o",
            "offset": 0,
            "roles": ["USER", "ASSISTANT"],
        }, way
        assert meta["feedback"]["vote_type"] == "vote_model_B" and meta["type"] == "chat", way
        assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
            ("undetermined preference", "'feedback.vote_type': 'vote_skip'")
        ], way
