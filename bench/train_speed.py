"""Training-step speed of BaseReward on a random Qwen2.5-VL: the naive pairwise step against the trainer's.

    python -m bench.train_speed --size 3b --pairs 8             # on a GPU: bf16 autocast, fp32 master weights
    python -m bench.train_speed --size 7b --pairs 4 --weights bf16   # 7B on one H200: bf16 weights and AdamW state
    python -m bench.train_speed --size tiny --pairs 4 --steps 1      # anywhere (CPU, fp32): checks the script
    python -m bench.train_speed --size 3b --pairs 8 --answer 3968 \
        --modes fast-vit-kept-compiled fast-vit-kept-flex-compiled   # the long-row case: 8 rows of ~8,300 tokens

Every mode runs one AdamW step over the same pairs, in the same process, with gradient checkpointing:
- `naive` (the baseline): chosen and rejected as two padded forward passes, each encoding the image again,
  transformers' own vision attention (one sdpa call per window), every layer recomputed (vision blocks too),
  torch's default AdamW;
- `padded`: one 2B-row pass, each image encoded once, batched vision attention (`trainer.vision_attention`), the
  decoder layers recomputed, the trainer's AdamW (fused on CUDA);
- `fast`: one `[prompt | chosen | rejected]` row per pair (`trainer.layout`), otherwise as `padded` but with every
  layer recomputed (the least memory); `fast-vit-kept` keeps the vision tower's activations;
  `fast-no-checkpointing` recomputes nothing;
- `fast-compiled`, `fast-vit-kept-compiled` (the step of settings/basereward-7b.yaml: `gradient_checkpointing:
  true`, the rest as the defaults), `fast-compiled-keep12` (12 decoder layers not recomputed),
  `fast-vit-kept-compiled-no-checkpointing` (nothing recomputed, what recomputation costs: the step of the
  defaults): decoder layers and vision MLPs through `torch.compile`;
- `fast-flex`, `fast-vit-kept-flex-compiled`: as `fast` and `fast-vit-kept-compiled`, with the language model's
  attention through flex_attention and a block mask (`attention: flex`, `trainer.flex_attention`) instead of sdpa
  with a dense mask; `packed-flex`, `packed-vit-kept-flex-compiled`: those with the rows packed end to end into
  rows of up to 8,192 tokens (`layout: packed`), no padding.
Before timing, the fast step (sdpa, flex, packed) is compared with the naive one on the same weights (rewards, loss,
gradients), beside the naive step with its pairs in reverse order (the rounding noise); on CUDA in bf16 autocast
and in fp32.

Pairs are synthetic: one image per pair (`--image` px square), a `--prompt`-token question and `--answer`-token
answers (the tiny byte-level tokenizer makes one token per ASCII character). `tokens/s` counts the tokens of both
sequences of every pair (the same work for every mode); `mfu` counts 6 x parameters x tokens actually run through
the language model and the vision tower, against `--peak-tflops` (H100/H200 dense bf16: 989); `mfu_exact` (and
`model_tflop_per_step`) leaves out the embedding's parameters (a lookup) and adds attention, 12 x query width per
(query, key) pair computed per layer: the language model's (`attended_pairs`) and the vision tower's, in its windows
and whole images (`vision_attended_pairs`); recomputation is not counted in either.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from trainer.backbone import Backbone
from trainer.data import PairFeatures, collate, featurize
from trainer.fit import make_optimizer
from trainer.loss import bradley_terry_loss
from trainer.model import HeadConfig, RewardModel
from trainer.tiny import tiny_config, tiny_image_processor, tiny_tokenizer
from trainer.vision_attention import use_batched_vision_attention, vision_attention_modules

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


@dataclass(frozen=True)
class Mode:
    layout: str  # "separate" (two passes), "padded", "shared_prefix" or "packed"
    batched_vision: bool
    checkpoint_vision: bool
    trainer_optimizer: bool  # the trainer's AdamW (fused on CUDA) rather than torch's default form
    checkpoint: bool = True  # decoder layers recomputed in the backward pass
    compiled: bool = False  # decoder layers and vision MLPs through torch.compile
    keep_layers: int = 0  # decoder layers (from the first) not recomputed
    attention: str = "sdpa"  # the language model's: sdpa (a dense shared-prefix mask) or flex (a block mask)


MODES = {
    "naive": Mode("separate", batched_vision=False, checkpoint_vision=True, trainer_optimizer=False),
    "padded": Mode("padded", batched_vision=True, checkpoint_vision=False, trainer_optimizer=True),
    "fast": Mode("shared_prefix", batched_vision=True, checkpoint_vision=True, trainer_optimizer=True),
    "fast-vit-kept": Mode("shared_prefix", batched_vision=True, checkpoint_vision=False, trainer_optimizer=True),
    "fast-no-checkpointing": Mode(
        "shared_prefix", batched_vision=True, checkpoint_vision=False, trainer_optimizer=True, checkpoint=False
    ),
    "fast-compiled": Mode(
        "shared_prefix", batched_vision=True, checkpoint_vision=True, trainer_optimizer=True, compiled=True
    ),
    "fast-vit-kept-compiled": Mode(
        "shared_prefix", batched_vision=True, checkpoint_vision=False, trainer_optimizer=True, compiled=True
    ),
    "fast-vit-kept-compiled-no-checkpointing": Mode(
        "shared_prefix",
        batched_vision=True,
        checkpoint_vision=False,
        trainer_optimizer=True,
        checkpoint=False,
        compiled=True,
    ),
    "fast-flex": Mode(
        "shared_prefix", batched_vision=True, checkpoint_vision=True, trainer_optimizer=True, attention="flex"
    ),
    "fast-vit-kept-flex-compiled": Mode(
        "shared_prefix",
        batched_vision=True,
        checkpoint_vision=False,
        trainer_optimizer=True,
        compiled=True,
        attention="flex",
    ),
    "packed-flex": Mode(
        "packed", batched_vision=True, checkpoint_vision=True, trainer_optimizer=True, attention="flex"
    ),
    "packed-vit-kept-flex-compiled": Mode(
        "packed", batched_vision=True, checkpoint_vision=False, trainer_optimizer=True, compiled=True, attention="flex"
    ),
    "fast-compiled-keep12": Mode(
        "shared_prefix",
        batched_vision=True,
        checkpoint_vision=True,
        trainer_optimizer=True,
        compiled=True,
        keep_layers=12,
    ),
}


def make_model(size: str, image_px: int, device: torch.device, dtype: torch.dtype) -> RewardModel:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer)
    if size != "tiny":  # rebuilt, not updated: the config derives rope parameters and layer types on construction
        derived = ("rope_parameters", "rope_scaling", "layer_types")
        text = {k: v for k, v in config.text_config.to_dict().items() if k not in derived}
        config = Qwen2_5_VLConfig.from_dict({
            **config.to_dict(),
            "text_config": text | SIZES[size]["text"],
            "vision_config": config.vision_config.to_dict() | SIZES[size]["vision"],
        })  # fmt: skip
    config.text_config.max_position_embeddings = 32768
    processor = tiny_image_processor(min_pixels=image_px * image_px, max_pixels=image_px * image_px)
    torch.manual_seed(0)
    with torch.device(device):
        backbone_model = Qwen2_5_VLModel(config).to(dtype)
    model = RewardModel(Backbone(backbone_model, tokenizer, processor), HeadConfig()).to(device)
    model.head.float()
    return model


def answer_lengths(pairs: int, answer: int, spread: float) -> list[int]:
    """Each pair's answer length: `answer` for all, or with `spread` s spaced evenly over answer x [1 - s, 1 + s]
    (the same mean), as a real mixture's answers differ in length."""
    if pairs == 1 or spread == 0:
        return [answer] * pairs
    return [max(1, round(answer * (1 - spread + 2 * spread * i / (pairs - 1)))) for i in range(pairs)]


def synthetic_features(
    model: RewardModel, pairs: int, prompt: int, answer: int, image_px: int, spread: float = 0.0
) -> list[PairFeatures]:
    rows = []
    for i, length in enumerate(answer_lengths(pairs, answer, spread)):
        buffer = io.BytesIO()
        Image.effect_noise((image_px, image_px), 64 + i).convert("RGB").save(buffer, format="PNG")
        row = {"pair_id": str(i), "modality": "image", "images": ["x"], "margin": None,
               "prompt": [{"role": "user", "content": "<image>" + "q" * prompt}],
               "chosen": "c" * length, "rejected": "r" * length}  # fmt: skip
        feature = featurize(model.backbone, row, [buffer.getvalue()], 1 << 15)
        assert isinstance(feature, PairFeatures)
        rows.append(feature)
    return rows


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def attended_pairs(features: list[PairFeatures], separate: bool) -> int:
    """(query, key) pairs the language model's attention computes for one step, causal and per the layout: two
    sequences per pair (`separate`: the naive and padded steps), or one row whose rejected tokens skip the chosen
    ones with the shared prefix once (the shared-prefix and packed rows). Padding is not counted."""

    def causal(n: int) -> int:
        return n * (n + 1) // 2

    total = 0
    for f in features:
        if separate:
            total += causal(len(f.chosen)) + causal(len(f.rejected))
        else:
            p, c, r = f.prefix, len(f.chosen) - f.prefix, len(f.rejected) - f.prefix
            total += causal(p) + c * p + causal(c) + r * p + causal(r)
    return total


def vision_attended_pairs(model: RewardModel, features: list[PairFeatures]) -> int:
    """(query, key) pairs the vision tower's attention computes when it encodes the step's images once, summed over
    its layers: each layer attends within the segments its `cu_seqlens` gives (windows, or whole images in the
    full-attention layers), read off one forward pass rather than derived from the config."""
    images = [f for f in features if f.pixel_values is not None]
    if not images:
        return 0
    visual = model.backbone.model.visual
    total = 0

    def count_segments(_module: torch.nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        nonlocal total
        total += int((kwargs["cu_seqlens"].diff().long() ** 2).sum())

    hooks = [m.register_forward_pre_hook(count_segments, with_kwargs=True) for m in vision_attention_modules(visual)]
    try:
        device, dtype = visual.patch_embed.proj.weight.device, visual.patch_embed.proj.weight.dtype
        with torch.no_grad():
            visual(torch.cat([f.pixel_values for f in images]).to(device, dtype),
                   grid_thw=torch.cat([f.image_grid_thw for f in images]).to(device))  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    return total


def configure(model: RewardModel, mode: Mode) -> None:
    model.backbone.use_attention(mode.attention)
    use_batched_vision_attention(model.backbone.model.visual, mode.batched_vision)
    model.backbone.compile_layers(mode.compiled)
    if mode.checkpoint:
        model.backbone.enable_checkpointing(mode.checkpoint_vision, mode.keep_layers)
    else:
        model.backbone.disable_checkpointing()


def rewards(model: RewardModel, features: list[PairFeatures], mode: Mode, device: torch.device) -> tuple[Any, int]:
    """(chosen, rejected) rewards and the language-model tokens run."""
    pad = model.backbone.pad_token_id
    if mode.layout != "separate":
        batch = collate(features, pad, layout=mode.layout).to(device)
        out = model(**batch.model_inputs())
        return (out[: batch.pairs], out[batch.pairs :]), batch.tokens
    sides, tokens = [], 0
    for side in ("chosen", "rejected"):  # each side its own padded batch, its images encoded in its own pass
        halves = [PairFeatures(f.pair_id, getattr(f, side), getattr(f, side), f.pixel_values, f.image_grid_thw, None)
                  for f in features]  # fmt: skip
        batch = collate(halves, pad).to(device)
        n = batch.pairs  # rows 0..n-1 only
        inputs = batch.model_inputs() | {
            "input_ids": batch.input_ids[:n],
            "attention_mask": batch.attention_mask[:n],
            "image_index": batch.image_index[: len(batch.image_index) // 2],
        }
        sides.append(model(**inputs))
        tokens += int(batch.attention_mask[:n].sum())
    return (sides[0], sides[1]), tokens


def step(model: RewardModel, optimizer: Any, features: list[PairFeatures], mode: Mode, device: torch.device,
         autocast: Any) -> int:  # fmt: skip
    """One optimizer step; returns the language-model tokens run."""
    with autocast():
        (chosen, rejected), tokens = rewards(model, features, mode, device)
    bradley_terry_loss(chosen, rejected).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return tokens


def compare(
    model: RewardModel, features: list[PairFeatures], device: torch.device, autocast: Any, compute: str
) -> dict[str, Any]:
    """The fast steps (sdpa, flex attention, packed) against the naive one on the same weights (rewards, loss,
    gradients), beside the naive step against itself with the pairs in reverse order: the same arithmetic batched
    differently, so its difference is the rounding noise of the dtype and kernels (zero in exact arithmetic)."""
    out: dict[str, Any] = {"check": "same weights; fast, fast-flex, packed-flex and reordered naive against naive",
                           "compute": compute}  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    kept: list[torch.Tensor | None] = []
    runs = [("naive", features, False), ("fast", features, False), ("fast-flex", features, False),
            ("packed-flex", features, False), ("naive_reordered", features[::-1], True)]  # fmt: skip
    for label, pairs, reverse in runs:
        mode, key = MODES[label.removesuffix("_reordered")], label.replace("-", "_")
        configure(model, mode)
        with autocast():
            (chosen, rejected), _ = rewards(model, pairs, mode, device)
        if reverse:
            chosen, rejected = chosen.flip(0), rejected.flip(0)
        loss = bradley_terry_loss(chosen, rejected)
        loss.backward()
        out[f"loss_{key}"] = round(float(loss.detach()), 6)
        both = torch.cat([chosen, rejected]).detach().float()
        if label == "naive":
            reference = both
            out["reward_scale"] = float(reference.abs().max())
            kept = [p.grad for p in params]  # the naive gradients, kept aside (one extra copy)
        else:
            out[f"{key}_reward_max_abs_diff"] = float((both - reference).abs().max())
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # |g0|^2, |g1|^2, g0.g1
            for g0, p in zip(kept, params, strict=True):
                if g0 is not None and p.grad is not None:
                    a, b = g0.double(), p.grad.double()
                    sums += torch.stack([a.square().sum(), b.square().sum(), (a * b).sum()])
            n0, n1, dot = sums.tolist()
            out[f"{key}_grad_rel_diff"] = max(n0 + n1 - 2 * dot, 0.0) ** 0.5 / max(n0**0.5, 1e-30)
        model.zero_grad(set_to_none=True)
    return out


def profile(run: Any, name: str, cuda: bool) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profiler(activities=activities) as prof:
        run()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    # to stderr: stdout holds one JSON record per line
    print(f"profile of one {name} step", file=sys.stderr, flush=True)
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", *SIZES], default="tiny")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--image", type=int, default=448)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--answer", type=int, default=256)
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="answer lengths spaced over answer x [1 - s, 1 + s] (same mean); 0: every answer --answer tokens",
    )
    parser.add_argument(
        "--weights",
        choices=["fp32", "bf16"],
        default="fp32",
        help="fp32 master weights (the trainer's way) or bf16 weights and optimizer state",
    )
    parser.add_argument("--freeze-vision", action="store_true")
    parser.add_argument("--modes", nargs="+", choices=list(MODES),
                        default=[m for m in MODES if "no-checkpointing" not in m])  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument(
        "--profile",
        nargs="*",
        default=[],
        choices=list(MODES),
        help="print the top operators of one more step of these modes (torch.profiler)",
    )
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if args.weights == "bf16" else torch.float32
    model = make_model(args.size, args.image, device, dtype)
    if args.freeze_vision:
        model.backbone.model.visual.requires_grad_(False)
    model.train()
    features = synthetic_features(model, args.pairs, args.prompt, args.answer, args.image, args.spread)
    patches = sum(int(f.image_grid_thw.prod()) for f in features)
    sequence_tokens = sum(len(f.chosen) + len(f.rejected) for f in features)
    rows = collate(features, model.backbone.pad_token_id, layout="shared_prefix")
    row_tokens, row_padding = rows.input_ids.shape[1], round(1 - rows.tokens / rows.input_ids.numel(), 4)
    language, vision = count(model.backbone.model.language_model), count(model.backbone.model.visual)
    embedding = model.backbone.model.language_model.embed_tokens.weight.numel()  # a lookup: no FLOPs
    text = model.backbone.model.config.text_config
    query_width = text.num_attention_heads * getattr(text, "head_dim", text.hidden_size // text.num_attention_heads)
    vision_width = model.backbone.model.config.vision_config.hidden_size  # heads x head dim
    vit_attended = vision_attended_pairs(model, features)

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    machine = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(json.dumps({"machine": machine, "torch": torch.__version__, "size": args.size, "weights": args.weights,
                      "language_params": language, "vision_params": vision, "pairs_per_step": args.pairs,
                      "image_px": args.image, "patches_per_step": patches, "sequence_tokens_per_step": sequence_tokens,
                      "shared_prefix_row_tokens": row_tokens, "shared_prefix_padding": row_padding,
                      "answer_spread": args.spread,
                      "freeze_vision": args.freeze_vision}), flush=True)  # fmt: skip
    print(json.dumps(compare(model, features, device, autocast, "bf16 autocast" if cuda else "fp32")), flush=True)
    if cuda and args.weights == "fp32":  # the same check in fp32 (no TF32): what remains is summation order
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        fp32 = compare(model, features, device, lambda: torch.autocast("cuda", enabled=False), "fp32, no TF32")
        print(json.dumps(fp32), flush=True)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    params = [p for p in model.parameters() if p.requires_grad]
    naive_seconds = None
    for name in args.modes:
        mode = MODES[name]
        configure(model, mode)
        # a fresh optimizer per mode (its state allocated in the warm-up step), so peaks compare like for like
        if mode.trainer_optimizer:
            optimizer = make_optimizer(params, 1e-6, 0.0, device, sharded=False)
        else:
            optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)
        run = lambda o=optimizer, m=mode: step(model, o, features, m, device, autocast)  # noqa: E731
        try:
            seconds, tokens = timed(run, args.steps, cuda)
        except torch.OutOfMemoryError:  # e.g. no checkpointing on an 80 GB card: report it, go on
            print(json.dumps({"mode": name, "error": "out of memory"}), flush=True)
            seconds = None
        if seconds is not None:
            naive_seconds = seconds if name == "naive" else naive_seconds
            vit_patches = patches * (2 if mode.layout == "separate" else 1)
            flops = 6 * (language * tokens + vision * vit_patches)
            # exact: the embedding does no matmul; attention scores and values (2 matmuls, fwd + bwd) over the
            # (query, key) pairs computed, per layer of the language model and of the vision tower
            attended = attended_pairs(features, mode.layout in ("separate", "padded"))
            exact = 6 * ((language - embedding) * tokens + vision * vit_patches)
            exact += 12 * text.num_hidden_layers * query_width * attended
            exact += 12 * vision_width * vit_attended * (2 if mode.layout == "separate" else 1)
            print(json.dumps({
                "mode": name, "seconds_per_step": round(seconds, 4), "pairs/s": round(args.pairs / seconds, 3),
                "tokens/s": round(sequence_tokens / seconds, 1), "llm_tokens_run": tokens,
                "mfu": round(flops / seconds / (args.peak_tflops * 1e12), 4) if cuda else None,
                "mfu_exact": round(exact / seconds / (args.peak_tflops * 1e12), 4) if cuda else None,
                "model_tflop_per_step": round(exact / 1e12, 3),
                "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                "speedup_vs_naive": round(naive_seconds / seconds, 2) if naive_seconds else None,
            }), flush=True)  # fmt: skip
            if name in args.profile:
                profile(run, name, cuda)
        del optimizer, run
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.empty_cache()


def timed(run: Any, steps: int, cuda: bool) -> tuple[float, int]:
    """Mean seconds per step over `steps` after one warm-up step (which also allocates the optimizer state), and
    the language-model tokens of a step; the peak-memory counter covers the timed steps."""
    run()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    tokens = sum(run() for _ in range(steps))
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, tokens // steps


if __name__ == "__main__":
    main()
