import gzip
import json
from pathlib import Path

import pytest

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
