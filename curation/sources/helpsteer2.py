"""NVIDIA HelpSteer2: pointwise-rated responses (main files) and A/B preferences (preference file).

Main files (`train`/`validation`): one row per response with five 0-4 attributes; the card pairs responses by
position: rows 1 and 2 of a file, 3 and 4, ... share a prompt. `records` turns each such pair of rows into one
record `{prompt, responses: [...]}` (ref `file:line+2`) and the two responses are compared by `attribute`
(default helpfulness): equal = tie, scores kept. A pair that is not whole (an odd last row, a partner that is
unreadable or not a rated row, or partners whose prompts differ) rejects each of its rows as "incomplete pair".
Preference file: `response_1`/`response_2` with `preference_strength` in -3..3; per the card a negative
strength means response 1 is better (`negative_means`, default response_1), 0 = tie, margin = |strength|. The
layout is detected per row; `subset` names it. Multi-turn prompts are one string with turns after the first
introduced by "<extra_id_1>User" / "<extra_id_1>Assistant" lines (as the card shows); they are split into turns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from curation.errors import InputError, RowError
from curation.images import ImagesRoot
from curation.pair import Pair
from curation.readers import Record
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import binarize, field, maybe_score, parse_score, ref_file, text_field

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
_TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n?")
_ROLES = {"User": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class HelpSteer2Options:
    attribute: str = "helpfulness"  # main files: the attribute that ranks the responses to one prompt
    negative_means: Literal["response_1", "response_2"] = "response_1"  # preference file: side of strength < 0


def parse_prompt(text: str) -> list[dict[str, str]]:
    """Split "u1\\n<extra_id_1>Assistant\\na1\\n<extra_id_1>User\\nu2" into user/assistant/user turns."""
    pieces = _TURN.split(text)
    turns = [{"role": "user", "content": pieces[0]}]
    turns += [{"role": _ROLES[r], "content": c} for r, c in zip(pieces[1::2], pieces[2::2], strict=True)]
    if turns[-1]["role"] != "user":
        raise RowError("no user turn", "'prompt': the conversation ends with an <extra_id_1>Assistant turn")
    return turns


def _pair(first: Record, second: Record) -> Record:
    """One record for the two main-file rows of one prompt."""
    assert first.data is not None and second.data is not None
    responses = [{k: v for k, v in row.items() if k != "prompt"} for row in (first.data, second.data)]
    return Record(f"{first.ref}+2", {"prompt": first.data.get("prompt"), "responses": responses})


def _unpaired(ref: str, why: str) -> Record:
    return Record(ref, None, RowError("incomplete pair", f"{ref}: {why}"))


def _is_response_row(record: Record) -> bool:
    return record.data is not None and "response" in record.data


def _prompt(record: Record) -> Any:
    return None if record.data is None else record.data.get("prompt")


def _fault(partner: Record) -> str:
    """Why `partner` does not complete a pair with a rated row."""
    if partner.data is None:
        return "is unreadable"
    return "has another prompt" if "response" in partner.data else "is not a rated row"


class Helpsteer2(Adapter):
    info = SourceInfo(
        key="helpsteer2",
        name="NVIDIA HelpSteer2",
        kind="train",
        modality="text",
        hub_id="nvidia/HelpSteer2",
        license="CC-BY-4.0",
        description="Human ratings (5 attributes, 0-4) of response pairs per prompt, plus an A/B preference file.",
    )
    Options = HelpSteer2Options
    mapped_fields = frozenset({"prompt", "response_1", "response_2", "preference_strength"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.options.attribute not in ATTRIBUTES:
            raise InputError(f"helpsteer2: option attribute={self.options.attribute!r}: expected one of {ATTRIBUTES}")

    def records(self, location: str, images_root: ImagesRoot) -> Iterator[Record]:
        """Main-file rows (with `response`) paired by their position in the file (0 with 1, 2 with 3, ...), not by
        equal prompt text, since adjacent pairs may share a prompt. Other records pass through."""
        first: Record | None = None  # a rated row at an even position, waiting for its partner
        previous = Record("", None)  # the row at the last even position
        source: str | None = None
        position = 0
        for record in super().records(location, images_root):
            if ref_file(record.ref) != source:  # positions restart with each file
                if first is not None:
                    yield _unpaired(first.ref, "the last row of its file has no partner")
                source, position, first = ref_file(record.ref), 0, None
            odd, position = position % 2 == 1, position + 1
            if not odd:
                previous, first = record, (record if _is_response_row(record) else None)
                if first is None:
                    yield record
                continue
            pending, first = first, None
            if pending is not None and _is_response_row(record) and _prompt(record) == _prompt(pending):
                yield _pair(pending, record)
                continue
            if pending is not None:
                yield _unpaired(pending.ref, f"its partner {record.ref} {_fault(record)}")
            if _is_response_row(record):
                yield _unpaired(record.ref, f"its partner {previous.ref} {_fault(previous)}")
            else:
                yield record
        if first is not None:
            yield _unpaired(first.ref, "the last row of its file has no partner")

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt = parse_prompt(text_field(row, "prompt"))
        if "responses" in row:
            return self._rated_pairs(row, prompt)
        return [self._preference(row, prompt)]

    def _rated_pairs(self, row: dict[str, Any], prompt: list[dict[str, str]]) -> list[Pair]:
        attribute = self.options.attribute
        responses = field(row, "responses", list)
        if len(responses) < 2:
            raise RowError("single response", f"'prompt': {len(responses)} response row(s) for this prompt")
        scores = [maybe_score(r.get(attribute), attribute) for r in responses]
        if sum(s is not None for s in scores) < 2:
            raise RowError("unparsable score", f"'{attribute}': {[r.get(attribute) for r in responses]!r}")
        return [
            Pair(
                prompt=prompt,
                chosen=text_field(responses[c], "response"),
                rejected=text_field(responses[r], "response"),
                subset="main",
                chosen_score=scores[c],
                rejected_score=scores[r],
                tie=tie,
                binarization="all_pairs",
                # Indices into `responses` (kept in meta with the other attributes).
                extra={"attribute": attribute, "chosen_index": c, "rejected_index": r},
            )
            for c, r, tie in binarize(scores, "all_pairs")
        ]

    def _preference(self, row: dict[str, Any], prompt: list[dict[str, str]]) -> Pair:
        strength = parse_score(field(row, "preference_strength", (int, float, str)), "preference_strength")
        if not -3 <= strength <= 3:
            raise RowError("score out of range", f"'preference_strength': {strength} outside -3..3")
        first_wins = strength < 0 if self.options.negative_means == "response_1" else strength > 0
        chosen, rejected = ("1", "2") if first_wins or strength == 0 else ("2", "1")
        return Pair(
            prompt=prompt,
            chosen=text_field(row, f"response_{chosen}"),
            rejected=text_field(row, f"response_{rejected}"),
            subset="preference",
            margin=abs(strength),
            tie=strength == 0,
            extra={"chosen_side": f"response_{chosen}"},
        )
