import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cards import declared_features, features_from_yaml, source_cards
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


@pytest.mark.parametrize(
    ("critique", "winner"),
    [
        ("Response 1 misses the dog.\nThe better response: [second]", 2),
        ("The better response: [first]. Because it names the dog.", 1),
        # The critic's verdict wins over a later free-text phrase of its justification.
        ("The better response: [2]. Because Response 1 is more detailed but wrong.", 2),
        ("Both describe the scene; the second adds the colour. [second]", 2),
        ("[First] is accurate.", 1),
        ("The two responses are identical.", None),
        ("Two responses are equally good.", None),
        ("Response 2 is better overall. Final verdict: [[A]]", 1),
        # Prose that merely contains a verdict form is read as prose: the form must end its line.
        ("Conclusion: Response 1 contains errors, so Response 2 is better.", 2),
        ("Conclusion: A careful comparison shows that Response 2 is more accurate.", 2),
        ("Verdict: A more detailed answer is not always better; here Response 2 is better.", 2),
        ("The two responses are identical in structure, but Response 2 is more accurate.", 2),
        ("The two responses are equally good. However, the first response is more accurate.", 1),
        ('The instruction asks for "[first]" or "[second]". Response 1 is better.', 1),
        ("In the first response [first] the model mentions a dog. Response 2 is better.", 2),
        ("Conclusion: Response 2.", 2),
        ("Response 2 is better overall, while Response 1 is equally verbose.", 2),
        ("Overall, the second response is better. Both mention that it is tied to a rope.", 2),
        ("Both are fine; it is a tie.", None),
    ],
)
def test_parse_explicit_verdicts(critique: str, winner: int | None) -> None:
    assert parse_verdict(critique)[0] == winner


def test_bracketed_and_identical_verdicts(tmp_path: Path, run_ingest: RunIngest) -> None:
    """`[first]`, `[second]` and "The two responses are identical" are verdicts (the last a tie, first response
    chosen); identical responses make a tie row only when the critique says they are identical."""
    responses = "Question: [Colour?]\nResponse 1: [Red.]\nResponse 2: [It is red.]\nASSISTANT:\n"
    rows = [
        row(critic_prompt("What is shown?", "A dog.", "A brown dog on grass."), "The better response: [second]", 1),
        row(critic_prompt("How many?", "Two.", "Three."), "Two cats are visible. The better response: [first]", 2),
        row(critic_prompt("Colour?", "Red.", "It is red."), "The two responses are identical.", 3),
        row(critic_prompt("Colour?", "Red.", "Red."), "The two responses are identical.", 4),
        row(critic_prompt("Colour?", "Red.", "Red."), "The better response: [first]", 5),
        row(f"{INSTRUCTION}{responses}", "[second]", 6),
    ]
    result = run_ingest("llava_critic", write_parquet(tmp_path / "pairwise.parquet", rows))
    second, first, tie, same, layout = result.pairs
    assert (second["chosen"], second["rejected"], second["tie"]) == ("A brown dog on grass.", "A dog.", False)
    assert result.meta(0)["_derived"] == {"verdict": "The better response: [second]", "chosen_position": 2}
    assert (first["chosen"], first["rejected"], first["tie"]) == ("Two.", "Three.", False)
    assert (tie["chosen"], tie["rejected"], tie["tie"]) == ("Red.", "It is red.", True)
    assert result.meta(2)["_derived"] == {"verdict": "The two responses are identical", "chosen_position": None}
    assert (same["chosen"], same["rejected"], same["tie"]) == ("Red.", "Red.", True)
    assert (layout["chosen"], layout["rejected"], layout["prompt"][0]["content"]) == (
        "It is red.",
        "Red.",
        "<image>\nColour?",
    )
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [("pairwise.parquet:4", "identical responses")]


def hub_rows() -> list[dict[str, Any]]:
    pointwise = f"{INSTRUCTION}Question: [Q?]\nThe LMM response: [yes]\nASSISTANT:\n"
    return [
        row(critic_prompt("What is shown?", "A dog.", "A brown dog on grass."), "The better response: [second]", 1),
        row(critic_prompt("Colour?", "Red.", "It is red."), "The two responses are identical.", 2),
        row(critic_prompt("Q?", "yes", "no"), "Both have merits.", 3),
        row(pointwise, "The score is 80.", 4),
    ]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The card's declared features (pairwise): `conversations` a `list` of {from, value}, `image` the Image
    feature. A pointwise-layout row is recognised by its instruction."""
    features = declared_features(source_cards()["llava_critic"], "pairwise")
    for way, result in hub_ingest("llava_critic", hub_rows(), features, config="pairwise").items():
        better, tie = result.pairs
        assert (better["chosen"], better["rejected"], better["tie"]) == ("A brown dog on grass.", "A dog.", False), way
        assert better["prompt"] == [{"role": "user", "content": "<image>\nWhat is shown?"}], way
        assert (better["subset"], better["images"]) == ("VLFeedback", [hashlib.sha256(image_bytes(1)).hexdigest()]), way
        assert json.loads(better["meta"]) == {
            "id": "row-1",
            "_derived": {"verdict": "The better response: [second]", "chosen_position": 2},
        }, way
        assert (tie["chosen"], tie["rejected"], tie["tie"]) == ("Red.", "It is red.", True), way
        assert [r["reason"] for r in result.rejects] == ["undetermined preference", "pointwise row (no pair)"], way


def test_conversations_as_a_sequence_of_structs(hub_ingest: Any) -> None:
    """Whether the card says `list` or `sequence` is unverified: a `sequence` of structs reaches the adapter as
    one record of lists ({from: [...], value: [...]}), which gives the same pairs."""
    card = source_cards()["llava_critic"]
    declared = card.front["features"]["configs"]["pairwise"]
    as_sequence = [
        {"name": f["name"], "sequence": f["list"]} if "list" in f else f for f in declared
    ]  # fmt: skip
    features = features_from_yaml(as_sequence)
    assert features["conversations"] == {
        "from": datasets.List(datasets.Value("string")),
        "value": datasets.List(datasets.Value("string")),
    }
    rows = [
        {**r, "conversations": {k: [t[k] for t in r["conversations"]] for k in ("from", "value")}} for r in hub_rows()
    ]
    for way, result in hub_ingest("llava_critic", rows, features, config="pairwise").items():
        assert [(p["chosen"], p["tie"]) for p in result.pairs] == [("A brown dog on grass.", False), ("Red.", True)], (
            way
        )
        assert json.loads(result.pairs[0]["meta"]) == {
            "id": "row-1",
            "_derived": {"verdict": "The better response: [second]", "chosen_position": 2},
        }, way
        assert [r["reason"] for r in result.rejects] == ["undetermined preference", "pointwise row (no pair)"], way


def test_the_pairwise_config_is_read_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub card declares the configs `pairwise` and `pointwise` and marks neither the default, so `datasets`
    refuses to guess: the adapter asks for `pairwise`, as a Hub id and as a local snapshot of the repository."""
    import curation.readers
    from curation.ingest import ingest

    repo = tmp_path / "repo"
    features = declared_features(source_cards()["llava_critic"], "pairwise")
    for config in ("pairwise", "pointwise"):
        (repo / config).mkdir(parents=True)
        datasets.Dataset.from_list(hub_rows()[:2], features=features).to_parquet(
            str(repo / config / "train-00000-of-00001.parquet")
        )
    card = "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n"
                   for c in ("pairwise", "pointwise"))  # fmt: skip
    (repo / "README.md").write_text(f"---\nconfigs:\n{card}---\n")
    adapter = get_adapter("llava_critic")({}, ReadOptions())
    assert adapter.read.config == "pairwise"
    local = ingest(adapter, str(repo), tmp_path / "local", ImagesRoot(None))
    with monkeypatch.context() as patch:
        patch.setattr(curation.readers, "is_hub_id", lambda location: True)
        hub = ingest(adapter, str(repo), tmp_path / "hub", ImagesRoot(None))
    for summary in (local, hub):
        assert (summary.rows_read, summary.pairs, summary.rows_rejected) == (2, 2, 0)
