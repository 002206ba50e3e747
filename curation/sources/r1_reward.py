"""R1-Reward RL set: a judge prompt holding both responses, and the preferred response's index.

`message` is a JSON-serialized chat: one user turn whose content parts are the judge prompt text and an
`{"type": "image", "image": <path on the authors' machine>}` part. The two responses are cut back out of the
prompt between the `[Response 1]:` and `[Response 2]:` heading lines (any number of leading `#`), the second
ending at the `**Output Format` heading that follows it, as in the public `make_conv_rm` template. This is
fragile by nature: a row whose headings are not exactly one of each, in order, or that lacks the closing
heading, is rejected as "unparsable judge prompt" rather than guessed at. The prompt is the `question`
column (the `[Question]` section when that column is empty). `answer` (`["<answer>2</answer>"]`) names the
preferred response; anything else is "undetermined preference". The `image` column is a string (a relative
path, a data URI or base64 bytes, unverified) or a `{bytes, path}` struct; when it is empty the path inside
`message` is resolved by file name under `--images-root`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import load_json_field, messages, user_prompt, with_image_tokens

_RESPONSE = re.compile(r"^[ \t]*#*[ \t]*\[Response[ \t]*([12])\][ \t]*:?[ \t]*", re.M | re.I)
_QUESTION = re.compile(r"^[ \t]*#*[ \t]*\[Question\][ \t]*:?[ \t]*", re.M | re.I)
_OUTPUT_FORMAT = re.compile(r"^[ \t]*#+[ \t]*\**[ \t]*Output Format", re.M | re.I)
_ANSWER = re.compile(r"(?:<answer>)?\s*([12])\s*(?:</answer>)?", re.I)
_IMAGE_PATH = re.compile(r"\.(?:jpe?g|png|webp|bmp|gif|tiff?)$", re.I)


def parse_judge_prompt(text: str) -> tuple[str, str, str]:
    """(question section, response 1, response 2) of an R1-Reward judge prompt; `RowError` when not found."""
    headings = list(_RESPONSE.finditer(text))
    labels = [m.group(1) for m in headings]
    if labels != ["1", "2"]:
        raise RowError("unparsable judge prompt", f"'message': response headings {labels}, expected ['1', '2']")
    first, second = headings
    end = _OUTPUT_FORMAT.search(text, second.end())
    if end is None:
        raise RowError("unparsable judge prompt", "'message': no 'Output Format' heading after [Response 2]")
    question = _QUESTION.search(text, 0, first.start())
    responses = text[first.end() : second.start()].strip(), text[second.end() : end.start()].strip()
    for i, response in enumerate(responses, 1):
        if not response:
            raise RowError("unparsable judge prompt", f"'message': [Response {i}] is empty")
    return (text[question.end() : first.start()].strip() if question else ""), *responses


def preferred(answer: Any) -> int:
    """1 or 2 from `["<answer>2</answer>"]` (or a bare string); all entries must agree."""
    values = answer if isinstance(answer, list) else [answer]
    found = set()
    for value in values:
        match = _ANSWER.fullmatch(value.strip()) if isinstance(value, str) else None
        found.add(int(match.group(1)) if match else None)
    if len(found) != 1 or None in found:
        raise RowError("undetermined preference", f"'answer': {answer!r}")
    return found.pop()


class R1Reward(Adapter):
    info = SourceInfo(
        key="r1_reward",
        name="R1-Reward RL data",
        kind="train",
        modality="image",
        hub_id="yifanzhang114/R1-Reward-RL",
        license="unknown",
        description="Judge prompts over two MLLM responses with the preferred index, parsed back into pairs.",
    )
    mapped_fields = frozenset({"question", "message", "answer", "image"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        raw = load_json_field(row, "message")
        turns = messages(raw, "message")
        users = [i for i, m in enumerate(turns) if m["role"] == "user"]
        if not users:
            raise RowError("unparsable judge prompt", "'message': no user turn")
        question_section, *responses = parse_judge_prompt(turns[users[0]]["content"])
        choice = preferred(row.get("answer"))
        question = row.get("question") if isinstance(row.get("question"), str) and row["question"].strip() else None
        if not (question or question_section):
            raise RowError("missing field", "'question' (and no [Question] section in the judge prompt)")
        judge_paths = [
            part["image"]
            for part in raw[users[0]].get("content") or []
            if isinstance(part, dict) and part.get("type") == "image" and isinstance(part.get("image"), str)
        ]
        sha = self._image(row.get("image"), judge_paths, ctx)
        extra: dict[str, Any] = {"chosen_position": choice}
        if judge_paths:
            extra["judge_image_path"] = judge_paths[0]
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(question or question_section), 1),
                chosen=responses[choice - 1],
                rejected=responses[2 - choice],
                images=[sha],
                extra=extra,
            )
        ]

    @staticmethod
    def _image(value: Any, judge_paths: list[str], ctx: RowContext) -> str:
        if isinstance(value, str) and value.strip():
            value = value.strip()
            if _IMAGE_PATH.search(value) and len(value) < 4096:
                return ctx.image_path(value, by_basename=True, field="image")
            try:
                data = base64.b64decode(value.partition(",")[2] if value.startswith("data:") else value, validate=True)
            except (binascii.Error, ValueError):
                raise RowError("image undecodable", "'image': neither an image path nor base64 data") from None
            return ctx.image_bytes(data, "field 'image' (base64)")
        if value not in (None, ""):
            return ctx.image(value, "image")
        if judge_paths:  # an absolute path from the authors' machine: match by file name
            return ctx.image_path(judge_paths[0], by_basename=True, field="message")
        raise RowError("missing field", "'image' (and no image part in 'message')")
