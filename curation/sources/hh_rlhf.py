"""Anthropic hh-rlhf: both sides are whole transcripts; the prompt is implicit.

The prompt is the longest common prefix of the two transcripts, cut back to its last "\\n\\nAssistant:";
the answers are what follows. Splitting each side at its own last marker is wrong when an answer
contains the marker (rows 1254, 1688, 1950, 1952, 2036 of harmless-base/test). An answer holding a Human: turn
(transcripts that part before their last turn) is a reject, not an answer.
"""

from __future__ import annotations

import os
import re
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import text_field

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]]:
    """ "\\n\\nHuman: a\\n\\nAssistant: b" -> [{user: a}, {assistant: b}]."""
    pieces = _TURN.split(text)
    if pieces[0].strip():
        raise RowError("malformed transcript", "text before the first Human:/Assistant: marker")
    return [
        {"role": _ROLES[role], "content": content.strip()}
        for role, content in zip(pieces[1::2], pieces[2::2], strict=True)
    ]


class HhRlhf(Adapter):
    info = SourceInfo(
        key="hh_rlhf",
        name="Anthropic hh-rlhf",
        kind="train",
        modality="text",
        hub_id="Anthropic/hh-rlhf",
        license="MIT",
        description="Helpful/harmless human preference transcripts; prompt = shared transcript prefix.",
    )
    mapped_fields = frozenset({"chosen", "rejected"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        chosen_text, rejected_text = text_field(row, "chosen"), text_field(row, "rejected")
        shared = os.path.commonprefix([chosen_text, rejected_text])  # noqa: RUF071 (strings, not paths)
        cut = shared.rfind(ASSISTANT)
        if cut < 0:
            raise RowError("no shared prompt", "the transcripts share no prefix ending in an Assistant: turn")
        prompt = parse_transcript(chosen_text[:cut])
        start = cut + len(ASSISTANT)
        for side, text in (("chosen", chosen_text), ("rejected", rejected_text)):
            if HUMAN in text[start:]:  # the transcripts part before the last turn: an answer would hold a question
                raise RowError("answer holds a human turn", f"field '{side}': a Human: turn after the shared prompt")
        # The subset is the repository folder: a local path's first part, or the Hub read's `data_dir`.
        subset = ctx.ref.split("/")[0] if "/" in ctx.ref else self.read.data_dir
        return [
            Pair(
                prompt=prompt,
                chosen=chosen_text[start:].strip(),
                rejected=rejected_text[start:].strip(),
                subset=subset,
                extra={"human_turns": sum(1 for m in prompt if m["role"] == "user")},
            )
        ]
