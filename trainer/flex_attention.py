"""Block-sparse attention for the language model (`attention: flex`): torch's `flex_attention` with a block mask.

The shared-prefix layout (`trainer.layout`) needs a mask that plain causal kernels cannot express: rejected tokens
must not see chosen ones. With sdpa that mask is dense, (rows, length, length), and a long row pays for every
masked block. A block mask skips the blocks nobody attends to, so a row costs about what causal attention costs.

- `NAME` is registered with transformers as an attention implementation (and, for rows without a shared prefix,
  with transformers' own flex block mask: causal, padding masked); `Backbone.use_attention("flex")` selects it for
  the language model only (the vision tower keeps its own attention).
- `block_mask` states the layout's rule (`trainer.layout.may_attend`, which the dense mask uses too) as a
  `mask_mod`, for shared-prefix rows and packed ones.
- On CUDA the kernel is compiled (`torch.compile(flex_attention)`, or with the compiled layers), as torch asks
  for speed. On CPU
  `flex_attention` has no backward: with gradients the same `mask_mod` is evaluated densely and sdpa runs (exact,
  slow), so CPU runs and tests compute what the kernel computes; without gradients (scoring, evaluation) the kernel
  runs unfused. On a GPU, heads smaller than 16 (the tiny test model's), which the compiled kernel refuses, run
  densely too.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, create_mask, flex_attention

from trainer import layout

NAME = "rm_flex"


# The compiled kernel needs a head dimension of at least 16; smaller heads (the tiny test model's) run densely there.
MIN_HEAD_DIM = 16


@functools.cache
def _compiled_kernel() -> Any:
    return torch.compile(flex_attention)


@functools.cache
def _compiled_block_mask() -> Any:
    return torch.compile(create_block_mask)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: BlockMask,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: (batch, heads, length, dim) in, (batch, length, heads, dim) out."""
    cpu = query.device.type == "cpu"
    if (cpu and torch.is_grad_enabled()) or (not cpu and query.shape[-1] < MIN_HEAD_DIM):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        dense = _dense_mask(attention_mask.mask_mod, query.shape[0], query.shape[2], key.shape[2], query.device)
        return sdpa_attention_forward(module, query, key, value, dense, dropout=dropout, scaling=scaling,
                                      is_causal=False)  # fmt: skip
    # Inside compiled layers (`compile: true`) the compiler fuses the kernel itself; eager CUDA code calls it compiled.
    eager_cuda = query.device.type == "cuda" and not torch.compiler.is_compiling()
    kernel = _compiled_kernel() if eager_cuda else flex_attention
    out = kernel(query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


@torch.compiler.disable
def _dense_mask(mask_mod: Any, rows: int, queries: int, keys: int, device: torch.device) -> torch.Tensor:
    """The mask evaluated densely, outside any compiled region: inductor's CPU code for its indexed lookups does not
    compile in every torch release (2.11 emits a bounds check before the index it checks)."""
    return create_mask(mask_mod, rows, 1, queries, keys, device)


@functools.cache
def register() -> None:
    """Make `NAME` known to transformers (once per process)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["flex_attention"])


def block_mask(part: torch.Tensor, pair: torch.Tensor | None = None) -> BlockMask:
    """The layout's rule as a block mask over rows of `part` (`trainer.layout.parts`) and, packed, `pair`."""
    pair = torch.zeros_like(part) if pair is None else pair

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return layout.may_attend(q, k, part[b, q], part[b, k], pair[b, q], pair[b, k])

    rows, length = part.shape
    # compiled on CUDA: the dense (rows, length, length) mask is never built
    make = _compiled_block_mask() if part.device.type == "cuda" else create_block_mask
    return make(mask_mod, rows, None, length, length, device=part.device)
