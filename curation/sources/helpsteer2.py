"""NVIDIA HelpSteer2: pointwise-rated responses (main files) and A/B preferences (preference file).

Main files (`train`/`validation`): one row per response with five 0-4 attributes; consecutive rows share a
prompt. `records` groups them into one record `{prompt, responses: [...]}` (ref `file:line+n` = n rows from
that line) and the responses are paired by `attribute` (default helpfulness): all pairs, equal = tie,
scores kept. Preference file: `response_1`/`response_2` with `preference_strength` in -3..3; its sign gives
the side (`negative_means`, default response_1: the sign is unverified, an inverted sign silently trains the
opposite preference), 0 = tie, margin = |strength|. The layout is detected per row; `subset` names it.
Multi-turn prompts are one string with turns after the first introduced by "<extra_id_1>User" /
"<extra_id_1>Assistant" lines (from the HelpSteer2 card, unverified here); they are split into turns.
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
from curation.sources.common import binarize, field, maybe_score, parse_score, text_field

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


def _group(rows: list[tuple[str, dict[str, Any]]]) -> Record:
    """One record for the consecutive main-file rows of one prompt."""
    responses = [{k: v for k, v in data.items() if k != "prompt"} for _, data in rows]
    return Record(f"{rows[0][0]}+{len(rows)}", {"prompt": rows[0][1].get("prompt"), "responses": responses})


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
        """Main-file rows (with `response`) grouped by consecutive equal prompt; other records pass through."""
        group: list[tuple[str, dict[str, Any]]] = []
        for record in super().records(location, images_root):
            data = record.data
            if data is not None and "response" in data:
                if group and data.get("prompt") != group[0][1].get("prompt"):
                    yield _group(group)
                    group = []
                group.append((record.ref, data))
                continue
            if group:
                yield _group(group)
                group = []
            yield record
        if group:
            yield _group(group)

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt = parse_prompt(text_field(row, "prompt"))
        if "responses" in row:
            return self._rated(row, prompt)
        return [self._preference(row, prompt)]

    def _rated(self, row: dict[str, Any], prompt: list[dict[str, str]]) -> list[Pair]:
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
