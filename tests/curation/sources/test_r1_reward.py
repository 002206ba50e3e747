import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from curation.cards import declared_features, source_cards
from curation.errors import RowError
from curation.sources.r1_reward import parse_judge_prompt
from tests.conftest import RunIngest, image_bytes, write_image, write_jsonl

JUDGE_IMAGE = "/mmu_mllm_hdd/yfzhang/data/RLAIF-V-image/cake.jpg"


def judge_text(question: str, first: str, second: str, h: str = "######", output: bool = True) -> str:
    text = (
        "You are a highly skilled and impartial evaluator tasked with comparing two responses.\n\n"
        f"{h} **Input:**  \n{h} [Question]:\n{question}  \n\n"
        f"{h} [Response 1]:\n{first}  \n\n{h} [Response 2]:\n{second}  \n\n"
    )
    if output:
        text += f"{h} **Output Format (strictly follow):**  \n<think>analysis</think><answer>1/2</answer>"
    return text


def row(text: str, answer: Any, image: Any = "", question: str = "Describe the artwork.") -> dict[str, Any]:
    content = [{"type": "text", "text": text}, {"type": "image", "image": JUDGE_IMAGE}]
    return {
        "question": question,
        "message": json.dumps([{"role": "user", "content": content}]),
        "answer": answer,
        "image": image,
        "source": "rlaif",
    }


def test_orientation_and_the_image_from_the_judge_prompt(tmp_path: Path, run_ingest: RunIngest) -> None:
    write_image(tmp_path / "imgs" / "RLAIF-V-image" / "cake.jpg", seed=5)
    second = "A print of a cake shop,\n\n### Details\nwarm colours."  # a markdown heading inside a response
    text = judge_text("Describe the artwork.", "A cake.", second, h="####")
    path = write_jsonl(tmp_path / "rl.jsonl", [row(text, ["<answer>2</answer>"])])
    result = run_ingest("r1_reward", path, images_root=tmp_path / "imgs")
    assert not result.rejects
    pair = result.pairs[0]
    assert pair["chosen"] == second
    assert pair["rejected"] == "A cake."
    assert pair["prompt"] == [{"role": "user", "content": "<image>\nDescribe the artwork."}]
    assert (pair["modality"], pair["tie"], pair["margin"]) == ("image", False, None)
    assert result.images[0]["bytes"] == image_bytes(5, fmt="JPEG")
    assert result.meta(0) == {"source": "rlaif", "_derived": {"chosen_position": 2, "judge_image_path": JUDGE_IMAGE}}


def test_image_column_as_base64_or_relative_path(tmp_path: Path, run_ingest: RunIngest) -> None:
    write_image(tmp_path / "imgs" / "col" / "x.png", seed=7)
    text = judge_text("ignored", "Good answer.", "Bad answer.")
    rows = [
        row(text, ["<answer>1</answer>"], image=base64.b64encode(image_bytes(6)).decode()),
        row(text, "1", image="col/x.png", question=""),  # empty question: the [Question] section
    ]
    result = run_ingest("r1_reward", write_jsonl(tmp_path / "rl.jsonl", rows), images_root=tmp_path / "imgs")
    assert [(p["chosen"], p["rejected"]) for p in result.pairs] == [("Good answer.", "Bad answer.")] * 2
    assert [p["prompt"][0]["content"] for p in result.pairs] == ["<image>\nDescribe the artwork.", "<image>\nignored"]
    assert [img["bytes"] for img in result.images] == [image_bytes(6), image_bytes(7)]


def test_rejects(tmp_path: Path, run_ingest: RunIngest) -> None:
    good = judge_text("q", "one", "two")
    rows = [
        row(good, ["<answer>3</answer>"], image="x.png"),
        row(good, ["<answer>1</answer>", "<answer>2</answer>"], image="x.png"),
        row(judge_text("q", "one\n[Response 2]: quoted", "two"), ["2"], image="x.png"),
        row(judge_text("q", "one", "two", output=False), ["2"], image="x.png"),
        {**row(good, ["2"]), "message": "[{not json"},
        row(good, ["2"], image="missing.png"),
    ]
    write_image(tmp_path / "imgs" / "x.png")
    result = run_ingest("r1_reward", write_jsonl(tmp_path / "rl.jsonl", rows), images_root=tmp_path / "imgs")
    assert [r["reason"] for r in result.rejects] == [
        "undetermined preference",
        "undetermined preference",
        "unparsable judge prompt",
        "unparsable judge prompt",
        "malformed json field",
        "image not found",
    ]
    detail = "rl.jsonl:2: 'message': response headings ['1', '2', '2'], expected ['1', '2']"
    assert result.rejects[2]["detail"] == detail


def test_parse_judge_prompt_needs_both_responses() -> None:
    assert parse_judge_prompt(judge_text("Q?", " a ", "b")) == ("Q?", "a", "b")
    with pytest.raises(RowError, match=r"\[Response 1\] is empty"):
        parse_judge_prompt(judge_text("Q?", "", "b"))


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any) -> None:
    """The card's declared features: `message` is a JSON string, `answer` a `sequence` of strings, `image` a
    string (base64 bytes here; empty in the second row, whose image is found by the judge prompt's file name)."""
    features = declared_features(source_cards()["r1_reward"])
    write_image(tmp_path / "imgs" / "RLAIF-V-image" / "cake.jpg", seed=5)
    text = judge_text("Describe the artwork.", "A cake shop.", "A bakery window at night.")
    labels = [
        (["<answer>2</answer>"], base64.b64encode(image_bytes(6)).decode()),
        (["<answer>1</answer>"], ""),
        (["<answer>3</answer>"], ""),
    ]
    # `source` is not a declared feature
    rows = [{k: v for k, v in row(text, answer, image).items() if k != "source"} for answer, image in labels]
    for way, result in hub_ingest("r1_reward", rows, features, images_root=tmp_path / "imgs").items():
        prefers_second, prefers_first = result.pairs
        assert (prefers_second["chosen"], prefers_second["rejected"]) == ("A bakery window at night.", "A cake shop.")
        assert (prefers_first["chosen"], prefers_first["rejected"]) == ("A cake shop.", "A bakery window at night.")
        assert {p["prompt"][0]["content"] for p in result.pairs} == {"<image>\nDescribe the artwork."}, way
        assert prefers_second["images"] == [hashlib.sha256(image_bytes(6)).hexdigest()], way
        assert prefers_first["images"] == [hashlib.sha256(image_bytes(5, fmt="JPEG")).hexdigest()], way
        assert [result.meta(i)["_derived"]["chosen_position"] for i in range(2)] == [2, 1], way
        assert [r["reason"] for r in result.rejects] == ["undetermined preference"], way
