"""WildVision-Bench (benchmark): GPT-4o verdicts of model answers against a fixed reference model.

The location is the `WildVision-Bench` data folder: `model_answers/<model>.jsonl` (one answer per question and
model), `vision_bench_battles.jsonl` (`question_id`, `model_a` = the reference, `model_b`, `winner`) and
`model_judgements/judge_<judge>_reference_<model_a>/<model_b>.jsonl` (`games[0].score` = "A>>B" ... "B>>A").
`records` loads the answers (small) and joins them onto each verdict row as `answer_a`/`answer_b`; the prompt
is the instruction with one `<image>`, the image is `<question_id>.<jpg|png|jpeg|webp>` under --images-root.

Option `verdicts`: `battles` (one pair per battle row; `tie` keeps model_a's answer as chosen, margin None) or
`judgements` (">>" margin 2, ">" margin 1, "=" a tie with margin 0). Pitfalls: battles expand strong verdicts
into 3 identical rows (kept: identical `pair_id`s, the build dedupes); battles name 21 models while answers
ship for few, so the others are rejected "no answer for model"; the 500 reference-vs-itself battles have
chosen == rejected; the llava-1.5-7b-hf judgement file spells `judgement` (not `judgment`), has
`user_prompt: null`, and 20 scores that are empty or free text (rejected "undetermined preference").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from curation.errors import InputError, RowError
from curation.images import ImagesRoot
from curation.pair import Pair
from curation.readers import Record, iter_file, iter_file_isolated
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt, with_image_tokens

IMAGE_SUFFIXES = ("jpg", "png", "jpeg", "webp")
# Judgement score -> (winning side, strength).
SCORES = {"A>>B": ("a", 2.0), "A>B": ("a", 1.0), "A=B": ("a", 0.0), "B>A": ("b", 1.0), "B>>A": ("b", 2.0)}
WINNERS = {"model_a": "a", "model_b": "b", "tie": None, "tie (bothbad)": None}
_JUDGE_DIR = re.compile(r"^judge_.+_reference_(?P<reference>.+)$")
# Answer fields represented by canonical columns (the rest, e.g. token_len, is kept in meta).
_ANSWER_MAPPED = frozenset({"question_id", "instruction", "output", "model", "language"})


class WildvisionBench(Adapter):
    info = SourceInfo(
        key="wildvision_bench",
        name="WildVision-Bench",
        kind="benchmark",
        modality="image",
        hub_id=None,
        license="MIT",
        description="500 image questions; GPT-4o verdicts of model answers vs claude-3-sonnet (battles/judgements).",
    )

    @dataclass(frozen=True)
    class Options:
        verdicts: Literal["battles", "judgements"] = "battles"

    mapped_fields = frozenset({"model_a", "model_b", "winner", "model", "answer_a", "answer_b"})

    def records(self, location: str, images_root: ImagesRoot) -> Iterator[Record]:
        root = Path(location)
        if not (root / "model_answers").is_dir():
            raise InputError(f"{root}: not a WildVision-Bench folder (no model_answers/)")
        answers = _load_answers(root / "model_answers")
        for record, names in self._verdict_rows(root):
            if record.data is None:
                yield record  # an unreadable line: the runner records it as a reject
                continue
            row = {**record.data, **names}
            question = row.get("question_id")
            joined = {
                "answer_a": answers.get((row.get("model_a"), question)),
                "answer_b": answers.get((row.get("model_b"), question)),
            }
            yield Record(record.ref, {**row, **joined})

    def input_files(self, location: str) -> list[Path]:
        """The answer files and the verdict files the option `verdicts` chooses."""
        root = Path(location)
        if not root.is_dir():
            return super().input_files(location)
        verdicts = (
            [root / "vision_bench_battles.jsonl"]
            if self.options.verdicts == "battles"
            else list((root / "model_judgements").glob("judge_*/**/*.jsonl"))
        )
        return sorted(p for p in [*(root / "model_answers").rglob("*.jsonl"), *verdicts] if p.is_file())

    def files_note(self, location: str) -> str | None:
        return None  # the release's own layout, read whole: no split leaves a file unread

    def _verdict_rows(self, root: Path) -> Iterator[tuple[Record, dict[str, str]]]:
        """Verdict records with the model names that judgement rows carry only in their file path."""
        if self.options.verdicts == "battles":
            for record in iter_file(root / "vision_bench_battles.jsonl"):
                yield record, {}
            return
        folders = sorted(p for p in (root / "model_judgements").glob("judge_*") if p.is_dir())
        if not folders:
            raise InputError(f"{root}: no model_judgements/judge_*_reference_* folder")
        for folder in folders:
            match = _JUDGE_DIR.match(folder.name)
            if match is None:
                raise InputError(f"{folder}: expected a folder named judge_<judge>_reference_<model>")
            for path in sorted(folder.rglob("*.jsonl")):
                # model_b is the file name (a path below the folder when the model name holds a '/').
                names = {
                    "model_a": match["reference"],
                    "model_b": path.relative_to(folder).as_posix()[: -len(".jsonl")],
                }
                for record in iter_file_isolated(path, path.relative_to(root).as_posix()):  # one of many files
                    yield record, names

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        question = text_field(row, "question_id")
        model_a, model_b = text_field(row, "model_a"), text_field(row, "model_b")
        if self.options.verdicts == "battles":
            winner = row.get("winner")
            if not isinstance(winner, str) or winner not in WINNERS:
                raise RowError("undetermined preference", f"'winner': {winner!r}")
            side, margin = WINNERS[winner] or "a", None
            tie = WINNERS[winner] is None
        else:
            side, margin = _judgement(row)
            tie = margin == 0.0
        answer_a, answer_b = _answer(row, "answer_a", model_a, question), _answer(row, "answer_b", model_b, question)
        instruction = text_field(answer_a, "instruction")
        if text_field(answer_b, "instruction") != instruction:
            raise RowError("prompt differs between sides", f"question {question}: {model_a} vs {model_b}")
        chosen, rejected = (answer_a, answer_b) if side == "a" else (answer_b, answer_a)
        language = answer_a.get("language")
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(instruction), 1),
                chosen=text_field(chosen, "output"),
                rejected=text_field(rejected, "output"),
                images=[_question_image(ctx, question)],
                margin=margin,
                tie=tie,
                chosen_model=model_a if side == "a" else model_b,
                rejected_model=model_b if side == "a" else model_a,
                language=language if isinstance(language, str) else None,
            )
        ]

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        """Unmapped verdict fields, plus the unmapped fields of each joined answer (e.g. `token_len`)."""
        out = super().meta(row)
        for side in ("answer_a", "answer_b"):
            answer = row.get(side)
            extra = {k: v for k, v in answer.items() if k not in _ANSWER_MAPPED} if isinstance(answer, dict) else {}
            if extra:
                out[side] = extra
        return out


def _load_answers(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """{(model, question_id): answer row} from every answer file; the row's `model` names it, else the file."""
    answers: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.rglob("*.jsonl")):
        default = path.relative_to(folder).as_posix()[: -len(".jsonl")]
        for record in iter_file_isolated(path, path.name):
            # An unreadable answer line or file leaves its battles without an answer: they are rejected by name.
            if record.data is not None and isinstance(record.data.get("question_id"), str):
                model = record.data.get("model")
                answers[(model if isinstance(model, str) else default, record.data["question_id"])] = record.data
    return answers


def _answer(row: dict[str, Any], name: str, model: str, question: str) -> dict[str, Any]:
    answer = row.get(name)
    if not isinstance(answer, dict):
        raise RowError("no answer for model", f"model {model!r}, question {question}")
    return answer


def _judgement(row: dict[str, Any]) -> tuple[str, float]:
    """(winning side, strength) from the single game's score; empty or free text is undetermined."""
    games = field(row, "games", list)
    if len(games) != 1 or not isinstance(games[0], dict):
        raise RowError("unexpected game count", f"'games': {len(games)} games, expected one object")
    score = games[0].get("score")
    if not isinstance(score, str) or score.strip() not in SCORES:
        text = score[:40] if isinstance(score, str) else score
        raise RowError("undetermined preference", f"'games[0].score': {text!r}")
    return SCORES[score.strip()]


def _question_image(ctx: RowContext, question: str) -> str:
    """The question's image, `<question_id>.<suffix>` under the images root, whichever suffix exists."""
    for suffix in IMAGE_SUFFIXES:
        try:
            return ctx.image_path(f"{question}.{suffix}", field="question_id")
        except RowError as exc:
            if exc.reason != "image not found":
                raise
    raise RowError("image not found", f"field 'question_id': {question}.{'|'.join(IMAGE_SUFFIXES)} under --images-root")
