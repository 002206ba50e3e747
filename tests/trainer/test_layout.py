"""The fast paths compute what the naive step computes: each sequence alone, each image encoded for each sequence,
transformers' own per-window vision attention. Rewards and every gradient are compared (fp32, CPU)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import image_bytes
from tests.trainer.conftest import pair_row
from trainer import layout
from trainer.backbone import load_backbone
from trainer.data import PairData, PairFeatures, StepBatches, collate, featurize, with_positions
from trainer.loss import bradley_terry_loss
from trainer.model import HeadConfig, RewardModel
from trainer.vision_attention import segment_attention, use_batched_vision_attention, vision_attention_modules


def tiny_model(**bounds: int) -> RewardModel:
    """The tiny model with its attention sharpened: at random init its attention is nearly uniform, so a wrong
    mask or window would change little; scaled query/key weights make every attention pattern count."""
    torch.manual_seed(1)
    model = RewardModel(load_backbone("tiny", **bounds), HeadConfig(), source="tiny").train()
    with torch.no_grad():
        for module in vision_attention_modules(model.backbone.model.visual):
            module.qkv.weight[: 2 * module.qkv.out_features // 3] *= 30
        for name, param in model.backbone.model.language_model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param *= 30
    return model


def mixed_features(model: RewardModel) -> list[PairFeatures]:
    """Text, one image, two images of other sizes, a video, answers sharing their first words, and a pair whose
    prompt is truncated differently for its two answers (nothing shared)."""
    sized = lambda seed, size: image_bytes(seed, size=size)  # noqa: E731
    cases = [
        (pair_row("Hello?", "Hi, how can I help?", "What."), []),
        (pair_row("What is shown?", "A red square.", "A cat", images=1), [sized(1, (60, 90))]),
        (pair_row("Compare.", "The first is brighter.", "The first is darker.", images=2),
         [sized(2, (200, 180)), sized(3, (120, 50))]),
        ({**pair_row("What happens?", "A ball rolls.", "Nothing.", images=3), "modality": "video"},
         [sized(4, (90, 60))] * 3),
        (pair_row("p" * 300, "a short answer", "a much, much longer answer than the other one"), []),
    ]  # fmt: skip
    features = [featurize(model.backbone, row, images, 320) for row, images in cases]
    assert all(isinstance(f, PairFeatures) for f in features)
    return features  # type: ignore[return-value]


def visual_inputs(feature: PairFeatures) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if feature.pixel_values is not None:
        out |= {"pixel_values": feature.pixel_values, "image_grid_thw": feature.image_grid_thw,
                "image_index": list(range(len(feature.image_grid_thw)))}  # fmt: skip
    if feature.pixel_values_videos is not None:
        out |= {"pixel_values_videos": feature.pixel_values_videos, "video_grid_thw": feature.video_grid_thw,
                "video_index": [0]}  # fmt: skip
    return out


def naive(model: RewardModel, features: list[PairFeatures]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each sequence alone, its images encoded again, transformers' per-window vision attention."""
    if model.backbone.kind == "vision_language":
        use_batched_vision_attention(model.backbone.model.visual, enabled=False)
    model.zero_grad()
    sides = []
    for side in ("chosen", "rejected"):
        rewards = []
        for f in features:
            ids = getattr(f, side)
            rewards.append(model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), **visual_inputs(f)))
        sides.append(torch.cat(rewards))
    bradley_terry_loss(*sides).backward()
    if model.backbone.kind == "vision_language":
        use_batched_vision_attention(model.backbone.model.visual)
    return torch.cat(sides).detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def fast(model: RewardModel, features: list[PairFeatures], how: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    batch = collate(features, model.backbone.pad_token_id, layout=model.backbone.layout(how))
    rewards = model(**batch.model_inputs())
    bradley_terry_loss(rewards[: batch.pairs], rewards[batch.pairs :]).backward()
    return rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a: tuple[torch.Tensor, dict], b: tuple[torch.Tensor, dict], atol: float = 1e-5) -> None:
    torch.testing.assert_close(a[0], b[0], atol=atol, rtol=1e-4)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=atol, rtol=1e-3, msg=name)


@pytest.mark.parametrize("how", ["padded", "shared_prefix"])
def test_fast_step_equals_the_naive_step_on_a_mixed_batch(how: str) -> None:
    model = tiny_model(max_pixels=64 * 28 * 28)  # images of several windows, some partial
    features = mixed_features(model)
    assert [f.prefix > 0 for f in features] == [True, True, True, True, False]
    reference = naive(model, features)
    assert any("visual" in n for n in reference[1])  # the vision tower's gradients are compared too
    assert_same(fast(model, features, how), reference)


@pytest.mark.parametrize("how", ["padded", "shared_prefix"])
def test_flex_attention_step_equals_the_naive_step_on_a_mixed_batch(how: str) -> None:
    """Training on CPU runs the block mask's rule densely (the kernel has no CPU backward); scoring runs the
    flex_attention kernel itself. Both against the naive step under sdpa."""
    model = tiny_model(max_pixels=64 * 28 * 28)
    features = mixed_features(model)
    reference = naive(model, features)
    model.backbone.use_attention("flex")
    assert model.backbone.layout(how) == how
    assert_same(fast(model, features, how), reference)
    with torch.no_grad():
        batch = collate(features, model.backbone.pad_token_id, layout=how)
        torch.testing.assert_close(model(**batch.model_inputs()), reference[0], atol=1e-5, rtol=1e-4)


def test_block_mask_is_the_layout_rule_and_skips_blocks() -> None:
    from torch.nn.attention.flex_attention import create_mask

    from trainer.flex_attention import block_mask

    segments = torch.tensor([[3, 4, 2], [0, 1, 5], [2, 2, 2]])
    part = layout.parts(segments, 11)
    dense = create_mask(block_mask(part).mask_mod, 3, 1, 11, 11, device="cpu")
    assert torch.equal(dense, layout.attention_mask(part))
    packed = layout.packed_index(segments, layout.pack(segments, 20), 11)
    dense = create_mask(block_mask(packed.part, packed.pair).mask_mod, 2, 1, 15, 15, device="cpu")
    assert torch.equal(dense, layout.attention_mask(packed.part, packed.pair))
    # a long row: its rejected queries skip the chosen keys' blocks, which causal attention would compute
    long = torch.tensor([[128, 1024, 1024]])
    causal = (2176 // 128) * (2176 // 128 + 1) // 2
    computed = block_count(block_mask(layout.parts(long, 2176)))
    assert computed == causal - (1024 // 128) ** 2
    # two such pairs packed in one row: neither sees the other's blocks
    two = torch.tensor([[128, 1024, 1024]] * 2)
    packed = layout.packed_index(two, layout.pack(two, 4352), 2176)
    assert block_count(block_mask(packed.part, packed.pair)) == 2 * computed


def block_count(block: Any) -> int:
    """Blocks the kernel computes (partly or fully unmasked)."""
    full = block.full_kv_num_blocks.sum() if block.full_kv_num_blocks is not None else 0
    return int(block.kv_num_blocks.sum() + full)


def test_flex_attention_needs_a_model_that_takes_a_ready_mask() -> None:
    from transformers import BertConfig, BertModel

    from curation.errors import InputError
    from trainer.backbone import Backbone
    from trainer.tiny import tiny_tokenizer

    bert = BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32)  # fmt: skip
    with pytest.raises(InputError, match="attention: flex needs"):
        Backbone(BertModel(bert), tiny_tokenizer()).use_attention("flex")


@pytest.mark.skipif(
    not any(map(shutil.which, ("cc", "gcc", "clang"))), reason="torch.compile on CPU needs a C compiler"
)
def test_compiled_layers_compute_what_eager_layers_compute() -> None:
    """The trainer compiles the decoder layers and vision MLPs on GPU; the same code path on CPU, with the
    decoder recomputed in the backward pass as in training."""
    model = tiny_model(max_pixels=64 * 28 * 28)
    model.backbone.enable_checkpointing(vision=False)
    features = mixed_features(model)
    eager = fast(model, features, "shared_prefix")
    model.backbone.compile_layers()
    try:
        assert_same(fast(model, features, "shared_prefix"), eager)
    finally:
        model.backbone.compile_layers(enabled=False)


def test_a_frozen_vision_tower_changes_only_what_is_trained() -> None:
    """`freeze_vision`: the tower runs without recording gradients; rewards and every other gradient stay."""
    model = tiny_model()
    features = mixed_features(model)
    rewards, grads = fast(model, features, "shared_prefix")
    model.backbone.model.visual.requires_grad_(False)
    frozen_rewards, frozen_grads = fast(model, features, "shared_prefix")
    assert not any("visual" in name for name in frozen_grads)
    torch.testing.assert_close(frozen_rewards, rewards)
    for name, grad in frozen_grads.items():
        torch.testing.assert_close(grad, grads[name], msg=name)


def test_micro_batches_group_pairs_of_like_length(demo_build: Path) -> None:
    data = PairData.open([str(demo_build)], seed=0, eval_fraction=0.0)
    backbone = load_backbone("tiny")
    steps = StepBatches(data, backbone, max_length=512, padding_side="right", layout="shared_prefix",
                        global_batch=8, micro_batch=2, accumulation=4, rank=0, world=1, start=0, total=1)  # fmt: skip
    batches, skipped = steps[0]
    assert len(batches) == 4
    drawn = [e.pair_id for group in steps.micro_batches(0) for e in group]
    lengths = [int(b.attention_mask.sum(1).max()) for b in batches if b is not None]
    assert lengths == sorted(lengths)
    assert sum(b.pairs for b in batches if b is not None) + sum(skipped.values()) == len(drawn) == 8


def test_a_step_smaller_than_a_global_batch_runs_only_the_passes_its_pairs_fill(demo_build: Path) -> None:
    """A global batch far above the build's draws (one step holds them all) runs the passes those draws fill, the same
    number on every rank, and still trains every draw once."""
    data = PairData.open([str(demo_build)], seed=0, eval_fraction=0.0)
    backbone = load_backbone("tiny")
    draws = len(data.train)
    per_rank = []
    for rank in range(2):
        steps = StepBatches(data, backbone, max_length=512, padding_side="right", layout="shared_prefix",
                            global_batch=400_000, micro_batch=4, accumulation=50_000, rank=rank, world=2, start=0,
                            total=1)  # fmt: skip
        per_rank.append(steps.micro_batches(0))
    assert [len(groups) for groups in per_rank] == [-(-draws // 8)] * 2
    drawn = sorted(e.pair_id for groups in per_rank for group in groups for e in group)
    assert drawn == sorted(e.pair_id for e in data.train)


def test_rewards_match_transformers_own_forward() -> None:
    """An outside reference: each sequence through `Qwen2_5_VLModel.forward` itself (its own embedding merge and
    M-RoPE positions, per-window vision attention), the head on its last hidden state."""
    model = tiny_model(max_pixels=64 * 28 * 28).eval()
    features = mixed_features(model)
    expected = []
    with torch.no_grad():
        use_batched_vision_attention(model.backbone.model.visual, enabled=False)
        for side in ("chosen", "rejected"):
            for f in features:
                ids = torch.tensor([getattr(f, side)])
                visual = {k: v for k, v in {"pixel_values": f.pixel_values, "image_grid_thw": f.image_grid_thw,
                          "pixel_values_videos": f.pixel_values_videos, "video_grid_thw": f.video_grid_thw}.items()
                          if v is not None}  # fmt: skip
                # as the processor gives them: without these, transformers falls back to text positions
                types = (ids == model.backbone.image_token_id).int() + 2 * (ids == model.backbone.video_token_id).int()
                hidden = model.backbone.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                              mm_token_type_ids=types, **visual)  # fmt: skip
                expected.append(model.head(hidden.last_hidden_state[:, -1]))
        use_batched_vision_attention(model.backbone.model.visual)
        batch = collate(features, model.backbone.pad_token_id, layout="shared_prefix")
        rewards = model(**batch.model_inputs())
    torch.testing.assert_close(rewards, torch.cat(expected), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("how", ["padded", "shared_prefix"])
def test_positions_computed_with_the_data_equal_those_of_the_pass(how: str) -> None:
    model = tiny_model(max_pixels=64 * 28 * 28).eval()
    batch = collate(mixed_features(model), model.backbone.pad_token_id, layout=how)
    prepared = with_positions(batch, model.backbone)
    assert prepared.position_ids is not None and prepared.position_ids.shape[1:] == batch.input_ids.shape
    with torch.no_grad():
        torch.testing.assert_close(model(**prepared.model_inputs()), model(**batch.model_inputs()), atol=0, rtol=0)
        scrambled = replace(prepared, position_ids=prepared.position_ids.flip(-1))  # the pass does use them
        assert not torch.allclose(model(**scrambled.model_inputs()), model(**batch.model_inputs()))


def test_shared_prefix_saves_the_prompt_and_its_image_tokens() -> None:
    model = tiny_model()
    features = mixed_features(model)
    padded = collate(features, model.backbone.pad_token_id)
    shared = collate(features, model.backbone.pad_token_id, layout="shared_prefix")
    assert shared.tokens == padded.tokens - sum(f.prefix for f in features)
    assert shared.input_ids.shape[0] == len(features) == padded.input_ids.shape[0] // 2
    # a pair's image occurs once in its row, twice where nothing is shared
    assert shared.image_index == [0, 1, 2] and padded.image_index == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("attention", ["sdpa", "eager", "flex"])
def test_shared_prefix_on_a_text_decoder(attention: str) -> None:
    from transformers import Qwen2Config, Qwen2Model

    from trainer.backbone import Backbone
    from trainer.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         attn_implementation="sdpa" if attention == "flex" else attention)  # fmt: skip
    torch.manual_seed(0)
    model = RewardModel(Backbone(Qwen2Model(config), tokenizer), HeadConfig()).train()
    rows = [pair_row("Hi", "Hello, how are you?", "Hello there."), pair_row("2+2?", "4", "It is 5, clearly.")]
    features = [featurize(model.backbone, r, [], 256) for r in rows]
    reference = naive(model, features)
    if attention == "flex":
        model.backbone.use_attention("flex")
    assert model.backbone.layout("shared_prefix") == "shared_prefix"
    assert_same(fast(model, features, "shared_prefix"), reference)


def test_other_backbones_keep_the_padded_layout() -> None:
    """Encoders cannot share a prefix; Llama-style decoders build their own mask from the one they are given."""
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    from trainer.backbone import Backbone
    from trainer.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    bert = BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32)  # fmt: skip
    assert Backbone(BertModel(bert), tokenizer).layout("shared_prefix") == "padded"
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = RewardModel(Backbone(LlamaModel(llama), tokenizer), HeadConfig()).train()
    assert model.backbone.layout("shared_prefix") == "padded"
    features = [featurize(model.backbone, pair_row("Hi", "Hello, how are you?", "Hello there."), [], 256)]
    assert_same(fast(model, features, "shared_prefix"), naive(model, features))


def test_segment_lengths_are_read_again_after_an_in_place_change() -> None:
    q = k = v = torch.randn(8, 2, 4)
    cu = torch.tensor([0, 4, 8])
    first = segment_attention(q, k, v, cu, 0.5)
    cu[1] = 2  # the same tensor object, new boundaries
    expected = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), scale=0.5)
        .transpose(0, 1)
        for a, b in ((0, 2), (2, 8))
    ])  # fmt: skip
    again = segment_attention(q, k, v, cu, 0.5)
    torch.testing.assert_close(again, expected)
    assert not torch.allclose(again, first)


@pytest.mark.parametrize(("attention", "pack_length"), [("sdpa", 1), ("sdpa", 10**6), ("flex", 200)])
def test_packed_step_equals_the_naive_step_on_a_mixed_batch(attention: str, pack_length: int) -> None:
    """Packed rows (one pair each, all in one row, and in between) compute what the naive step computes."""
    model = tiny_model(max_pixels=64 * 28 * 28)
    features = mixed_features(model)
    reference = naive(model, features)
    model.backbone.use_attention(attention)
    batch = collate(features, model.backbone.pad_token_id, layout="packed", pack_length=pack_length)
    assert batch.packing is not None
    rows = len(batch.packing.gather)
    expected = {1: len(features), 10**6: 1}
    assert rows == expected[pack_length] if pack_length in expected else 1 < rows < len(features)
    model.zero_grad()
    rewards = model(**with_positions(batch, model.backbone).model_inputs())
    bradley_terry_loss(rewards[: batch.pairs], rewards[batch.pairs :]).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert_same((rewards.detach(), grads), reference)


def test_packing_moves_tokens_and_nothing_else() -> None:
    segments = torch.tensor([[2, 2, 1], [0, 1, 1], [1, 1, 1]])  # rows of 5, 2 and 3 tokens
    packing = layout.pack(segments, capacity=7)
    assert packing.tolist() == [[0, 0], [0, 5], [1, 0]]  # next fit, in order
    assert layout.pack(segments, capacity=1).tolist() == [[0, 0], [1, 0], [2, 0]]  # too long: a row each
    gather, pair, part, inverse = layout.packed_index(segments, packing, 5)
    assert pair.tolist() == [[0, 0, 0, 0, 0, 1, 1], [2, 2, 2, -1, -1, -1, -1]]
    assert gather.tolist() == [[0, 1, 2, 3, 4, 5, 6], [10, 11, 12, 0, 0, 0, 0]]
    P, C, R, X = layout.PREFIX, layout.CHOSEN, layout.REJECTED, layout.PAD
    assert part.tolist() == [[P, P, C, C, R, C, R], [P, C, R, X, X, X, X]]
    tokens = torch.arange(15).view(3, 5)
    real = layout.parts(segments, 5) != X
    assert torch.equal(tokens.flatten()[gather].flatten()[inverse][real], tokens[real])  # there and back
    allowed = layout.attention_mask(part, pair)[0, 0].int()
    assert allowed[5].tolist() == [0, 0, 0, 0, 0, 1, 0]  # the second pair's first token sees only itself
    assert allowed[6].tolist() == [0, 0, 0, 0, 0, 0, 1]  # its rejected token: not its chosen, not the first pair


def test_layout_helpers_on_a_hand_made_pair() -> None:
    segments = torch.tensor([[2, 2, 1], [0, 1, 1]])  # rows: P P C C R / C R (pad pad pad)
    ids = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 0, 0, 0]])
    allowed = layout.attention_mask(layout.parts(segments, 5))[:, 0].int()
    assert allowed[0].tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]
    assert allowed[1, 1].tolist() == [0, 1, 0, 0, 0]  # the rejected token sees neither chosen nor padding
    sequences, mask = layout.sequences(ids, segments, pad_id=0)
    assert sequences.tolist() == [[10, 11, 12, 13], [20, 0, 0, 0], [10, 11, 14, 0], [21, 0, 0, 0]]
    assert mask.sum(1).tolist() == [4, 1, 3, 1]
    positions = layout.row_positions(torch.arange(4).expand(4, 4), segments, 5)
    assert positions.tolist() == [[0, 1, 2, 3, 2], [0, 0, 0, 0, 0]]
    assert layout.shared_prefix_length([1, 2, 3, 4], [1, 2, 3, 5], prompt_tokens=2) == 3
    assert layout.shared_prefix_length([1, 2, 3], [1, 2, 3, 4], prompt_tokens=2) == 2  # one answer token kept
    assert layout.shared_prefix_length([1, 9, 3], [1, 2, 3], prompt_tokens=2) == 0  # prompts differ


@pytest.mark.parametrize("lengths", [[16, 16, 16], [16, 4, 9, 16, 1]])
def test_segment_attention_equals_one_call_per_segment(lengths: list[int]) -> None:
    torch.manual_seed(0)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    q, k, v = (torch.randn(sum(lengths), 3, 8, dtype=torch.float64) for _ in range(3))
    expected = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), scale=0.5)
        .transpose(0, 1)
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)
    ])  # fmt: skip
    torch.testing.assert_close(segment_attention(q, k, v, cu, 0.5), expected)
