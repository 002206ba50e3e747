import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from curation.cards import declared_features, source_cards
from curation.errors import RowError
from curation.schema import canonical_text
from curation.sources.hh_rlhf import parse_transcript
from tests.conftest import RunIngest, write_jsonl

HH_TEST = "hh-rlhf/harmless-base/test.jsonl.gz"


def test_multi_turn_prompt_and_answers(tmp_path: Path, run_ingest: RunIngest) -> None:
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Tell me a joke.\n\nAssistant: Why did the chicken...",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Tell me a joke.\n\nAssistant: No.",
    }
    result = run_ingest("hh_rlhf", write_jsonl(tmp_path / "x.jsonl", [row]))
    pair = result.pairs[0]
    assert pair["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert (pair["chosen"], pair["rejected"]) == ("Why did the chicken...", "No.")
    assert pair["modality"] == "text" and pair["images"] == [] and not pair["tie"] and pair["margin"] is None


def test_an_answer_holding_a_human_turn_is_a_reject(tmp_path: Path, run_ingest: RunIngest) -> None:
    """Transcripts that part before their last turn: what follows the shared prompt is no single answer."""
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: more",
           "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}  # fmt: skip
    result = run_ingest("hh_rlhf", write_jsonl(tmp_path / "x.jsonl", [row]))
    assert not result.pairs
    [reject] = result.rejects
    assert reject["reason"] == "answer holds a human turn" and "field 'chosen'" in reject["detail"]


def test_answers_that_share_their_first_words() -> None:
    # The common prefix runs into the answers; it is cut back to the last shared Assistant marker.
    assert parse_transcript("\n\nHuman: a\n\nAssistant: b") == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    with pytest.raises(RowError, match="malformed transcript"):
        parse_transcript("preamble\n\nHuman: a")


def test_all_real_rows(shared_data: Path, run_ingest: RunIngest) -> None:
    result = run_ingest("hh_rlhf", shared_data / HH_TEST)
    assert result.summary.rows_read == 2312 and result.summary.pairs == 2312 and not result.rejects
    pairs = result.pairs
    with gzip.open(shared_data / HH_TEST, "rt", encoding="utf-8") as handle:
        native = [json.loads(line) for line in handle]
    for row, pair in zip(native, pairs, strict=True):
        assert pair["prompt"][-1]["role"] == "user"
        # The answers are exactly the transcripts' remainders after the shared prompt.
        assert canonical_text(row["chosen"]).endswith(pair["chosen"])
        assert canonical_text(row["rejected"]).endswith(pair["rejected"])
    # Rows where an answer itself contains "\n\nAssistant:": both sides still share one prompt.
    for i in (1254, 1688, 1950, 1952, 2036):
        assert "Assistant:" in pairs[i]["chosen"] + pairs[i]["rejected"]
    assert [pairs[i]["prompt"][-1]["content"] for i in (1254,)] == ["Isn't that drag kings?"]
    empty = [i for i, p in enumerate(pairs) if not p["chosen"] or not p["rejected"]]
    assert empty == [86, 516, 925, 1103]
    turns = [sum(m["role"] == "user" for m in p["prompt"]) for p in pairs]
    assert (min(turns), max(turns)) == (1, 18)
    assert len({p["prompt_id"] for p in pairs}) == 2310  # two prompts occur twice
    assert len({p["pair_id"] for p in pairs}) == 2312


def test_rows_as_the_hub_serves_them(shared_data: Path, hub_ingest: Any) -> None:
    """Real rows (the first, one whose answer holds the marker, one with an empty answer) with the declared
    features, and a row whose transcripts share no prompt (rejected)."""
    features = declared_features(source_cards()["hh_rlhf"])
    with gzip.open(shared_data / HH_TEST, "rt", encoding="utf-8") as handle:
        native = [json.loads(line) for line in handle]
    rows = [native[0], native[1254], native[86], {"chosen": "\n\nHuman: Hi", "rejected": "Hello there"}]
    for way, result in hub_ingest("hh_rlhf", rows, features).items():
        first, marker, empty = result.pairs
        for row, pair in zip(rows, result.pairs, strict=False):
            assert canonical_text(row["chosen"]).endswith(pair["chosen"]), way
            assert canonical_text(row["rejected"]).endswith(pair["rejected"]), way
            assert pair["prompt"][-1]["role"] == "user" and pair["chosen"] != pair["rejected"], way
        assert marker["prompt"][-1]["content"] == "Isn't that drag kings?", way
        assert "" in (empty["chosen"], empty["rejected"]), way
        # A file of the Hub layout names no subset folder.
        assert (first["subset"], first["tie"], first["margin"], first["chosen_score"]) == (None, False, None, None), way
        assert [r["reason"] for r in result.rejects] == ["no shared prompt"], way


def test_a_subset_read_from_the_hub_by_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hh-rlhf's subsets are folders of one repository: `--data-dir harmless-base` reads one, and names it."""
    import curation.readers
    from curation.images import ImagesRoot
    from curation.ingest import ingest
    from curation.sources import get_adapter
    from curation.sources.base import ReadOptions

    row = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}
    for folder in ("harmless-base", "helpful-base"):
        (tmp_path / "repo" / folder).mkdir(parents=True)
        with gzip.open(tmp_path / "repo" / folder / "train.jsonl.gz", "wt") as handle:
            handle.write(json.dumps({**row, "chosen": row["chosen"] + f" ({folder})"}) + "\n")
    monkeypatch.setattr(curation.readers, "is_hub_id", lambda location: True)  # the folder stands for the Hub id
    adapter = get_adapter("hh_rlhf")({}, ReadOptions(split="train", data_dir="harmless-base"))
    summary = ingest(adapter, str(tmp_path / "repo"), tmp_path / "out", ImagesRoot(None))
    [pair] = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    assert summary.rows_read == 1 and pair["subset"] == "harmless-base"
    assert pair["chosen"] == "Hello. (harmless-base)" and pair["source_row"] == "train:0"
