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

from curation.errors import InputError
from curation.readers import HUB_ID
from curation.schema import IMAGE_TOKEN
from trainer import flex_attention, layout
from trainer.config import DEFAULT_MAX_PIXELS
from trainer.vision_attention import use_batched_vision_attention

Kind = Literal["vision_language", "decoder", "encoder"]
VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
SECONDS_PER_GRID = 1.0  # frame timing is unknown in the canonical schema: 2 frames per temporal patch at 2 fps


# Models whose decoder takes `attention_mask={"full_attention": 4-D mask}` as given (Llama and Mistral, for
# example, build their own mask from it and fail).
SHARED_PREFIX_MODELS = frozenset({"qwen2_5_vl", "qwen2_vl", "qwen2", "qwen3"})


class SequenceTooLong(ValueError):
    """The answer alone (or the prompt's images) does not fit in `max_length`: the pair is skipped, and counted."""


class PlaceholderMismatch(ValueError):
    """The text itself holds the model's image/video pad tokens: the pair is skipped, and counted."""


@dataclass
class Sequence:
    input_ids: list[int]
    prompt_truncated: bool
    prompt_tokens: int  # the first tokens that come from the prompt (its images included)


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
            pooler = getattr(model, "pooler", None)
            if pooler is not None:  # unused by the reward (mean pooling): frozen, so DDP does not wait for its grads
                pooler.requires_grad_(False)
        # Set by the trainer: text-only passes run a dummy image through the vision tower too.
        self.vision_always = False
        if self.kind == "vision_language":
            self.image_token_id = model.config.image_token_id
            self.video_token_id = model.config.video_token_id
            self.merge = model.config.vision_config.spatial_merge_size
            use_batched_vision_attention(model.visual)  # exact; one kernel per layer instead of one per window

    def decoder_layers(self) -> list[nn.Module]:
        language = getattr(self.model, "language_model", self.model)
        return list(getattr(language, "layers", []))

    def enable_checkpointing(self, vision: bool, keep_layers: int = 0) -> None:
        """Recompute activations in the backward pass: the decoder layers but the first `keep_layers` (which keep
        theirs, trading memory for time), and the vision blocks only if asked."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        visual = getattr(self.model, "visual", None)
        kept = self.decoder_layers()[:keep_layers]
        if visual is not None and not vision:
            kept += [m for m in visual.modules() if hasattr(m, "gradient_checkpointing")]
        for module in kept:
            module.gradient_checkpointing = False

    def compile_layers(self, enabled: bool = True) -> None:
        """`torch.compile` each decoder layer and each vision block's MLP (regional: the layers share one graph).
        Fuses the elementwise work (norms, rotary, SwiGLU, casts) that otherwise costs a kernel launch and a
        memory pass per operation. The vision attention stays eager (its segment lengths are read on the host).
        `enabled=False` restores the eager layers."""
        modules = self.decoder_layers()
        visual = getattr(self.model, "visual", None)
        if visual is not None:
            modules += [block.mlp for block in visual.blocks]
        for module in modules:
            if enabled:
                module.compile()
            else:
                module._compiled_call_impl = None

    def disable_checkpointing(self) -> None:
        if hasattr(self.model, "activation_checkpointing_disable"):  # transformers >= 5.2x
            self.model.activation_checkpointing_disable()
        else:
            self.model.gradient_checkpointing_disable()

    def use_attention(self, attention: str) -> None:
        """The language model's attention: `sdpa` or `flex` (`trainer.flex_attention`: a block mask instead of a
        dense shared-prefix mask), the latter for the models that take a ready mask (`SHARED_PREFIX_MODELS`)."""
        name = flex_attention.NAME if attention == "flex" else attention
        text_config = getattr(self.model.config, "text_config", self.model.config)
        if text_config._attn_implementation == name or (
            attention == "sdpa" and text_config._attn_implementation != flex_attention.NAME
        ):  # as loaded (sdpa, or eager where the model has no sdpa), unless leaving flex
            return
        if attention == "flex":
            if self.model.config.model_type not in SHARED_PREFIX_MODELS:
                raise InputError(f"attention: flex needs one of {sorted(SHARED_PREFIX_MODELS)}, not "
                                 f"{self.model.config.model_type!r}")  # fmt: skip
            flex_attention.register()
        text_only = text_config is self.model.config
        self.model.set_attn_implementation(name if text_only else {"text_config": name})

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def layout(self, wanted: str) -> str:
        """`shared_prefix` and `packed` need a model known to take a ready per-layer mask (`SHARED_PREFIX_MODELS`),
        sdpa, eager or flex attention and no sliding windows; otherwise pairs are laid out `padded`."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        layer_types = set(getattr(text_config, "layer_types", None) or ["full_attention"])
        supported = (
            self.model.config.model_type in SHARED_PREFIX_MODELS
            and getattr(text_config, "_attn_implementation", None) in ("sdpa", "eager", flex_attention.NAME)
            and layer_types == {"full_attention"}
            and not getattr(text_config, "use_sliding_window", False)
        )
        return wanted if wanted == "padded" or supported else "padded"

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

    def video_inputs(self, frames: list[Any], max_tokens: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values_videos, video_grid_thw) for one video given as PIL frames, in Qwen2-VL's patch layout:
        frames resized alike within the processor's pixel bounds and a budget of about `max_tokens` tokens for the
        whole video, normalized, padded to whole temporal patches."""
        import numpy as np

        try:  # the PIL processor's module needs no torchvision (transformers >= 5.2x)
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
        except ImportError:
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        proc = self.image_processor
        patch, merge, temporal = proc.patch_size, proc.merge_size, proc.temporal_patch_size
        width, height = frames[0].size
        size = proc.size
        steps = -(-len(frames) // temporal)  # temporal patches; each frame pair shares one grid of tokens
        budget = max(size["shortest_edge"], max_tokens // steps * (patch * merge) ** 2)
        rh, rw = smart_resize(height, width, patch * merge, min_pixels=size["shortest_edge"],
                              max_pixels=min(size["longest_edge"], budget))  # fmt: skip
        mean = np.array(proc.image_mean, dtype=np.float32)[:, None, None]
        std = np.array(proc.image_std, dtype=np.float32)[:, None, None]
        video = np.stack([
            (np.asarray(f.convert("RGB").resize((rw, rh), resample=3), dtype=np.float32).transpose(2, 0, 1) / 255.0
             - mean) / std
            for f in frames
        ])  # fmt: skip
        if len(video) % temporal:
            video = np.concatenate([video, np.repeat(video[-1:], temporal - len(video) % temporal, axis=0)])
        grid_t, grid_h, grid_w = len(video) // temporal, rh // patch, rw // patch
        patches = video.reshape(grid_t, temporal, 3, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
        patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/m, w/m, m, m, C, temporal, p, p)
        flat = patches.reshape(grid_t * grid_h * grid_w, 3 * temporal * patch * patch)
        return torch.from_numpy(np.ascontiguousarray(flat)), torch.tensor([[grid_t, grid_h, grid_w]])

    def sequence(
        self,
        prompt: list[dict[str, str]],
        answer: str,
        max_length: int,
        image_tokens: list[int] | None = None,
        video_tokens: int | None = None,
    ) -> Sequence:
        """Token ids of prompt + answer; the prompt loses its oldest tokens if needed, the answer never.
        `max_length` is capped by the model's position limit (512 for BERT-style encoders). With `video_tokens`,
        the prompt's frame placeholders become one video of that many tokens."""
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
            return Sequence(ids, head > room, len(ids))
        head_text, tail_text = self._chat_parts(prompt, answer, video=video_tokens is not None)
        head = self.tokenizer(head_text, add_special_tokens=False)["input_ids"]
        tail = self.tokenizer(tail_text, add_special_tokens=False)["input_ids"]
        if self.kind == "vision_language":
            if {self.image_token_id, self.video_token_id} & set(tail):
                raise PlaceholderMismatch("the answer holds image/video pad tokens")
            head = self._expand(head, self.image_token_id, image_tokens)
            head = self._expand(head, self.video_token_id, [] if video_tokens is None else [video_tokens])
        room = max_length - len(tail)
        if room < 1:
            raise SequenceTooLong(f"answer of {len(tail)} tokens does not fit in max_length {max_length}")
        truncated = len(head) > room
        if truncated:
            cut = head[: len(head) - room]
            if self.kind == "vision_language" and {self.image_token_id, self.video_token_id} & set(cut):
                raise SequenceTooLong(f"prompt with images needs {len(head) + len(tail)} tokens > {max_length}")
            head = head[len(head) - room :]
        return Sequence(head + tail, truncated, len(head))

    def _chat_parts(self, prompt: list[dict[str, str]], answer: str, video: bool = False) -> tuple[str, str]:
        if self.kind == "vision_language":
            prompt = [{"role": m["role"], "content": self._placeholders(m["content"], video)} for m in prompt]
        if not getattr(self.tokenizer, "chat_template", None):
            return prompt_text(prompt) + "\n", answer
        head = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False, add_generation_prompt=False
        )
        if not full.startswith(head):  # a template that rewrites earlier turns: keep it whole, answer is the rest
            head = os.path.commonprefix([head, full])  # noqa: RUF071 (character prefix is meant)
        return head, full[len(head) :]

    @staticmethod
    def _placeholders(content: str, video: bool) -> str:
        """`<image>` -> the model's image placeholder; for a video, its frames' placeholders -> one video."""
        if not video:
            return content.replace(IMAGE_TOKEN, VISION_PLACEHOLDER)
        first = content.find(IMAGE_TOKEN)
        if first < 0:
            return content
        rest = content[first + len(IMAGE_TOKEN) :].replace(IMAGE_TOKEN, "")
        return content[:first] + VIDEO_PLACEHOLDER + rest

    @staticmethod
    def _expand(ids: list[int], token_id: int, counts: list[int]) -> list[int]:
        """Each single pad token becomes as many tokens as its image (or video) has merged patches."""
        if ids.count(token_id) != len(counts):  # e.g. a literal `<|image_pad|>` typed in the prompt text
            raise PlaceholderMismatch(f"{ids.count(token_id)} image/video pad tokens for {len(counts)} inputs")
        out: list[int] = []
        remaining = iter(counts)
        for token in ids:
            out.extend([token] * next(remaining) if token == token_id else [token])
        return out

    # -- forward -------------------------------------------------------------------------------------------
    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        segments: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        image_index: list[int] | None = None,
        sequence_image_index: list[int] | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        video_index: list[int] | None = None,
        sequence_video_index: list[int] | None = None,
        position_ids: torch.Tensor | None = None,
        packing: layout.Packed | None = None,
    ) -> torch.Tensor:
        """Final hidden states (N, L, H). `image_index` (`video_index`): for each image (video) occurrence in
        row-major token order, which encoded image (video) it is, so one shared by two sequences is encoded once.
        With `segments`, rows are in the shared-prefix layout (`trainer.layout`); `sequence_image_index` then
        gives the occurrences in the chosen-then-rejected sequences the rows hold, for their M-RoPE positions.
        `position_ids`: as `positions` computes them (the trainer's data workers do), else computed here.
        `packing` (`trainer.layout.packed_index`): the shared-prefix rows run through the decoder packed, several
        to a row without padding; the hidden states come back packed, (packed rows, width, H), for
        `trainer.layout.readout` to read through `packing.inverse` (only the read-out positions are gathered)."""
        if self.kind != "vision_language" and segments is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if position_ids is None:
            position_ids = self.positions(input_ids, attention_mask, segments, image_grid_thw, image_index,
                                          sequence_image_index, video_grid_thw, video_index,
                                          sequence_video_index).to(input_ids.device)  # fmt: skip
        embeds = self.model.get_input_embeddings()(input_ids)
        if self.kind == "vision_language":
            embeds = self._with_visual(embeds, input_ids, pixel_values, image_grid_thw, image_index,
                                       pixel_values_videos, video_grid_thw, video_index)  # fmt: skip
        if segments is None:
            return self._decode(embeds, attention_mask, position_ids)
        if packing is None:
            return self._decode(embeds, self._row_mask(layout.parts(segments, input_ids.shape[1])), position_ids)
        gather = packing.gather
        return self._decode(embeds.flatten(0, 1)[gather], self._row_mask(packing.part, packing.pair),
                            position_ids.flatten(-2)[..., gather])  # fmt: skip

    def _decode(self, embeds: torch.Tensor, mask: Any, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    def _with_visual(
        self,
        embeds: torch.Tensor,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        image_index: list[int] | None,
        pixel_values_videos: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
        video_index: list[int] | None,
    ) -> torch.Tensor:
        """The token embeddings with the encoded images and videos in place of their placeholder tokens."""
        images = pixel_values is not None and image_grid_thw is not None and bool(image_index)
        videos = pixel_values_videos is not None and video_grid_thw is not None and bool(video_index)
        if images or videos:
            # One vision-tower call for the images and videos of the pass: every rank then makes the same number
            # of calls (FSDP gathers the ViT's shards once per call); the tower encodes each grid separately.
            pixels = [t for t, used in ((pixel_values, images), (pixel_values_videos, videos)) if used]
            all_grids = [t for t, used in ((image_grid_thw, images), (video_grid_thw, videos)) if used]
            features = self._image_features(torch.cat(pixels), torch.cat(all_grids))
            n_images = len(image_grid_thw) if images else 0
            if images:
                embeds = self._place(embeds, input_ids, self.image_token_id, [features[i] for i in image_index])
            if videos:
                blocks = [features[n_images + i] for i in video_index]
                embeds = self._place(embeds, input_ids, self.video_token_id, blocks)
        elif self.vision_always:  # every pass runs the ViT (distributed ranks must make the same calls)
            embeds = embeds + 0.0 * self._dummy_image_features().sum()
        return embeds

    def positions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        segments: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        image_index: list[int] | None = None,
        sequence_image_index: list[int] | None = None,
        video_grid_thw: torch.Tensor | None = None,
        video_index: list[int] | None = None,
        sequence_video_index: list[int] | None = None,
    ) -> torch.Tensor:
        """Position ids of the rows, computed on the host (returned there): (3, N, L) M-RoPE positions for
        vision-language models, (N, L) for text decoders. `get_rope_index` loops over rows and images, so on
        device tensors each read would wait for the device; the trainer computes them in its data workers."""
        shared = segments is not None
        grids: dict[str, torch.Tensor] = {}  # per occurrence in the sequences
        if image_grid_thw is not None and image_index:
            grids["image_grid_thw"] = image_grid_thw.cpu()[sequence_image_index if shared else image_index]
        if video_grid_thw is not None and video_index:
            grids["video_grid_thw"] = video_grid_thw.cpu()[sequence_video_index if shared else video_index]
            grids["second_per_grid_ts"] = torch.full((len(grids["video_grid_thw"]),), SECONDS_PER_GRID)
        ids, real = input_ids.cpu(), attention_mask.cpu()
        if segments is None:
            return self._positions(ids, real, grids)
        segments = segments.cpu()
        sequence_ids, sequence_mask = layout.sequences(ids, segments, self.pad_token_id)
        if self.kind == "vision_language":
            sequence_positions = self._positions(sequence_ids, sequence_mask, grids)
        else:
            sequence_positions = self._text_positions(sequence_mask)
        return layout.row_positions(sequence_positions, segments, ids.shape[1])

    def _positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, grids: dict[str, Any]) -> torch.Tensor:
        """(3, N, L) M-RoPE positions of right- or left-padded rows."""
        if not grids:
            return self._text_positions(attention_mask).unsqueeze(0).expand(3, -1, -1)
        mm_types = (input_ids == self.image_token_id).to(torch.int32) + 2 * (input_ids == self.video_token_id).to(
            torch.int32
        )
        positions, _ = self.model.get_rope_index(
            input_ids, mm_token_type_ids=mm_types, attention_mask=attention_mask, **grids
        )
        return positions

    @staticmethod
    def _text_positions(attention_mask: torch.Tensor) -> torch.Tensor:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def _row_mask(self, part: torch.Tensor, pair: torch.Tensor | None = None) -> dict[str, Any]:
        """The layout's mask (`trainer.layout.may_attend`) over rows of `part` (and, packed, `pair`), built on the
        device and given as a ready mask for every layer (transformers then builds none): a block mask for flex
        attention; bool for sdpa and additive for eager attention, both dense, (rows, 1, length, length): fine at a
        few thousand tokens, costly beyond."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        if text_config._attn_implementation == flex_attention.NAME:
            return {"full_attention": flex_attention.block_mask(part, pair)}
        allowed = layout.attention_mask(part, pair)
        if text_config._attn_implementation == "eager":
            dtype = self.model.get_input_embeddings().weight.dtype
            allowed = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )
        return {"full_attention": allowed}

    @staticmethod
    def _place(
        embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int, blocks: list[torch.Tensor]
    ) -> torch.Tensor:
        mask = (input_ids == token_id).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, torch.cat(blocks).to(embeds.dtype))

    def _image_features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """One feature block per image (or video: the same tower, patches in the video layout). Older transformers
        return one concatenated tensor instead of a split."""
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


def check_model_source(source: str) -> None:
    """`InputError` unless `source` can name a model: `tiny`, an existing folder or a plausible `owner/name` Hub
    id. Decided here, before any network call: a typo would otherwise wait on the Hub's retries."""
    if source == "tiny" or Path(source).is_dir() or (HUB_ID.fullmatch(source) and not Path(source).exists()):
        return
    raise InputError(f"unknown model {source!r}: use `tiny`, a local folder or a Hub id")


def load_backbone(
    source: str, *, min_pixels: int | None = None, max_pixels: int | None = None, dtype: torch.dtype | None = None
) -> Backbone:
    """`tiny`, a local folder or a Hub id; the image processor gets the recipe's pixel bounds."""
    check_model_source(source)
    if source == "tiny":
        from transformers import Qwen2_5_VLModel

        from trainer.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS, tiny_config, tiny_image_processor, tiny_tokenizer

        torch.manual_seed(0)  # the same tiny model every time
        tokenizer = tiny_tokenizer()
        model = Qwen2_5_VLModel(tiny_config(tokenizer))
        processor = tiny_image_processor(min_pixels or TINY_MIN_PIXELS, max_pixels or TINY_MAX_PIXELS)
        return Backbone(model, tokenizer, processor)
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        # safetensors only: a pickled checkpoint (.bin, .pt) can run code when it is loaded
        model = AutoModel.from_pretrained(
            source, trust_remote_code=False, use_safetensors=True, dtype=dtype or torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        vision = backbone_kind(config) == "vision_language"
        processor = _image_processor(source, min_pixels, max_pixels) if vision else None
    except (OSError, ValueError) as exc:  # offline, not cached, gated, not a model folder: explained on many lines
        lines = str(exc).strip().splitlines()
        raise InputError(f"model {source!r}: cannot load it ({lines[0] if lines else type(exc).__name__})") from exc
    return Backbone(model, tokenizer, processor)


def _image_processor(source: str | Path, min_pixels: int | None, max_pixels: int | None) -> Any:
    processor = load_image_processor(source)
    if max_pixels is None:
        max_pixels = min(processor.size["longest_edge"], DEFAULT_MAX_PIXELS)
    bounds = {"max_pixels": max_pixels, **({"min_pixels": min_pixels} if min_pixels is not None else {})}
    return load_image_processor(source, **bounds)


def load_image_processor(source: str | Path, **bounds: int) -> Any:
    """The checkpoint's image processor; where its fast (torchvision) class cannot load, the PIL class, which
    reads the same files and computes the same patches."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=False, **bounds)
    except (ImportError, ValueError):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil.from_pretrained(source, **bounds)
