"""WildVision battles: two anonymous VLMs answer one image prompt; a user votes in `winner`.

`winner` is `model_a`, `model_b`, `tie` or `tie (bothbad)`, the names WildVision-Arena's battle export
(`arena/serve/monitor/clean_battle_data.py`) gives the votes; the raw vote names it starts from (`leftvote`,
`rightvote`, `tievote`, `bothbad_vote`) are read too. chosen = the winning side's answer,
`chosen_model`/`rejected_model` the models; a tie keeps side A as `chosen` with `tie=True` (the raw `winner`,
e.g. "tie (bothbad)", stays in `meta`). Any other `winner` is "undetermined preference".
The two conversations share only the first user turn: a single-turn battle pairs the two answers; a
multi-turn one (`turn` > 1 or several user turns) is rejected by default (`multi_turn=reject`), because
the vote judged whole conversations, or pairs the first-turn answers with `multi_turn=first_turn` (the
whole conversations then stay in `meta`). The image is embedded; `language` maps through and `domain`
(later versions) becomes `category`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, messages, with_image_tokens

WINNERS = {"model_a": "a", "leftvote": "a", "model_b": "b", "rightvote": "b"}
TIES = {"tie", "tievote", "tie (bothbad)", "bothbad_vote"}


@dataclass(frozen=True)
class Options:
    multi_turn: Literal["first_turn", "reject"] = "reject"


def first_exchange(conversation: list[dict[str, str]], name: str) -> tuple[list[dict[str, str]], str]:
    """(turns up to the first user turn, the assistant answer that follows)."""
    users = [i for i, m in enumerate(conversation) if m["role"] == "user"]
    if not users:
        raise RowError("no user turn", f"'{name}': no user turn")
    first = users[0]
    if first + 1 >= len(conversation) or conversation[first + 1]["role"] != "assistant":
        raise RowError("no final answer", f"'{name}': the first user turn has no assistant answer")
    return conversation[: first + 1], conversation[first + 1]["content"]


def user_turns(row: dict[str, Any]) -> int:
    """The battle's turn count: `turn`, or more user turns found in either conversation."""
    turn = row.get("turn")
    counts = [turn if isinstance(turn, int) and not isinstance(turn, bool) else 1]
    for name in ("conversation_a", "conversation_b"):
        conversation = row.get(name)
        if isinstance(conversation, list):
            roles = [m.get("role", m.get("from")) for m in conversation if isinstance(m, dict)]
            counts.append(sum(role in ("user", "human") for role in roles))
    return max(counts)


class WildvisionBattle(Adapter):
    info = SourceInfo(
        key="wildvision_battle",
        name="WildVision battles",
        kind="train",
        modality="image",
        hub_id="WildVision/wildvision-battle",
        license="ODC-BY",
        description="Vision-arena battles between two VLMs on a user's image prompt, with the user's vote.",
    )
    Options = Options
    mapped_fields = frozenset({"model_a", "model_b", "conversation_a", "conversation_b", "language", "image", "domain"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        winner = field(row, "winner", str).strip()
        side = WINNERS.get(winner.lower(), "tie" if winner.lower() in TIES else None)
        if side is None:
            raise RowError("undetermined preference", f"'winner': {winner!r}")
        prompt_a, answer_a = first_exchange(messages(row.get("conversation_a"), "conversation_a"), "conversation_a")
        prompt_b, answer_b = first_exchange(messages(row.get("conversation_b"), "conversation_b"), "conversation_b")
        turns = user_turns(row)
        if turns > 1 and self.options.multi_turn == "reject":
            raise RowError("multi-turn battle", f"turn {turns}: the vote judged whole conversations")
        if prompt_a != prompt_b:
            raise RowError("prompt differs between sides", "conversation_a and conversation_b differ before the answer")
        models = field(row, "model_a", str, optional=True), field(row, "model_b", str, optional=True)
        sha = ctx.image(row.get("image"), "image")
        b_wins = side == "b"
        extra = {"first_turn_of": turns} if turns > 1 else {}
        return [
            Pair(
                prompt=with_image_tokens(prompt_a, 1),
                chosen=answer_b if b_wins else answer_a,
                rejected=answer_a if b_wins else answer_b,
                images=[sha],
                tie=side == "tie",
                chosen_model=models[1] if b_wins else models[0],
                rejected_model=models[0] if b_wins else models[1],
                language=field(row, "language", str, optional=True),
                category=field(row, "domain", str, optional=True),
                extra=extra,
            )
        ]

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        # Multi-turn battles paired on their first turn keep the whole conversations.
        meta = super().meta(row)
        if user_turns(row) > 1:
            meta.update(conversation_a=row.get("conversation_a"), conversation_b=row.get("conversation_b"))
        return meta
