"""SPA-VL (safety): flat rows of an embedded image, `question`, `chosen`, `rejected` and a 3-level harm class.

`category` is "class1/class2/class3" (harm domain / category / subcategory; empty levels left out) where the
row has them: the Hub card (revision 935596c) declares them only in the `validation` and `test` configs (its
`default` has `image_name`, kept in `meta`), so train pairs have no category. The eval configs (`test` with splits
harm/help; earlier revisions of the Hub repository held them as `evalharm` and `evalhelp` folders) look alike but
carry no responses: they are rejected as `no responses`, not as a generic missing field. Images are the Hub's
Image feature (`{bytes, path}` structs in parquet), or paths under `--images-root` for the `train.zip` copy. The
`validation` config has only a `validation` split, which is read when no split is named. No ties or scores.
"""

from __future__ import annotations

from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt, with_image_tokens

CLASS_FIELDS = ("class1", "class2", "class3")
# Configs without a `train` split (the card's `configs`): the split read when none is named.
CONFIG_SPLITS = {"validation": "validation"}


class SpaVl(Adapter):
    info = SourceInfo(
        key="spa_vl",
        name="SPA-VL",
        kind="train",
        modality="image",
        hub_id="sqrti/SPA-VL",
        license="CC-BY-4.0",
        description="Safety preference pairs (harmlessness + helpfulness) over images, with a 3-level harm class.",
    )
    mapped_fields = frozenset({"image", "question", "chosen", "rejected", *CLASS_FIELDS})

    def default_split(self) -> str:
        return CONFIG_SPLITS.get(self.read.config or "", self.info.default_split)

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        if row.get("chosen") is None and row.get("rejected") is None:
            raise RowError("no responses", "no 'chosen'/'rejected': an eval or test config row, not a preference pair")
        question, chosen, rejected = text_field(row, "question"), text_field(row, "chosen"), text_field(row, "rejected")
        image = ctx.image(row.get("image"), "image")
        classes = [field(row, name, optional=True) for name in CLASS_FIELDS]
        category = "/".join(c.strip() for c in classes if c and c.strip()) or None
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(question), 1),
                chosen=chosen,
                rejected=rejected,
                images=[image],
                category=category,
            )
        ]
