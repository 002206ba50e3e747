"""OLMo-2 0425-1B preference mix (AllenAI): Tulu-3-pipeline message lists with ratings and model names.

Same layout and conversion as `tulu3_preference` (this adapter only changes the source facts): the prompt is
the turns both lists share before the final answer, `chosen_rating`/`rejected_rating` become the scores with
margin = chosen_rating - rejected_rating (equal = tie), `source` becomes `subset`, binarization is the
pipeline's `best_vs_random`. Pitfalls: the 0425-1B field list is assumed equal to the documented 1124-7B
mix (unverified); prompts overlap Tulu-3 and UltraFeedback (dedupe by prompt_id).
"""

from __future__ import annotations

from curation.sources.base import SourceInfo
from curation.sources.tulu3_preference import Tulu3Preference


class Olmo2Preference(Tulu3Preference):
    info = SourceInfo(
        key="olmo2_preference",
        name="OLMo-2 0425-1B preference mix",
        kind="train",
        modality="text",
        hub_id="allenai/olmo-2-0425-1b-preference-mix",
        license="ODC-BY-1.0",
        description="OLMo-2 preference mix (on-policy, cleaned UltraFeedback, WildChat) with ratings; 378k pairs.",
    )
