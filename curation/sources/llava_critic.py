"""LLaVA-Critic-113k (pairwise): a judge instruction holding two responses, and GPT-4o's critique.

The human turn holds the question and both responses inside the judging instruction; the gpt turn is a
critique that ends with the preference. Two response layouts are recognized (exact wording unverified):
the LLaVA-Critic template `Question: [..]\\nThe first response: [..]\\nThe second response: [..]` and the
MT-Bench style `[The Start of Assistant A's Answer] .. [The End of Assistant A's Answer]` (also
"Response 1"/"Answer 1" in place of "Assistant A"). The verdict is the last verdict phrase in the critique
("Response 2 is better", "the first answer is more accurate", "Overall Judgment: Answer 1", "[[B]]",
"tie", "equally good", ...). Nothing is guessed: an unrecognized layout, an empty response, two identical
responses, or no verdict phrase rejects the row. Extraction can still truncate a response that itself
contains the closing delimiter. `pointwise` rows (one response and a score) are rejected as
"pointwise row (no pair)". `source` (the origin dataset) is the `subset`.
"""

from __future__ import annotations

import re
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.schema import IMAGE_TOKEN
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, messages, user_prompt, with_image_tokens

# Response 2 ends at the first "]" after which only "ASSISTANT: ..." or bracket-free text follows.
_CRITIC_TEMPLATE = re.compile(
    r"Question:\s*\[(?P<q>.*?)\]\s*The first response:\s*\[(?P<r1>.*?)\]\s*The second response:\s*\["
    r"(?P<r2>.*?)\]\s*(?:ASSISTANT:.*|[^\[\]]*)$",
    re.S,
)


def _block(side: str, group: str) -> str:
    tag = rf"{side}(?:'s)?(?:\s+(?:Answer|Response))?"
    return rf"\[The Start of {tag}\](?P<{group}>.*?)\[The End of {tag}\]"


_START_END = re.compile(
    _block(r"(?:Assistant\s+A|Response\s+1|Answer\s+1)", "r1")
    + r"\s*"
    + _block(r"(?:Assistant\s+B|Response\s+2|Answer\s+2)", "r2"),
    re.S | re.I,
)
_QUESTION_SECTION = re.compile(r"\[(?:User\s+)?Question\]\s*(?P<q>.*?)\s*\[The Start of", re.S | re.I)
_POINTWISE = re.compile(r"The LMM response:|Score the response|\[The Start of (?:the )?(?:Assistant's )?Answer\]", re.I)

# Verdict phrases, the last one wins; a side group names the winner (1/2/A/B/first/second), a tie has none.
_BETTER = (
    r"\b(?:is|was|seems|appears)\s+(?:(?:clearly|slightly|much|significantly|far|overall|definitely|somewhat)\s+)?"
    r"(?:better|superior|preferred|preferable|more\s+(?:accurate|helpful|relevant|correct|precise|appropriate|"
    r"informative|faithful|comprehensive|complete|aligned|suitable|effective|thorough|coherent))\b"
)
# Up to 40 characters within the sentence that name no other response ("Unlike Response 2, Response 1 is ...").
_FILLER = r"(?:(?!response|answer|assistant|first|second)[^.\n]){0,40}?"
_VERDICTS = re.compile(
    "|".join(
        [
            rf"\b(?:response|answer|assistant)\s*(?P<s1>(?-i:[12AB]))\b{_FILLER}{_BETTER}",
            rf"\bthe\s+(?P<s2>first|second)\s+(?:response|answer)\b{_FILLER}{_BETTER}",
            r"\b(?:judgment|judgement|verdict|conclusion|choice)\s*:\s*\**\s*(?:response|answer|assistant)?\s*"
            r"(?P<s3>(?-i:[12AB]))\b",
            r"\[\[(?P<s4>(?-i:[12AB]))\]\]",
            r"\bprefer(?:red)?\s+(?:the\s+)?(?:response|answer|assistant)\s*(?P<s5>(?-i:[12AB]))\b",
            r"\b(?:ties?|tied|equally\s+\w+|neither\s+(?:response|answer)\s+is\s+better)\b",
        ]
    ),
    re.I,
)
_SIDES = {"1": 1, "a": 1, "first": 1, "2": 2, "b": 2, "second": 2}


def parse_pair_prompt(text: str) -> tuple[str, str, str]:
    """(question, response 1, response 2) from the human turn; `RowError` when no layout fits."""
    body = text.replace(IMAGE_TOKEN, "").strip()
    match = _CRITIC_TEMPLATE.search(body)
    if match:
        question = match.group("q")
    else:
        match = _START_END.search(body)
        if match is None:
            reason = "pointwise row (no pair)" if _POINTWISE.search(body) else "unparsable judge prompt"
            raise RowError(reason, "'conversations[0]': no two delimited responses found")
        section = _QUESTION_SECTION.search(body)
        question = section.group("q") if section else ""
    question, first, second = question.strip(), match.group("r1").strip(), match.group("r2").strip()
    if not question:
        raise RowError("unparsable judge prompt", "'conversations[0]': no question found")
    if not first or not second:
        raise RowError("unparsable judge prompt", f"'conversations[0]': response {1 if not first else 2} is empty")
    if first == second:
        raise RowError("identical responses", "'conversations[0]': the two extracted responses are equal")
    return question, first, second


def parse_verdict(critique: str) -> tuple[int | None, str]:
    """(1, 2, or None for a tie; the phrase) from the last verdict phrase of the critique."""
    matches = list(_VERDICTS.finditer(critique))
    if not matches:
        raise RowError("undetermined preference", f"'conversations[-1]': no verdict in {critique[-160:]!r}")
    last = matches[-1]
    side = next((last.group(g) for g in ("s1", "s2", "s3", "s4", "s5") if last.group(g)), None)
    return (_SIDES[side.lower()] if side else None), last.group(0)


class LlavaCritic(Adapter):
    info = SourceInfo(
        key="llava_critic",
        name="LLaVA-Critic-113k",
        kind="train",
        modality="image",
        hub_id="lmms-lab/llava-critic-113k",
        license="Apache-2.0",
        description="GPT-4o pairwise critiques of two LMM responses; pairs parsed from the instruction and verdict.",
    )
    mapped_fields = frozenset({"conversations", "image", "source"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        if self.read.config == "pointwise":
            raise RowError("pointwise row (no pair)", "config 'pointwise' scores single responses")
        turns = messages(row.get("conversations"), "conversations")
        if len(turns) < 2 or turns[0]["role"] != "user" or turns[-1]["role"] != "assistant":
            raise RowError("unparsable judge prompt", "'conversations': expected a human turn then a gpt critique")
        question, first, second = parse_pair_prompt(turns[0]["content"])
        winner, phrase = parse_verdict(turns[-1]["content"])
        sha = ctx.image(row.get("image"), "image")
        chosen, rejected = (second, first) if winner == 2 else (first, second)
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(question), 1),
                chosen=chosen,
                rejected=rejected,
                images=[sha],
                tie=winner is None,
                subset=field(row, "source", str, optional=True),
                extra={"verdict": phrase, "chosen_position": winner},
            )
        ]
