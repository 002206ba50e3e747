import json
from collections import Counter
from pathlib import Path

import pytest

from curation.schema import canonical_text
from tests.conftest import RunIngest, write_image, write_jsonl

WV = "wildvision-bench"
REFERENCE = "claude-3-sonnet-20240229"
JUDGE_DIR = f"model_judgements/judge_gpt-4o_reference_{REFERENCE}"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def wv_images(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A tiny image per question: every 5th as .jpg, the rest as .png (the adapter tries each suffix)."""
    root = tmp_path_factory.mktemp("wv_images")
    questions = [r["question_id"] for r in _jsonl(shared_data / WV / "model_answers" / f"{REFERENCE}.jsonl")]
    for i, question in enumerate(questions):
        write_image(root / f"{question}.{'jpg' if i % 5 == 0 else 'png'}", seed=i, size=(4, 4))
    return root


def test_real_battles(shared_data: Path, wv_images: Path, run_ingest: RunIngest) -> None:
    folder = shared_data / WV
    answers = {
        (r["model"], r["question_id"]): r for p in sorted((folder / "model_answers").glob("*.jsonl")) for r in _jsonl(p)
    }
    answered = {model for model, _ in answers}
    assert answered == {REFERENCE, "gpt-4o", "llava-1.5-7b-hf"}
    battles = _jsonl(folder / "vision_bench_battles.jsonl")
    kept = [b for b in battles if b["model_a"] in answered and b["model_b"] in answered]

    result = run_ingest("wildvision_bench", folder, images_root=wv_images)
    assert result.summary.rows_read == 19644
    assert result.summary.pairs == len(kept) == 2490
    assert result.summary.ties == sum(b["winner"] == "tie" for b in kept)
    assert result.summary.rejects_by_reason == {"no answer for model": 19644 - len(kept)}
    i = next(i for i, b in enumerate(battles) if b["model_b"] not in answered)
    assert (result.rejects[0]["source_row"], result.rejects[0]["detail"]) == (
        f"vision_bench_battles.jsonl:{i}",
        f"vision_bench_battles.jsonl:{i}: model {battles[i]['model_b']!r}, question {battles[i]['question_id']}",
    )

    for battle, pair in zip(kept, result.pairs, strict=True):
        a, b = answers[(battle["model_a"], battle["question_id"])], answers[(battle["model_b"], battle["question_id"])]
        chosen, rejected = (b, a) if battle["winner"] == "model_b" else (a, b)
        assert (pair["chosen"], pair["rejected"]) == (
            canonical_text(chosen["output"]),
            canonical_text(rejected["output"]),
        )
        assert (pair["chosen_model"], pair["tie"]) == (chosen["model"], battle["winner"] == "tie")
    first = result.pairs[0]
    a0 = answers[(REFERENCE, battles[0]["question_id"])]
    b0 = answers[("llava-1.5-7b-hf", battles[0]["question_id"])]
    assert first["prompt"] == [{"role": "user", "content": "<image>\n" + a0["instruction"]}]
    assert (first["modality"], first["language"], first["margin"], first["category"]) == (
        "image",
        "English",
        None,
        None,
    )
    assert result.meta(0) == {
        "question_id": battles[0]["question_id"],
        "answer_a": {"token_len": a0["token_len"]},
        "answer_b": {"token_len": b0["token_len"]},
    }
    # Strong verdicts are 3 identical battle rows: kept as 3 pairs with one pair_id.
    groups: dict[tuple[str, str], set[str]] = {}
    for battle, pair in zip(kept, result.pairs, strict=True):
        groups.setdefault((battle["question_id"], battle["model_b"]), set()).add(pair["pair_id"])
    assert all(len(ids) == 1 for ids in groups.values())
    assert Counter(Counter((b["question_id"], b["model_b"]) for b in kept).values()) == {1: 975, 3: 505}
    # Reference vs itself (500) and 7 questions where gpt-4o's output equals claude's (6 of them "$ERROR$").
    same = sum(
        answers[(b["model_a"], b["question_id"])]["output"] == answers[(b["model_b"], b["question_id"])]["output"]
        for b in kept
    )
    assert sum(p["chosen"] == p["rejected"] for p in result.pairs) == same == 500 + 7
    # Failed API calls answer "$ERROR$" (16 claude, 7 gpt-4o answers): kept as pairs, flagged in the card.
    errors = sum("$ERROR$" in (p["chosen"], p["rejected"]) for p in result.pairs)
    outputs = [(answers[(b["model_a"], b["question_id"])], answers[(b["model_b"], b["question_id"])]) for b in kept]
    assert errors == sum("$ERROR$" in (a["output"], b["output"]) for a, b in outputs) == 69
    assert result.summary.images == 500


def test_real_judgements(shared_data: Path, wv_images: Path, run_ingest: RunIngest) -> None:
    folder = shared_data / WV
    result = run_ingest("wildvision_bench", folder, images_root=wv_images, options={"verdicts": "judgements"})
    assert result.summary.rows_read == 1000 and result.summary.pairs == 500 + 480
    assert result.summary.rejects_by_reason == {"undetermined preference": 20}
    details = [r["detail"].split(": ", 1)[1] for r in result.rejects]
    assert sum(d == "'games[0].score': ''" for d in details) == 6
    assert all(r["source_row"].startswith(f"{JUDGE_DIR}/llava-1.5-7b-hf.jsonl:") for r in result.rejects)

    expected = []
    for model in ("gpt-4o", "llava-1.5-7b-hf"):  # sorted file order
        for row in _jsonl(folder / JUDGE_DIR / f"{model}.jsonl"):
            score = row["games"][0]["score"]
            if score in ("A>>B", "A>B", "A=B", "B>A", "B>>A"):
                winner = model if score.startswith("B") else REFERENCE
                expected.append((winner, score.count(">") + 0.0, score == "A=B"))
    got = [(p["chosen_model"], p["margin"], p["tie"]) for p in result.pairs]
    assert got == expected
    assert Counter(p["margin"] for p in result.pairs) == {2.0: 11 + 255 + 211 + 28, 1.0: 72 + 148 + 174 + 62, 0.0: 19}
    assert result.summary.ties == 14 + 5
    assert result.meta(0)["judge"] == "gpt-4o" and "games" in result.meta(0)
    assert all("gpt-4o" in (p["chosen_model"], p["rejected_model"]) for p in result.pairs[:500])
    assert all("llava-1.5-7b-hf" in (p["chosen_model"], p["rejected_model"]) for p in result.pairs[500:])


def _answer(model: str, question: str, output: str, instruction: str = "What is this?") -> dict:
    return {
        "question_id": question,
        "instruction": instruction,
        "output": output,
        "model": model,
        "language": "English",
        "token_len": len(output),
    }


@pytest.fixture
def tiny_bench(tmp_path: Path) -> tuple[Path, Path]:
    """A hand-made WildVision-Bench folder: reference "ref", models "m1" and "org/m2" (a nested file)."""
    folder, images = tmp_path / "bench", tmp_path / "images"
    answers = folder / "model_answers"
    write_jsonl(answers / "ref.jsonl", [_answer("ref", q, f"ref says {q}") for q in ("q1", "q2", "q3", "q4")])
    write_jsonl(
        answers / "m1.jsonl",
        [_answer("m1", q, f"m1 says {q}") for q in ("q1", "q2", "q3")]
        + [_answer("m1", "q4", "m1 says q4", instruction="Another question")],
    )
    write_jsonl(answers / "org" / "m2.jsonl", [_answer("org/m2", "q1", "m2 says q1")])
    write_image(images / "q1.png", seed=1)
    write_image(images / "q2.webp", seed=2)
    write_image(images / "q3.jpeg", seed=3)
    return folder, images


def test_battle_orientation_and_rejects(tiny_bench: tuple[Path, Path], run_ingest: RunIngest) -> None:
    folder, images = tiny_bench
    battles = [
        {"question_id": "q1", "model_a": "ref", "model_b": "m1", "winner": "model_b"},
        {"question_id": "q2", "model_a": "ref", "model_b": "m1", "winner": "model_a"},
        {"question_id": "q3", "model_a": "ref", "model_b": "m1", "winner": "tie"},
        {"question_id": "q1", "model_a": "ref", "model_b": "org/m2", "winner": "model_b"},
        {"question_id": "q1", "model_a": "ref", "model_b": "m9", "winner": "model_a"},
        {"question_id": "q2", "model_a": "ref", "model_b": "m1", "winner": "both"},
        {"question_id": "q4", "model_a": "ref", "model_b": "m1", "winner": "model_a"},
        {"question_id": "q5", "model_a": "ref", "model_b": "m1", "winner": "model_a"},
    ]
    write_jsonl(folder / "vision_bench_battles.jsonl", battles)
    with (folder / "vision_bench_battles.jsonl").open("a") as handle:
        handle.write("{not json\n")
    result = run_ingest("wildvision_bench", folder, images_root=images)

    b_wins, a_wins, tie, nested = result.pairs
    assert (b_wins["chosen"], b_wins["rejected"]) == ("m1 says q1", "ref says q1")
    assert (b_wins["chosen_model"], b_wins["rejected_model"], b_wins["tie"]) == ("m1", "ref", False)
    assert b_wins["prompt"] == [{"role": "user", "content": "<image>\nWhat is this?"}]
    assert (a_wins["chosen"], a_wins["chosen_model"]) == ("ref says q2", "ref")
    assert (tie["chosen"], tie["rejected"], tie["tie"], tie["margin"]) == ("ref says q3", "m1 says q3", True, None)
    assert (nested["chosen"], nested["chosen_model"]) == ("m2 says q1", "org/m2")
    assert b_wins["images"] == nested["images"] and len(set(p["images"][0] for p in result.pairs)) == 3
    assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
        ("no answer for model", "model 'm9', question q1"),
        ("undetermined preference", "'winner': 'both'"),
        ("prompt differs between sides", "question q4: ref vs m1"),
        ("no answer for model", "model 'ref', question q5"),
        ("malformed json", "column 2: Expecting property name enclosed in double quotes"),
    ]


def test_judgement_scores(tiny_bench: tuple[Path, Path], run_ingest: RunIngest) -> None:
    folder, images = tiny_bench
    judge = folder / "model_judgements" / "judge_gpt-4o_reference_ref"

    def row(question: str, score: str, key: str = "judgment") -> dict:
        return {
            "question_id": question,
            "model": "m1",
            "judge": "gpt-4o",
            "games": [{"user_prompt": None, key: "...", "score": score}],
        }

    write_jsonl(
        judge / "m1.jsonl",
        [
            row("q1", "B>>A"),
            row("q2", "A>B", key="judgement"),
            row("q3", "A=B"),
            row("q1", ""),
            row("q2", "The image shows a cat"),
            {**row("q3", "B>A"), "games": []},
        ],
    )
    write_jsonl(judge / "org" / "m2.jsonl", [{**row("q1", "A>>B"), "model": "org/m2"}])
    result = run_ingest("wildvision_bench", folder, images_root=images, options={"verdicts": "judgements"})

    strong_b, weak_a, tie, strong_a = result.pairs
    assert (strong_b["chosen"], strong_b["rejected"], strong_b["margin"]) == ("m1 says q1", "ref says q1", 2.0)
    assert (weak_a["chosen_model"], weak_a["rejected_model"], weak_a["margin"]) == ("ref", "m1", 1.0)
    assert (tie["chosen"], tie["tie"], tie["margin"]) == ("ref says q3", True, 0.0)
    assert (strong_a["chosen"], strong_a["rejected_model"], strong_a["margin"]) == ("ref says q1", "org/m2", 2.0)
    assert result.meta(1)["games"] == [{"user_prompt": None, "judgement": "...", "score": "A>B"}]
    assert [(r["source_row"], r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
        ("model_judgements/judge_gpt-4o_reference_ref/m1.jsonl:3", "undetermined preference", "'games[0].score': ''"),
        (
            "model_judgements/judge_gpt-4o_reference_ref/m1.jsonl:4",
            "undetermined preference",
            "'games[0].score': 'The image shows a cat'",
        ),
        (
            "model_judgements/judge_gpt-4o_reference_ref/m1.jsonl:5",
            "unexpected game count",
            "'games': 0 games, expected one object",
        ),
    ]


def test_missing_image(tiny_bench: tuple[Path, Path], run_ingest: RunIngest) -> None:
    folder, _ = tiny_bench
    write_jsonl(
        folder / "vision_bench_battles.jsonl",
        [{"question_id": "q1", "model_a": "ref", "model_b": "m1", "winner": "model_a"}],
    )
    empty = folder.parent / "no_images"
    empty.mkdir()
    result = run_ingest("wildvision_bench", folder, images_root=empty)
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        (
            "image not found",
            "vision_bench_battles.jsonl:0: field 'question_id': q1.jpg|png|jpeg|webp under --images-root",
        ),
    ]
