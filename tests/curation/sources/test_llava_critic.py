from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import RowError
from curation.images import DEFAULT_MAX_PIXELS, ImagesRoot
from curation.sources import get_adapter
from curation.sources.base import ReadOptions, RowContext
from curation.sources.llava_critic import parse_verdict
from tests.conftest import RunIngest, image_bytes

INSTRUCTION = (
    "<image>\nGiven an image and a corresponding question, please serve as an unbiased and fair judge to evaluate "
    "the quality of the answers provided by a Large Multimodal Model (LMM). Determine which answer is better and "
    "explain your reasoning with specific details. Your task is provided as follows:\n"
)


def critic_prompt(question: str, first: str, second: str) -> str:
    responses = f"The first response: [{first}]\nThe second response: [{second}]"
    return f"{INSTRUCTION}Question: [{question}]\n{responses}\nASSISTANT:\n"


def row(human: str, critique: str, seed: int = 0, **extra: Any) -> dict[str, Any]:
    conversations = [{"from": "human", "value": human}, {"from": "gpt", "value": critique}]
    image = {"bytes": image_bytes(seed), "path": f"{seed}.png"}
    return {"id": f"row-{seed}", "source": "VLFeedback", "conversations": conversations, "image": image, **extra}


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_verdict_orientation_layouts_and_ties(tmp_path: Path, run_ingest: RunIngest) -> None:
    mt_bench = (
        "<image>\n[Question]\nHow many cats?\n\n[The Start of Assistant A's Answer]\nTwo cats [left, right].\n"
        "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\nThree.\n"
        "[The End of Assistant B's Answer]\nOutput [[A]] or [[B]]."
    )
    rows = [
        row(
            critic_prompt("What is shown?", "A dog [maybe].", "A brown dog on grass."),
            "Response 1 is vague. Unlike Response 1, Response 2 is more accurate. Overall, Response 2 is better.",
            seed=1,
        ),
        row(mt_bench, "Assistant A counts correctly.\n\nFinal verdict: [[A]]", seed=2),
        row(critic_prompt("Colour?", "Red.", "It is red."), "Both are correct; they are equally good.", seed=3),
    ]
    result = run_ingest("llava_critic", write_parquet(tmp_path / "pairwise.parquet", rows))
    assert not result.rejects
    first, second, tie = result.pairs
    assert (first["chosen"], first["rejected"], first["tie"]) == ("A brown dog on grass.", "A dog [maybe].", False)
    assert first["prompt"] == [{"role": "user", "content": "<image>\nWhat is shown?"}]
    assert (first["modality"], first["subset"]) == ("image", "VLFeedback")
    assert result.meta(0) == {"id": "row-1", "_derived": {"verdict": "Response 2 is better", "chosen_position": 2}}
    assert (second["chosen"], second["rejected"]) == ("Two cats [left, right].", "Three.")
    assert second["prompt"] == [{"role": "user", "content": "<image>\nHow many cats?"}]
    assert (tie["chosen"], tie["rejected"], tie["tie"]) == ("Red.", "It is red.", True)
    assert len(result.images) == 3


def test_rejects(tmp_path: Path, run_ingest: RunIngest) -> None:
    pair = critic_prompt("Q?", "yes", "no")
    rows = [
        row(pair, "Both have merits and flaws.", seed=1),
        row(critic_prompt("Q?", "same", "same"), "Response 1 is better.", seed=2),
        row(critic_prompt("Q?", "", "no"), "Response 2 is better.", seed=3),
        row(f"{INSTRUCTION}Question: [Q?]\nThe LMM response: [yes]\nASSISTANT:\n", "Score: 80", seed=4),
        row("Which is better, A or B?", "Response 1 is better.", seed=5),
        {**row(pair, "Response 1 is better.", seed=6), "image": {"bytes": None, "path": "gone.png"}},
    ]
    result = run_ingest("llava_critic", write_parquet(tmp_path / "pairwise.parquet", rows))
    assert [r["reason"] for r in result.rejects] == [
        "undetermined preference",
        "identical responses",
        "unparsable judge prompt",
        "pointwise row (no pair)",
        "unparsable judge prompt",
        "image not found",
    ]
    assert not result.pairs


def test_pointwise_config_rows_are_rejected() -> None:
    adapter = get_adapter("llava_critic")({}, ReadOptions(config="pointwise"))
    ctx = RowContext("pointwise:0", ImagesRoot(None), DEFAULT_MAX_PIXELS)
    with pytest.raises(RowError, match="pointwise row"):
        adapter.convert(row(critic_prompt("Q?", "a", "b"), "Response 1 is better."), ctx)


@pytest.mark.parametrize(
    ("critique", "winner"),
    [
        ("Compared to Response 2, Response 1 is better.", 1),
        ("The second answer is clearly better than the first.", 2),
        ("Response 1 is not better. Overall Judgment: Answer 2", 2),
        ("I prefer Response 1.", 1),
        ("It is a tie.", None),
    ],
)
def test_parse_verdict(critique: str, winner: int | None) -> None:
    assert parse_verdict(critique)[0] == winner
