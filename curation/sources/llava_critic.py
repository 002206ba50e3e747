"""LLaVA-Critic-113k (pairwise): a judge instruction holding two responses, and GPT-4o's critique.

The human turn holds the question and both responses inside the judging instruction; the gpt turn is a
critique that ends with the preference. Two response layouts are recognized: the LLaVA-Critic template
`Question: [..]\\nThe first response: [..]\\nThe second response: [..]` (also "Response 1"/"Response A" in place
of "The first response", as loaders of the parquet read it) and the MT-Bench style
`[The Start of Assistant A's Answer] .. [The End of Assistant A's Answer]` (also "Response 1"/"Answer 1" in place
of "Assistant A").

The verdict: the critic's own verdict forms come first - "The better response: [first]" ([second], [1], [2]),
a bracketed `[first]`/`[second]`, "Overall Judgment: Answer 1", "[[B]]", and the tie sentences "Two responses are
equally good" and "The two responses are identical" - the last of them in the critique wins. Only a critique
with none of them is read from free-text phrases ("Response 2 is better", "the first answer is more accurate",
"tie", "equally good", ...), the last one winning. A tie is kept with `tie=True` and the first response as
`chosen`; two identical responses are a tie only when the critique says so (a critique preferring one of two
identical responses is rejected as "identical responses"). Nothing is guessed: an unrecognized layout, an empty
response or no verdict rejects the row. Extraction can still truncate a response that itself contains the
closing delimiter. The config defaults to `pairwise` (the Hub dataset declares no default); `pointwise` rows
(one response and a score) are rejected as "pointwise row (no pair)".
`source` (the origin dataset) is the `subset`. `conversations` is read as a list of turns or as the record of
lists `datasets` serves for a `sequence` of structs.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.schema import IMAGE_TOKEN
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, messages, user_prompt, with_image_tokens

# Response 2 ends at the first "]" after which only "ASSISTANT: ..." or bracket-free text follows.
_CRITIC_TEMPLATE = re.compile(
    r"Question:\s*\[(?P<q>.*?)\]\s*(?:The first response|Response 1|Response A):\s*\[(?P<r1>.*?)\]\s*"
    r"(?:The second response|Response 2|Response B):\s*\[(?P<r2>.*?)\]\s*(?:ASSISTANT:.*|[^\[\]]*)$",
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

# The critic's own verdict forms; the last one in the critique wins over any free-text phrase. A side group names
# the winner (1/2/A/B/first/second); the tie sentences have none. Forms that ordinary prose could also contain
# ("Conclusion: A careful comparison...", "[first]" quoted mid-sentence, "The two responses are identical in
# structure, but...") count only when they end their line: a verdict is the critique's last word on it.
_LINE_END = r"(?=\**\s*[.!]?\**\s*$)"
_EXPLICIT = re.compile(
    "|".join(
        [
            r"\b(?:the\s+)?better\s+(?:response|answer)\s*(?:is\s*)?:?\s*\**\s*"
            r"\[\s*(?P<e1>first|second|[12]|(?-i:[AB]))\s*\]",
            rf"^\s*\[\s*(?P<e2>first|second)\s*\]|\[\s*(?P<e5>first|second)\s*\]{_LINE_END}",
            r"\b(?:judgment|judgement|verdict|conclusion|choice)\s*:\s*\**\s*(?:response|answer|assistant)?\s*"
            rf"(?P<e3>(?-i:[12AB])){_LINE_END}",
            r"\[\[(?P<e4>(?-i:[12AB]))\]\]",
            rf"\b(?:the\s+)?two\s+responses\s+are\s+(?:identical|equally\s+(?:good|bad)){_LINE_END}",
        ]
    ),
    re.I | re.M,
)
# Free-text verdict phrases, read only when the critique has no explicit verdict; the last one wins.
_BETTER = (
    r"\b(?:is|was|seems|appears)\s+(?:(?:clearly|slightly|much|significantly|far|overall|definitely|somewhat)\s+)?"
    r"(?:better|superior|preferred|preferable|more\s+(?:accurate|helpful|relevant|correct|precise|appropriate|"
    r"informative|faithful|comprehensive|complete|aligned|suitable|effective|thorough|coherent))\b"
)
# Up to 40 characters within the sentence that name no other response ("Unlike Response 2, Response 1 is ...").
_FILLER = r"(?:(?!response|answer|assistant|first|second)[^.\n]){0,40}?"
_PHRASES = re.compile(
    "|".join(
        [
            rf"\b(?:response|answer|assistant)\s*(?P<s1>(?-i:[12AB]))\b{_FILLER}{_BETTER}",
            rf"\bthe\s+(?P<s2>first|second)\s+(?:response|answer)\b{_FILLER}{_BETTER}",
            r"\bprefer(?:red)?\s+(?:the\s+)?(?:response|answer|assistant)\s*(?P<s5>(?-i:[12AB]))\b",
            # A tie, not any "equally verbose" or "tied to": the judgement words only.
            r"\b(?:(?:a|is|it's)\s+tie|(?:are|is)\s+tied(?=\s*(?:[.!,;]|$))|equally\s+(?:good|bad|helpful|accurate|correct|valid|"
            r"strong|weak|poor|effective|appropriate|informative)|neither\s+(?:response|answer)\s+is\s+better)\b",
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
    return question, first, second


def parse_verdict(critique: str) -> tuple[int | None, str]:
    """(1, 2, or None for a tie; the phrase): the last explicit verdict of the critique, else its last free-text
    verdict phrase."""
    matches = list(_EXPLICIT.finditer(critique)) or list(_PHRASES.finditer(critique))
    if not matches:
        raise RowError("undetermined preference", f"'conversations[-1]': no verdict in {critique[-160:]!r}")
    last = matches[-1]
    side = next((value for value in last.groupdict().values() if value), None)
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
    record_lists = frozenset({"conversations"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.read.config is None:  # the Hub dataset declares `pairwise` and `pointwise`, neither the default
            self.read = dataclasses.replace(self.read, config="pairwise")

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        if self.read.config == "pointwise":
            raise RowError("pointwise row (no pair)", "config 'pointwise' scores single responses")
        turns = messages(row.get("conversations"), "conversations")
        if len(turns) < 2 or turns[0]["role"] != "user" or turns[-1]["role"] != "assistant":
            raise RowError("unparsable judge prompt", "'conversations': expected a human turn then a gpt critique")
        question, first, second = parse_pair_prompt(turns[0]["content"])
        # Two identical responses make a pair only as the tie the critique states; a side or no verdict does not.
        identical = RowError("identical responses", "'conversations[0]': the two extracted responses are equal")
        try:
            winner, phrase = parse_verdict(turns[-1]["content"])
        except RowError:
            if first == second:
                raise identical from None
            raise
        if first == second and winner is not None:
            raise identical
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
