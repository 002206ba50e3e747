"""The op registry, in stage order. One module per op; the recipe's `ops:` names them. Besides them: the contract
(`base`), what the builder gives an op (`context`), how an op is run (`runner`) and the duplicate clusters three
ops share (`clusters`)."""

from __future__ import annotations

from curation.ops.base import Decision, Op
from curation.ops.context import BuildContext
from curation.ops.decontaminate import Decontaminate
from curation.ops.exact_dedupe import ExactDedupe
from curation.ops.filters import Filters
from curation.ops.human_review import HumanReview
from curation.ops.image_dedupe import ImageDedupe
from curation.ops.near_dedupe import NearDedupe
from curation.ops.rm_margin import RmMargin
from curation.ops.semantic_dedupe import SemanticDedupe
from curation.ops.validate import Validate

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Validate(),
        ExactDedupe(),
        NearDedupe(),
        SemanticDedupe(),
        ImageDedupe(),
        Decontaminate(),
        Filters(),
        RmMargin(),
        HumanReview(),
    )
}

__all__ = ["OPS", "BuildContext", "Decision", "Op"]
