"""Backbones behind one small interface: tokenize a (prompt, answer) sequence, return its final hidden states.

Three kinds, told apart by the model's config:
- `vision_language`: Qwen2.5-VL / Qwen2-VL without the LM head (`AutoModel` gives `Qwen2_5_VLModel`). Each image is
  encoded once per pair and its features are placed into both the chosen and the rejected sequence.
- `decoder`: text-only causal LMs (Qwen2.5, Qwen3, ...) without the LM head; the reward reads the last real token.
- `encoder`: BERT-style text encoders (e.g. all-MiniLM-L6-v2); the reward reads the mean of the real tokens, the
  pooling such sentence encoders are trained with.

Weights load through transformers with `trust_remote_code=False`; `tiny` builds a random tiny Qwen2.5-VL offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from curation.schema import IMAGE_TOKEN

Kind = Literal["vision_language", "decoder", "encoder"]
VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


class SequenceTooLong(ValueError):
    """The answer alone (or the prompt's images) does not fit in `max_length`: the pair is skipped, and counted."""


@dataclass
class Sequence:
    input_ids: list[int]
    image_token_counts: list[int]  # image tokens per image of the prompt, in order
    prompt_truncated: bool


def backbone_kind(config: Any) -> Kind:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "vision_config", None) is not None:
        return "vision_language"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return "encoder"
    return "decoder"


def prompt_text(messages: list[dict[str, str]]) -> str:
    """A plain rendering for tokenizers without a chat template."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


class Backbone(nn.Module):
    """A transformers model plus its tokenizer (and image processor for vision-language models)."""

    def __init__(self, model: nn.Module, tokenizer: Any, image_processor: Any | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.kind: Kind = backbone_kind(model.config)
        text_config = getattr(model.config, "text_config", model.config)
        self.hidden_size: int = text_config.hidden_size
        self.pooling = "mean" if self.kind == "encoder" else "last"
        if self.kind == "encoder":
            tokenizer.truncation_side = "left"  # a long prompt keeps its end, next to the answer
        # Set by the trainer when distributed: text-only passes run a dummy image through the vision tower too.
        self.vision_always = False
        if self.kind == "vision_language":
            self.image_token_id = model.config.image_token_id
            self.merge = model.config.vision_config.spatial_merge_size

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def padding_side(self, wanted: str) -> str:
        """Encoders pad on the right: their absolute position embeddings would shift behind left padding."""
        return "right" if self.kind == "encoder" else wanted

    @property
    def max_positions(self) -> int | None:
        text_config = getattr(self.model.config, "text_config", self.model.config)
        return getattr(text_config, "max_position_embeddings", None)

    # -- tokenization --------------------------------------------------------------------------------------
    def image_inputs(self, images: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values, image_grid_thw) for PIL images, resized within the processor's min/max pixels."""
        out = self.image_processor(images=images, return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def tokens_per_image(self, grid_thw: torch.Tensor) -> list[int]:
        return [int(n) for n in (grid_thw.prod(-1) // self.merge**2).tolist()]

    def sequence(
        self, prompt: list[dict[str, str]], answer: str, max_length: int, image_tokens: list[int] | None = None
    ) -> Sequence:
        """Token ids of prompt + answer; the prompt loses its oldest tokens if needed, the answer never.
        `max_length` is capped by the model's position limit (512 for BERT-style encoders)."""
        image_tokens = image_tokens or []
        max_length = min(max_length, self.max_positions or max_length)
        if self.kind == "encoder":  # [CLS] prompt [SEP] answer [SEP], the prompt cut from its start if needed
            text = prompt_text(prompt)
            head = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            tail = len(self.tokenizer(answer, add_special_tokens=False)["input_ids"])
            room = max_length - self.tokenizer.num_special_tokens_to_add(pair=True) - tail
            if room < 1:
                raise SequenceTooLong(f"answer of {tail} tokens does not fit in max_length {max_length}")
            ids = self.tokenizer(text, answer, truncation="only_first", max_length=max_length)["input_ids"]
            return Sequence(ids, [], head > room)
        head_text, tail_text = self._chat_parts(prompt, answer)
        head = self.tokenizer(head_text, add_special_tokens=False)["input_ids"]
        tail = self.tokenizer(tail_text, add_special_tokens=False)["input_ids"]
        if image_tokens:
            head = self._expand_images(head, image_tokens)
        room = max_length - len(tail)
        if room < 1:
            raise SequenceTooLong(f"answer of {len(tail)} tokens does not fit in max_length {max_length}")
        truncated = len(head) > room
        if truncated:
            cut = head[: len(head) - room]
            if image_tokens and self.image_token_id in cut:
                raise SequenceTooLong(f"prompt with images needs {len(head) + len(tail)} tokens > {max_length}")
            head = head[len(head) - room :]
        return Sequence(head + tail, image_tokens, truncated)

    def _chat_parts(self, prompt: list[dict[str, str]], answer: str) -> tuple[str, str]:
        if self.kind == "vision_language":
            prompt = [
                {"role": m["role"], "content": m["content"].replace(IMAGE_TOKEN, VISION_PLACEHOLDER)} for m in prompt
            ]
        if not getattr(self.tokenizer, "chat_template", None):
            return prompt_text(prompt) + "\n", answer
        head = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False, add_generation_prompt=False
        )
        if not full.startswith(head):  # a template that rewrites earlier turns: keep it whole, answer is the rest
            head = os.path.commonprefix([head, full])  # noqa: RUF071 (character prefix is meant)
        return head, full[len(head) :]

    def _expand_images(self, ids: list[int], image_tokens: list[int]) -> list[int]:
        """Each single `<|image_pad|>` becomes as many tokens as its image has merged patches."""
        out: list[int] = []
        counts = iter(image_tokens)
        for token in ids:
            out.extend([token] * next(counts) if token == self.image_token_id else [token])
        if next(counts, None) is not None or out.count(self.image_token_id) != sum(image_tokens):
            raise ValueError("image placeholders and images disagree")
        return out

    # -- forward -------------------------------------------------------------------------------------------
    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        image_index: list[int] | None = None,
    ) -> torch.Tensor:
        """Final hidden states (N, L, H). `image_index`: for each image occurrence in row-major token order,
        which of the encoded images it is, so an image shared by two sequences is encoded once."""
        if self.kind != "vision_language":
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embeds = self.model.get_input_embeddings()(input_ids)
        mm_types = (input_ids == self.image_token_id).to(torch.int32)
        grid = None
        if pixel_values is not None and image_grid_thw is not None and image_index:
            features = self._image_features(pixel_values, image_grid_thw)
            placed = torch.cat([features[i] for i in image_index]).to(embeds.dtype)
            mask = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(mask, placed)
            grid = image_grid_thw[image_index]
        elif self.vision_always:  # distributed: every rank runs the ViT in every pass, or collectives mismatch
            embeds = embeds + 0.0 * self._dummy_image_features().sum()
        if grid is not None:
            position_ids, _ = self.model.get_rope_index(
                input_ids, mm_token_type_ids=mm_types, image_grid_thw=grid, attention_mask=attention_mask
            )
        else:
            text = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            position_ids = text.unsqueeze(0).expand(3, -1, -1)
        out = self.model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return out.last_hidden_state

    def _image_features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """One feature block per image. Older transformers return one concatenated tensor instead of a split."""
        out = self.model.get_image_features(pixel_values, grid_thw)
        features = getattr(out, "pooler_output", out)
        if isinstance(features, torch.Tensor):
            features = torch.split(features, self.tokens_per_image(grid_thw))
        return list(features)

    def _dummy_image_features(self) -> torch.Tensor:
        from PIL import Image

        pixel_values, grid = self.image_inputs([Image.new("RGB", (56, 56), "white")])
        device = next(self.model.parameters()).device
        return self._image_features(pixel_values.to(device), grid.to(device))[0]


def load_backbone(
    source: str, *, min_pixels: int | None = None, max_pixels: int | None = None, dtype: torch.dtype | None = None
) -> Backbone:
    """`tiny`, a local folder or a Hub id; the image processor gets the recipe's pixel bounds."""
    if source == "tiny":
        from transformers import Qwen2_5_VLModel

        from trainer.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS, tiny_config, tiny_image_processor, tiny_tokenizer

        torch.manual_seed(0)  # the same tiny model every time
        tokenizer = tiny_tokenizer()
        model = Qwen2_5_VLModel(tiny_config(tokenizer))
        processor = tiny_image_processor(min_pixels or TINY_MIN_PIXELS, max_pixels or TINY_MAX_PIXELS)
        return Backbone(model, tokenizer, processor)
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    model = AutoModel.from_pretrained(source, trust_remote_code=False, dtype=dtype or torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    processor = _image_processor(source, min_pixels, max_pixels) if backbone_kind(config) == "vision_language" else None
    return Backbone(model, tokenizer, processor)


def _image_processor(source: str | Path, min_pixels: int | None, max_pixels: int | None) -> Any:
    from transformers import AutoImageProcessor

    bounds = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    return AutoImageProcessor.from_pretrained(source, trust_remote_code=False, **bounds)
