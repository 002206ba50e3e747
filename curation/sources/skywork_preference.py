"""Skywork-Reward-Preference-80K (v0.2): chosen/rejected message lists that repeat the prompt.

The prompt is the turns both lists share before their final assistant answer (`split_shared_prompt`);
`source` (HelpSteer2, OffsetBias, WildGuardMix, Magpie...) becomes `subset`. No scores: no ties, margin null.
Pitfalls: v0.1 contains 4,957 magpie-ultra pairs whose prompts overlap RewardBench, so the default is v0.2 and
v0.1 must never meet RewardBench.
"""

from __future__ import annotations

from typing import Any

from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, messages, split_shared_prompt


class SkyworkPreference(Adapter):
    info = SourceInfo(
        key="skywork_preference",
        name="Skywork-Reward-Preference-80K v0.2",
        kind="train",
        modality="text",
        hub_id="Skywork/Skywork-Reward-Preference-80K-v0.2",
        license="Skywork Community License (unverified for data)",
        description="Curated text preference pairs (HelpSteer2, OffsetBias, WildGuardMix, Magpie) as message lists.",
    )
    mapped_fields = frozenset({"chosen", "rejected", "source"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt, chosen, rejected = split_shared_prompt(
            messages(row.get("chosen"), "chosen"), messages(row.get("rejected"), "rejected")
        )
        return [Pair(prompt=prompt, chosen=chosen, rejected=rejected, subset=field(row, "source", optional=True))]
