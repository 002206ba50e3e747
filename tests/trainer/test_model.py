from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import pair_images, pair_row
from trainer.backbone import load_backbone
from trainer.data import collate, featurize
from trainer.model import HeadConfig, RewardHead, RewardModel, pool


def tiny_model() -> RewardModel:
    model = RewardModel(load_backbone("tiny"), HeadConfig(), source="tiny")
    model.eval()
    return model


def test_head_shapes_follow_the_config() -> None:
    assert [type(m).__name__ for m in RewardHead(8, HeadConfig()).mlp] == ["Linear", "SiLU", "Linear"]
    assert [type(m).__name__ for m in RewardHead(8, HeadConfig(layers=1)).mlp] == ["Linear"]
    deep = RewardHead(8, HeadConfig(layers=3, width=5, activation="tanh")).mlp
    assert [tuple(m.weight.shape) for m in deep if isinstance(m, torch.nn.Linear)] == [(5, 8), (5, 5), (1, 5)]
    with pytest.raises(ValueError, match="activation"):
        HeadConfig(activation="sigmoid")


def test_pool_reads_the_last_real_token_for_both_padding_sides() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, left, "first").flatten().tolist() == [2.0, 4.0]
    assert pool(hidden, right, "mean").flatten().tolist() == [0.5, 5.5]


@pytest.mark.parametrize("images", [0, 1])
def test_rewards_do_not_depend_on_padding_side(images: int) -> None:
    model = tiny_model()
    rows = [pair_row("Describe it.", "A long and careful answer here.", "No.", images=images),
            pair_row("Hi", "Hello there!", "Go away, I am busy right now.", images=images)]  # fmt: skip
    features = [featurize(model.backbone, r, pair_images(images, seed=i), 512) for i, r in enumerate(rows)]
    with torch.no_grad():
        right = model(**collate(features, model.backbone.pad_token_id, "right").model_inputs())
        left = model(**collate(features, model.backbone.pad_token_id, "left").model_inputs())
    assert torch.allclose(right, left, atol=1e-5)
    assert right[0] != right[2]  # chosen and rejected differ


def test_save_and_load_give_identical_rewards(tmp_path: Path) -> None:
    model = tiny_model()
    torch.nn.init.normal_(model.head.mlp[0].weight)  # not the initial state
    features = [featurize(model.backbone, pair_row("Q?", "yes", "no", images=1), pair_images(1), 512)]
    batch = collate(features, model.backbone.pad_token_id)
    model.save(tmp_path / "saved")
    loaded = RewardModel.load(tmp_path / "saved")
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch.model_inputs()), loaded(**batch.model_inputs()))
    assert loaded.head_config == model.head_config
    assert loaded.backbone.kind == "vision_language"


def test_load_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="reward_model.json"):
        RewardModel.load(tmp_path)


def test_checkpointing_the_decoder_only_changes_nothing_computed() -> None:
    rows = [pair_row("Describe it.", "A square of noise.", "A cat.", images=1), pair_row("Hi", "Hello!", "No.")]

    def rewards_and_grads(checkpoint: str | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = tiny_model()
        model.train()
        if checkpoint is not None:
            model.backbone.enable_checkpointing(vision=checkpoint == "all", keep_layers=int(checkpoint == "keep1"))
        features = [featurize(model.backbone, r, pair_images(len(r["images"])), 512) for r in rows]
        rewards = model(**collate(features, model.backbone.pad_token_id).model_inputs())
        rewards.sum().backward()
        return rewards.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, plain_grads = rewards_and_grads(None)
    for mode in ("decoder", "all", "keep1"):
        rewards, grads = rewards_and_grads(mode)
        assert torch.allclose(plain, rewards, atol=1e-6)
        assert all(torch.allclose(plain_grads[n], g, atol=1e-6) for n, g in grads.items())
    model = tiny_model()
    model.backbone.enable_checkpointing(vision=False)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.backbone.model.visual.modules())
    assert all(layer.gradient_checkpointing for layer in model.backbone.model.language_model.layers)
    model.backbone.enable_checkpointing(vision=False, keep_layers=1)
    assert [layer.gradient_checkpointing for layer in model.backbone.model.language_model.layers] == [False, True]
