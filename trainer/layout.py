"""The shared-prefix layout: one row `[prefix | chosen | rejected]` per pair instead of two sequences.

A pair's chosen and rejected sequences usually begin with the same tokens: the chat-templated prompt with its
image tokens, often the first words of the answers too. Laid out once, that prefix (and its image) goes through
the decoder once. It stays exact because of three rules, applied here:
- attention is causal, and rejected tokens do not see chosen ones, so each answer sees what it saw alone;
- rejected tokens take the positions they have in their own sequence (restarting after the prefix), M-RoPE
  included: the positions of the two sequences are computed as usual and gathered into the row;
- the chosen reward is read at the last chosen token, the rejected reward at the last rejected one.

`segments` is a (pairs, 3) tensor of (prefix, chosen suffix, rejected suffix) lengths; rows are right-padded.

Packed (`layout: packed`): several pairs' rows laid end to end in one row of the decoder, no padding between them
(`pack`, `packed_index`); a token then also sees only tokens of its own pair. The unpacked rows stay the batch's
form (images, positions and read-out work on them); the decoder's input is gathered from them and its output
gathered back, so packing moves tokens and changes nothing else.
"""

from __future__ import annotations

from typing import NamedTuple

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


def may_attend(
    q: torch.Tensor, k: torch.Tensor, part_q: torch.Tensor, part_k: torch.Tensor, pair_q: torch.Tensor,
    pair_k: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """The layout's rule, elementwise: causal, real keys of the query's own pair, rejected not seeing chosen. Every
    position sees itself, so padding never softmaxes over nothing (NaN). Used densely and as flex's `mask_mod`."""
    hidden = (part_k == PAD) | (pair_q != pair_k) | ((part_q == REJECTED) & (part_k == CHOSEN))
    return ((q >= k) & ~hidden) | (q == k)


def attention_mask(part: torch.Tensor, pair: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, 1, length, length) bool from each position's part (`parts`) and, for packed rows, its pair."""
    pair = torch.zeros_like(part) if pair is None else pair
    position = torch.arange(part.shape[1], device=part.device)
    allowed = may_attend(position[None, :, None], position[None, None, :], part[:, :, None], part[:, None, :],
                         pair[:, :, None], pair[:, None, :])  # fmt: skip
    return allowed[:, None]


def pack(segments: torch.Tensor, capacity: int) -> torch.Tensor:
    """(pairs, 2): the packed row and offset of each pair's `[prefix | chosen | rejected]`, filled in order (next
    fit, so rows keep the pairs' order and their images' order): a row takes pairs while they fit in `capacity`
    tokens; a longer pair has a row of its own."""
    out, row, used = [], 0, 0
    for n in segments.sum(-1).tolist():
        if used and used + n > capacity:
            row, used = row + 1, 0
        out.append((row, used))
        used += n
    return torch.tensor(out, dtype=torch.long, device=segments.device)


class Packed(NamedTuple):
    """Where packed rows (rows, width) take their tokens from, computed with the data (on the host)."""

    gather: torch.Tensor  # (rows, width): flat index (pair x length + position) of the unpacked token; 0 on padding
    pair: torch.Tensor  # (rows, width): each position's pair, -1 on padding
    part: torch.Tensor  # (rows, width): each position's part (PREFIX, CHOSEN, REJECTED, PAD)
    inverse: torch.Tensor  # (pairs, length): flat packed index of each unpacked position, 0 on padding

    def to(self, device: torch.device) -> Packed:
        return Packed(*(t.to(device) for t in self))


def packed_index(segments: torch.Tensor, packing: torch.Tensor, length: int) -> Packed:
    """The index of rows packed as `packing` (`pack`) from the unpacked `[prefix | chosen | rejected]` rows."""
    device = segments.device
    sizes = segments.sum(-1)
    row, offset = packing.unbind(-1)
    width = int((offset + sizes).max())
    rows = int(row.max()) + 1
    pair = torch.repeat_interleave(torch.arange(len(segments), device=device), sizes)
    within = torch.arange(len(pair), device=device) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
    packed_flat = row[pair] * width + offset[pair] + within
    unpacked_flat = pair * length + within
    gather = torch.zeros(rows * width, dtype=torch.long, device=device)
    gather[packed_flat] = unpacked_flat
    pair_of = torch.full((rows * width,), -1, dtype=torch.long, device=device)
    pair_of[packed_flat] = pair
    part_of = torch.full((rows * width,), PAD, dtype=torch.long, device=device)
    part_of[packed_flat] = parts(segments, length).flatten()[unpacked_flat]
    inverse = torch.zeros(len(segments) * length, dtype=torch.long, device=device)
    inverse[unpacked_flat] = packed_flat
    shape = (rows, width)
    return Packed(gather.view(shape), pair_of.view(shape), part_of.view(shape), inverse.view(len(segments), length))


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


def readout(hidden: torch.Tensor, segments: torch.Tensor, inverse: torch.Tensor | None = None) -> torch.Tensor:
    """(2 x pairs, hidden): the last chosen token of each row, then the last rejected token. `inverse`
    (`Packed.inverse`): `hidden` holds the packed rows, read where those tokens went."""
    prefix, chosen, rejected = segments.unbind(-1)
    rows = torch.arange(len(segments), device=hidden.device).repeat(2)
    last = torch.cat([prefix + chosen - 1, prefix + chosen + rejected - 1])
    if inverse is None:
        return hidden[rows, last]
    return hidden.flatten(0, 1)[inverse[rows, last]]
