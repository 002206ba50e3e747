"""validate on inline rows, through the op's context."""

from pathlib import Path

from curation.demo import photo_png
from tests.curation.ops.conftest import run_op_on_rows


def test_empty_answers_and_large_images_are_removed(tmp_path: Path) -> None:
    photo = photo_png("chelsea")
    rows = [
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
        {"prompt": "Say hi.", "chosen": "", "rejected": "No."},
        {"prompt": "Say hello.", "chosen": "Hello", "rejected": ""},
        {"prompt": "<image>What is this?", "chosen": "A cat.", "rejected": "A dog.", "images": [photo]},
    ]
    run = run_op_on_rows(tmp_path, "validate", rows, {"max_pixels": 1000})
    removed = run.removed()
    assert {k: reason for k, (reason, _) in removed.items()} == {
        1: "empty chosen",
        2: "empty rejected",
        3: "image too large",
    }
    assert removed[3][1].startswith("chosen 6 chars, rejected 6 chars, prompt 20 chars, 1 image, largest ")
    signals = {s["row_key"]: s for s in run.signals}
    assert signals[0]["max_image_pixels"] is None and signals[3]["max_image_pixels"] > 1000
    assert run.decision.evidence == {} and run.decision.max_removal_rate is None


def test_an_answer_with_no_visible_character_is_empty(tmp_path: Path) -> None:
    blank = ["\u200b\u200b", "\x00\x01", "\ufeff\u2060", "\u200e\u200f", " \u00a0 \u2028 ", "\u3164", "\u2800",
             "\u034f\ufe0f", "\u0301"]  # fmt: skip
    rows = [{"prompt": f"Q{i}", "chosen": text, "rejected": "No."} for i, text in enumerate(blank)]
    rows += [{"prompt": "Qr", "chosen": "Yes.", "rejected": "\u200b"},
             {"prompt": "Qv", "chosen": "\u200bok\u200d", "rejected": "😀"},
             {"prompt": "Qe", "chosen": "e\u0301", "rejected": "\u263a\ufe0f"}]  # fmt: skip
    run = run_op_on_rows(tmp_path, "validate", rows)
    removed = run.removed()
    assert {k: reason for k, (reason, _) in removed.items()} == {
        **{k: "empty chosen" for k in range(len(blank))},
        len(blank): "empty rejected",
    }
    assert removed[0][1].startswith("chosen 2 chars (none visible), rejected 3 chars")


def test_only_live_rows_are_scored(tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i}", "chosen": "a" if i else "", "rejected": "b"} for i in range(3)]
    run = run_op_on_rows(tmp_path, "validate", rows, removed_before=(0,))
    assert [s["row_key"] for s in run.signals] == [1, 2] and run.removed() == {0: ("earlier", "")}


def test_a_text_pair_needs_a_prompt(tmp_path: Path) -> None:
    """An empty (or invisible) prompt leaves a text pair nothing to prefer an answer for; an image alone may be the
    prompt of a pair that has one."""
    rows = [
        {"prompt": "", "chosen": "4", "rejected": "5"},
        {"prompt": "\u200b", "chosen": "4", "rejected": "5"},
        {"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
        {"prompt": "<image>", "chosen": "A cat.", "rejected": "A dog.", "images": [photo_png("chelsea")]},
    ]
    run = run_op_on_rows(tmp_path, "validate", rows)
    removed = run.removed()
    assert {k: reason for k, (reason, _) in removed.items()} == {0: "empty prompt", 1: "empty prompt"}
    assert removed[1][1].endswith(", prompt 1 chars (none visible), no image")
