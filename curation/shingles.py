"""Word n-gram shingles, MinHash signatures and LSH banding, vectorized with numpy.

Preference prompts are short, so shingles are word n-grams of a lower-cased `\\w+` tokenization (a prompt
shorter than n words is one shingle). Word hashes come from Polars' seeded hash, never from Python's salted
`hash()`, so signatures are the same in every process (for one Polars version; signals are per build).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

_WORD = re.compile(r"\w+")
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
                dtype=np.uint64)  # fmt: skip


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Shingles:
    """Shingle hashes of many texts, concatenated: text i owns hashes[offsets[i]:offsets[i + 1]] (unique)."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = texts + 1

    def of(self, i: int) -> np.ndarray:
        return self.hashes[self.offsets[i] : self.offsets[i + 1]]


def shingle(texts: Sequence[str], n: int, chunk: int = 100_000) -> Shingles:
    """Unique word n-gram hashes per text (computed `chunk` texts at a time, so memory stays bounded)."""
    if n > len(_MIX):
        raise ValueError(f"n-grams up to {len(_MIX)} words are supported")
    parts, sizes = [], []
    for start in range(0, len(texts), chunk):
        hashes, counts = _shingle_chunk(texts[start : start + chunk], n)
        parts.append(hashes)
        sizes.append(counts)
    counts = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    return Shingles(hashes, offsets)


def _shingle_chunk(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    # Tokenize and hash words in Polars (vectorized), then combine n consecutive word hashes in numpy.
    tokens = pl.Series(list(texts), dtype=pl.String).str.to_lowercase().str.extract_all(r"\w+")
    lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    word_hashes = tokens.explode().drop_nulls().hash(seed=0x5EED).to_numpy().astype(np.uint64)
    owner_of_word = np.repeat(np.arange(len(texts)), lengths)
    padded = np.zeros(len(word_hashes) + (n - 1) * len(texts), dtype=np.uint64)  # n-1 zeros after each text
    padded[np.arange(len(word_hashes)) + owner_of_word * (n - 1)] = word_hashes
    starts = np.concatenate([[0], np.cumsum(lengths + n - 1)[:-1]]).astype(np.int64)
    grams = np.zeros(max(len(padded) - n + 1, 0), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            grams ^= padded[k : len(padded) - n + 1 + k] * _MIX[k]
            grams = (grams << np.uint64(13)) | (grams >> np.uint64(51))
    counts = np.maximum(lengths - n + 1, np.minimum(lengths, 1))  # a short text is one shingle; empty is none
    index = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    selected = grams[index] if len(index) else np.zeros(0, dtype=np.uint64)
    # Deduplicate within each text: sort by (text, hash) and drop repeats.
    owner = np.repeat(np.arange(len(texts)), counts)
    order = np.lexsort((selected, owner))
    selected, owner = selected[order], owner[order]
    keep = np.ones(len(selected), dtype=bool)
    keep[1:] = (selected[1:] != selected[:-1]) | (owner[1:] != owner[:-1])
    return selected[keep], np.bincount(owner[keep], minlength=len(texts)).astype(np.int64)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def minhash(shingles: Shingles, num_perm: int, seed: int = 1, chunk: int = 40_000) -> np.ndarray:
    """(texts, num_perm) uint32 MinHash signatures by multiply-shift hashing; empty texts get all-max rows."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    texts = len(shingles.offsets) - 1
    out = np.full((texts, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    nonempty = np.flatnonzero(np.diff(shingles.offsets) > 0)
    start = 0
    while start < len(nonempty):
        # Take texts until about `chunk` shingles, so memory stays at chunk x num_perm x 8 bytes.
        first = shingles.offsets[nonempty[start]]
        stop = int(np.searchsorted(shingles.offsets[nonempty + 1], first + chunk, side="right"))
        stop = max(stop, start + 1)
        rows = nonempty[start:stop]
        lo, hi = shingles.offsets[rows[0]], shingles.offsets[rows[-1] + 1]
        with np.errstate(over="ignore"):
            values = ((shingles.hashes[lo:hi, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)
        out[rows] = np.minimum.reduceat(values, shingles.offsets[rows] - lo, axis=0)
        start = stop
    return out


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing false positives + false negatives around `threshold` (as datasketch does)."""
    grid = np.linspace(0.0, 1.0, 201)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1 - (1 - grid**rows) ** bands
            fp = np.trapezoid(np.where(grid < threshold, p, 0.0), grid)
            fn = np.trapezoid(np.where(grid >= threshold, 1 - p, 0.0), grid)
            if fp + fn < best_cost:
                best, best_cost = (bands, rows), fp + fn
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int, salt: np.ndarray | None = None) -> np.ndarray:
    """(texts, bands) uint64 bucket keys; `salt` (uint64 per text) keeps texts of different groups apart."""
    mix = np.random.default_rng(7).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    keys = np.empty((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            part = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
            keys[:, band] = (part * mix[None, :]).sum(axis=1) ^ np.uint64(band * 0x9E3779B97F4A7C15 % 2**64)
            if salt is not None:
                keys[:, band] ^= salt
    return keys
