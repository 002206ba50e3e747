"""bigcode swe-arena preference: two models' coding chats on one instruction and a user vote.

Each side's chat is `states.<model_A|model_B>.messages`, FastChat-style `[role, text]` pairs whose role names
come from `states.<side>.roles` (plain user/assistant names are also accepted). The turns before each side's
final answer must be the same on both sides (a multi-turn chat carries each model's own earlier answers, so
it cannot be one pair and is rejected). `feedback.vote_type` gives the side; `models` the model names.
Assumptions (the schema is unverified for this repo; its sibling bigcodearena-preference-5k declares the same
columns): vote values "leftvote"/"left"/"model_A"/"vote_left"/"vote_model_A" = A, the "right"/"model_B" forms
= B, "tievote"/"tie"/"vote_tie" = tie, "bothbad_vote"/"bothbad"/"both_bad"/"vote_both_bad" = tie flagged
`both_bad` (any case; the vote_* spellings are BigCodeArena's records, the bare left/right/tie/both_bad its app's
buttons), anything else is rejected; `feedback` and `states` may also be
JSON strings.
Only the needed columns are read; sandbox logs are dropped from meta (they dominate the ~860 MB).
"""

from __future__ import annotations

from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, final_answer, load_json_field, messages

SIDES = ("model_A", "model_B")
VOTES = {
    "leftvote": "A", "left": "A", "model_a": "A", "vote_left": "A", "vote_model_a": "A",
    "rightvote": "B", "right": "B", "model_b": "B", "vote_right": "B", "vote_model_b": "B",
    "tievote": "tie", "tie": "tie", "vote_tie": "tie",
    "bothbad_vote": "both_bad", "bothbad": "both_bad", "both_bad": "both_bad", "vote_both_bad": "both_bad",
}  # fmt: skip


def conversation(states: dict[str, Any], side: str) -> list[dict[str, str]]:
    """`states.<side>.messages` as `{role, content}` turns, FastChat role names mapped through `roles`."""
    state = states.get(side)
    if not isinstance(state, dict):
        raise RowError("missing side", f"'states.{side}': {type(state).__name__}")
    raw = state.get("messages")
    if not isinstance(raw, list):
        raise RowError("missing field" if raw is None else "wrong type", f"'states.{side}.messages'")
    roles = state.get("roles") or []
    named = dict(zip(roles, ("user", "assistant"), strict=False))
    turns = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            turns.append(item)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            role = item[0]
            turns.append({"role": named.get(role, role.lower() if isinstance(role, str) else role), "content": item[1]})
        else:
            raise RowError("wrong type", f"'states.{side}.messages[{i}]': expected a [role, text] pair")
    return messages(turns, f"states.{side}.messages")


class SweArena(Adapter):
    info = SourceInfo(
        key="swe_arena",
        name="SWE Arena preference 5k",
        kind="train",
        modality="text",
        hub_id="bigcode/swe-arena-preference-5k",
        license="unknown (unverified)",
        description="Pairwise user votes between two models on coding tasks (SWE Arena), with execution sandboxes.",
    )
    columns = ("type", "feedback", "models", "chat_session_id", "instruction", "states")
    mapped_fields = frozenset({"models"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        feedback = load_json_field(row, "feedback")
        vote = feedback.get("vote_type") if isinstance(feedback, dict) else None
        if vote is None:
            raise RowError("missing field", "'feedback.vote_type'")
        outcome = VOTES.get(vote.lower()) if isinstance(vote, str) else None
        if outcome is None:
            raise RowError("undetermined preference", f"'feedback.vote_type': {vote!r}")
        states = load_json_field(row, "states")
        if not isinstance(states, dict):
            raise RowError("wrong type", f"'states': expected an object, got {type(states).__name__}")
        prompt_a, answer_a = final_answer(conversation(states, "model_A"), "states.model_A.messages")
        prompt_b, answer_b = final_answer(conversation(states, "model_B"), "states.model_B.messages")
        if prompt_a != prompt_b:
            raise RowError("prompt differs between sides", "model_A and model_B differ before their final answers")
        models = row.get("models") if isinstance(row.get("models"), dict) else {}
        names = [field(models, s, optional=True) or field(states[s], "model_name", optional=True) for s in SIDES]
        b_first = outcome == "B"
        return [
            Pair(
                prompt=prompt_a,
                chosen=answer_b if b_first else answer_a,
                rejected=answer_a if b_first else answer_b,
                tie=outcome in ("tie", "both_bad"),
                chosen_model=names[1] if b_first else names[0],
                rejected_model=names[0] if b_first else names[1],
                extra={"chosen_side": "model_B" if b_first else "model_A", "both_bad": outcome == "both_bad"},
            )
        ]

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        """Unmapped fields, with each side's messages (now the pair) and sandbox logs (heavy) left out of `states`."""
        meta = super().meta(row)
        states = load_json_field(row, "states")
        meta["states"] = {
            side: {k: v for k, v in state.items() if k != "messages" and not k.startswith("sandbox")}
            for side, state in states.items()
            if isinstance(state, dict)
        }
        return meta
