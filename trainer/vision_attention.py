"""Batched attention for the Qwen2-VL / Qwen2.5-VL vision tower.

Without flash-attn, transformers runs the tower's attention as a Python loop: one sdpa call per window in the
windowed layers and per image in the full-attention ones (a 448x448 image has 16 windows, so a step of 16 images
makes 256 tiny calls per layer). That loop, not the arithmetic, dominated the measured step (docs/training.md).
`use_batched_vision_attention` swaps each attention module's forward for one that computes the same thing with one
kernel per layer: torch's varlen flash kernel on CUDA in bf16/fp16, elsewhere one sdpa call per distinct segment
length (windows mostly share one length, so that is one or a few calls).
"""

from __future__ import annotations

import itertools
import sys
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _varlen_kernel() -> Any | None:
    try:  # torch >= 2.10; CUDA only
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def segment_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor, scale: float
) -> torch.Tensor:
    """Full (non-causal) attention within each segment `cu_seqlens[i]:cu_seqlens[i+1]` of (tokens, heads, dim)
    tensors; returns (tokens, heads, dim)."""
    starts, lengths = _segments(cu_seqlens)
    kernel = _varlen_kernel()
    if kernel is not None and query.is_cuda and query.dtype in (torch.bfloat16, torch.float16):
        cu = cu_seqlens.to(device=query.device, dtype=torch.int32)
        longest = max(lengths)
        query, key, value = (t.contiguous() for t in (query, key, value))
        return kernel(query, key, value, cu, cu, longest, longest, scale=scale)
    heads, dim = query.shape[1:]
    if len(set(lengths)) == 1:  # one length: a plain reshape, no gather
        n, length = len(lengths), lengths[0]
        q, k, v = (t.view(n, length, heads, dim).transpose(1, 2) for t in (query, key, value))
        return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(query.shape)
    by_length: dict[int, list[int]] = {}
    for start, length in zip(starts, lengths, strict=True):
        by_length.setdefault(length, []).append(start)
    outputs, order = [], []
    for length, group in by_length.items():
        index = torch.tensor(group, device=query.device)[:, None] + torch.arange(length, device=query.device)
        index = index.reshape(-1)
        q, k, v = (t[index].view(len(group), length, heads, dim).transpose(1, 2) for t in (query, key, value))
        outputs.append(F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(-1, heads, dim))
        order.append(index)
    inverse = torch.empty(query.shape[0], dtype=torch.long, device=query.device)
    position = torch.cat(order)
    inverse[position] = torch.arange(len(position), device=query.device)
    return torch.cat(outputs)[inverse]


def _segments(cu_seqlens: torch.Tensor) -> tuple[list[int], list[int]]:
    """Segment starts and lengths, read once per tensor: the tower passes the same `cu_seqlens` object to each of
    its layers (and to their recomputation), so only the first layer waits for the device. The cache is tied to
    the tensor's version counter, so a tensor changed in place is read again."""
    cached = getattr(cu_seqlens, "_segments", None)
    if cached is None or cached[0] != cu_seqlens._version:
        bounds = cu_seqlens.tolist()
        cached = (cu_seqlens._version, bounds[:-1], [b - a for a, b in itertools.pairwise(bounds)])
        cu_seqlens._segments = cached  # type: ignore[attr-defined]
    return cached[1], cached[2]


def _batched_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    **kwargs: Any,
) -> torch.Tensor:
    """The vision attention's own forward (qkv, rotary, attention, proj), its per-segment loop made one call."""
    rotary = sys.modules[type(self).__module__].apply_rotary_pos_emb_vision
    seq_length = hidden_states.shape[0]
    query, key, value = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    query, key = rotary(query, key, cos, sin)
    out = segment_attention(query, key, value, cu_seqlens, self.scaling)
    return self.proj(out.reshape(seq_length, -1))


def vision_attention_modules(visual: nn.Module) -> list[nn.Module]:
    return [m for m in visual.modules() if type(m).__name__.endswith("VisionAttention") and hasattr(m, "qkv")]


def use_batched_vision_attention(visual: nn.Module, enabled: bool = True) -> None:
    """Switch the tower's attention modules to the batched forward (or back to transformers' own)."""
    for module in vision_attention_modules(visual):
        if enabled:
            module.forward = MethodType(_batched_forward, module)
        elif "forward" in module.__dict__:
            del module.forward
