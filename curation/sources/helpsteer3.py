"""NVIDIA HelpSteer3 (preference config): a multi-turn `context` and two responses with a signed preference.

`context` (a `{role, content}` list ending with a user turn) is the prompt; `overall_preference` in -3..3
gives the side by its sign (per the card a negative value means response1 is better; `negative_means` can
flip it), 0 = tie, margin = |overall_preference|. `domain` becomes `subset`. `language` becomes `language`,
except in the code domain where (per the card) it names the programming language: there it becomes `category`
and `language` stays null. `individual_preference` (per-annotator scores and reasoning) stays in meta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, messages, parse_score, text_field


@dataclass(frozen=True)
class HelpSteer3Options:
    negative_means: Literal["response1", "response2"] = "response1"  # side a negative value favours (card: response1)


class Helpsteer3(Adapter):
    info = SourceInfo(
        key="helpsteer3",
        name="NVIDIA HelpSteer3 (preference)",
        kind="train",
        modality="text",
        hub_id="nvidia/HelpSteer3",
        license="CC-BY-4.0",
        description="Human A/B preferences (-3..3) over multi-turn general, STEM, code and multilingual chats.",
    )
    Options = HelpSteer3Options
    mapped_fields = frozenset({"domain", "language", "context", "response1", "response2", "overall_preference"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt = messages(row.get("context"), "context")
        strength = parse_score(field(row, "overall_preference", (int, float, str)), "overall_preference")
        if not -3 <= strength <= 3:
            raise RowError("score out of range", f"'overall_preference': {strength} outside -3..3")
        first_wins = strength < 0 if self.options.negative_means == "response1" else strength > 0
        chosen, rejected = ("1", "2") if first_wins or strength == 0 else ("2", "1")
        domain = field(row, "domain", optional=True)
        language = field(row, "language", optional=True)
        code = domain == "code"
        return [
            Pair(
                prompt=prompt,
                chosen=text_field(row, f"response{chosen}"),
                rejected=text_field(row, f"response{rejected}"),
                subset=domain,
                category=language if code else None,
                language=None if code else language,
                margin=abs(strength),
                tie=strength == 0,
                extra={"chosen_side": f"response{chosen}"},
            )
        ]
