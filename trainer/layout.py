"""The shared-prefix layout: one row `[prefix | chosen | rejected]` per pair instead of two sequences.

A pair's chosen and rejected sequences usually begin with the same tokens: the chat-templated prompt with its
image tokens, often the first words of the answers too. Laid out once, that prefix (and its image) goes through
the decoder once. It stays exact because of three rules, applied here:
- attention is causal, and rejected tokens do not see chosen ones, so each answer sees what it saw alone;
- rejected tokens take the positions they have in their own sequence (restarting after the prefix), M-RoPE
  included: the positions of the two sequences are computed as usual and gathered into the row;
- the chosen reward is read at the last chosen token, the rejected reward at the last rejected one.

`segments` is a (pairs, 3) tensor of (prefix, chosen suffix, rejected suffix) lengths; rows are right-padded.
"""

from __future__ import annotations

import torch

PREFIX, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


def shared_prefix_length(chosen: list[int], rejected: list[int], prompt_tokens: int) -> int:
    """Tokens the two sequences share from the start, keeping at least one token of each answer. 0 unless the
    whole prompt is shared (its images are then in the prefix, encoded and placed once)."""
    limit = min(len(chosen), len(rejected)) - 1
    shared = 0
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    return shared if shared >= prompt_tokens else 0


def parts(segments: torch.Tensor, length: int) -> torch.Tensor:
    """(pairs, length): which part each position of a row belongs to."""
    position = torch.arange(length, device=segments.device)
    prefix, chosen, rejected = (segments[:, i : i + 1] for i in range(3))
    out = torch.full((len(segments), length), PAD, dtype=torch.long, device=segments.device)
    out[position < prefix + chosen + rejected] = REJECTED
    out[position < prefix + chosen] = CHOSEN
    out[position < prefix] = PREFIX
    return out


def attention_mask(segments: torch.Tensor, length: int) -> torch.Tensor:
    """(pairs, 1, length, length) bool, True where a query may attend: causal, real keys, rejected not seeing
    chosen. Every position sees itself, so padding rows never softmax over nothing (NaN)."""
    part = parts(segments, length)
    position = torch.arange(length, device=segments.device)
    causal = position[None, :, None] >= position[None, None, :]
    query, key = part[:, :, None], part[:, None, :]
    allowed = causal & (key != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)
    return allowed[:, None]


def sequences(input_ids: torch.Tensor, segments: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen and rejected sequences (2 x pairs rows, chosen first, right-padded) and their 0/1 mask."""
    pairs, length = input_ids.shape
    prefix, chosen, rejected = (segments[:, i : i + 1] for i in range(3))
    width = int((prefix + torch.maximum(chosen, rejected)).max())
    position = torch.arange(width, device=input_ids.device).expand(pairs, -1)
    source = torch.cat([position, torch.where(position < prefix, position, position + chosen)])
    valid = torch.cat([position < prefix + chosen, position < prefix + rejected])
    rows = torch.arange(pairs, device=input_ids.device).repeat(2)[:, None]
    ids = input_ids[rows, source.clamp(max=length - 1)]
    return torch.where(valid, ids, pad_id), valid.long()


def row_positions(sequence_positions: torch.Tensor, segments: torch.Tensor, length: int) -> torch.Tensor:
    """(..., 2 x pairs, width) positions of the sequences -> (..., pairs, length) positions of the rows."""
    pairs = len(segments)
    position = torch.arange(length, device=segments.device).expand(pairs, -1)
    part = parts(segments, length)
    from_rejected = part == REJECTED
    column = torch.where(from_rejected, position - segments[:, 1:2], position)
    column = torch.where(part == PAD, 0, column)
    row = torch.arange(pairs, device=segments.device)[:, None] + pairs * from_rejected.long()
    return sequence_positions[..., row, column]


def readout(hidden: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """(2 x pairs, hidden): the last chosen token of each row, then the last rejected token."""
    prefix, chosen, rejected = segments.unbind(-1)
    rows = torch.arange(len(segments), device=hidden.device)
    last_chosen = prefix + chosen - 1
    last_rejected = prefix + chosen + rejected - 1
    return torch.cat([hidden[rows, last_chosen], hidden[rows, last_rejected]])
