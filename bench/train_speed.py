"""Training-step speed of BaseReward on a random Qwen2.5-VL: pairs/s, tokens/s, MFU and peak memory.

    python -m bench.train_speed --size 3b --pairs 8 --steps 5          # on a GPU (bf16)
    python -m bench.train_speed --size tiny --pairs 4 --steps 3        # anywhere (CPU, fp32): checks the script

Two ways of running one optimizer step on the same pairs, side by side:
- `shared`: the trainer's step: chosen and rejected as one 2B-row batch, each image encoded once (with
  `--checkpointing`, only the decoder layers are recomputed);
- `naive` (baseline): chosen and rejected as two forward passes, each encoding the image again (with
  `--checkpointing`, every layer, vision blocks included, is recomputed).
Pairs are synthetic: one image per pair (`--image` px square), a `--prompt`-token question and `--answer`-token
answers (the tiny byte-level tokenizer makes one token per ASCII character). MFU counts 6 x parameters x tokens
for the language model and the vision tower, against `--peak-tflops` (H100/H200 dense bf16: 989).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

import torch
from PIL import Image

from trainer.backbone import Backbone
from trainer.data import collate, featurize
from trainer.loss import bradley_terry_loss
from trainer.model import HeadConfig, RewardModel
from trainer.tiny import tiny_config, tiny_image_processor, tiny_tokenizer

# Qwen2.5-VL-3B / 7B shapes (config.json of the released checkpoints); both share the vision tower.
VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
          "fullatt_block_indexes": [7, 15, 23, 31]}  # fmt: skip
MROPE = {"type": "mrope", "mrope_section": [16, 24, 24]}
SIZES: dict[str, dict[str, Any]] = {
    "3b": {"text": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "rope_scaling": MROPE},
           "vision": {**VISION, "out_hidden_size": 2048}},
    "7b": {"text": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "rope_scaling": MROPE},
           "vision": {**VISION, "out_hidden_size": 3584}},
}  # fmt: skip


def make_model(size: str, image_px: int, device: torch.device, dtype: torch.dtype) -> RewardModel:
    from transformers import Qwen2_5_VLModel

    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer)
    if size != "tiny":
        config.text_config.update(SIZES[size]["text"])
        config.vision_config.update(SIZES[size]["vision"])
    config.text_config.max_position_embeddings = 32768
    processor = tiny_image_processor(min_pixels=image_px * image_px, max_pixels=image_px * image_px)
    with torch.device(device):
        backbone_model = Qwen2_5_VLModel(config).to(dtype)
    backbone_model.config._attn_implementation = "sdpa"
    model = RewardModel(Backbone(backbone_model, tokenizer, processor), HeadConfig()).to(device)
    model.head.float()
    return model


def synthetic_features(model: RewardModel, pairs: int, prompt: int, answer: int, image_px: int) -> list[Any]:
    rows = []
    for i in range(pairs):
        buffer = io.BytesIO()
        Image.effect_noise((image_px, image_px), 64 + i).convert("RGB").save(buffer, format="PNG")
        row = {"pair_id": str(i), "modality": "image", "images": ["x"], "margin": None,
               "prompt": [{"role": "user", "content": "<image>" + "q" * prompt}],
               "chosen": "c" * answer, "rejected": "r" * answer}  # fmt: skip
        rows.append(featurize(model.backbone, row, [buffer.getvalue()], 1 << 15))
    return rows


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def step(model: RewardModel, optimizer: torch.optim.Optimizer, features: list[Any], mode: str, device: torch.device,
         autocast: Any) -> int:  # fmt: skip
    """One optimizer step; returns the language-model tokens processed."""
    pad = model.backbone.pad_token_id
    with autocast():
        if mode == "shared":
            batch = collate(features, pad).to(device)
            rewards = model(**batch.model_inputs())
            chosen, rejected, tokens = rewards[: batch.pairs], rewards[batch.pairs :], batch.tokens
        else:
            side_rewards, tokens = [], 0
            for side in ("chosen", "rejected"):
                halves = [type(f)(f.pair_id, getattr(f, side), getattr(f, side), f.pixel_values, f.image_grid_thw, None)
                          for f in features]  # fmt: skip
                batch = collate(halves, pad).to(device)
                n = batch.pairs  # rows 0..n-1 only: a one-sided batch, its images encoded in this pass
                inputs = batch.model_inputs() | {
                    "input_ids": batch.input_ids[:n],
                    "attention_mask": batch.attention_mask[:n],
                    "image_index": batch.image_index[: len(batch.image_index) // 2],
                }
                side_rewards.append(model(**inputs))
                tokens += int(batch.attention_mask[:n].sum())
            chosen, rejected = side_rewards
    bradley_terry_loss(chosen, rejected).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", *SIZES], default="tiny")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--image", type=int, default=448)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--answer", type=int, default=256)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--freeze-vision", action="store_true")
    parser.add_argument("--modes", nargs="+", default=["shared", "naive"])
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float32  # fp32 master weights; bf16 autocast on GPU, as the trainer does
    model = make_model(args.size, args.image, device, dtype)
    if args.freeze_vision:
        model.backbone.model.visual.requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    features = synthetic_features(model, args.pairs, args.prompt, args.answer, args.image)
    patches = sum(int(f.image_grid_thw.prod()) for f in features)
    language, vision = count(model.backbone.model.language_model), count(model.backbone.model.visual)

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    machine = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(json.dumps({"machine": machine, "size": args.size, "language_params": language, "vision_params": vision,
                      "pairs_per_step": args.pairs, "image_px": args.image, "patches_per_step": patches}))  # fmt: skip
    for mode in args.modes:
        if args.checkpointing:  # the naive step recomputes everything; the trainer's step leaves the ViT alone
            model.backbone.enable_checkpointing(vision=mode == "naive")
        step(model, optimizer, features, mode, device, autocast)  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        tokens = 0
        for _ in range(args.steps):
            tokens += step(model, optimizer, features, mode, device, autocast)
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.steps
        tokens //= args.steps
        vit_patches = patches * (1 if mode == "shared" else 2)
        flops = 6 * (language * tokens + vision * vit_patches)
        mfu = flops / seconds / (args.peak_tflops * 1e12) if cuda else None
        memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        print(json.dumps({
            "mode": mode, "seconds_per_step": round(seconds, 4), "pairs/s": round(args.pairs / seconds, 3),
            "tokens/s": round(tokens / seconds, 1), "mfu": mfu and round(mfu, 4),
            "peak_memory_gib": memory and round(memory, 2),
            "checkpointing": args.checkpointing, "freeze_vision": args.freeze_vision,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
