"""Word n-gram shingles, MinHash signatures and LSH banding: numpy, with the per-shingle loops compiled (numba).

Preference prompts are short, so shingles are word n-grams of a lower-cased `\\w+` tokenization after NFKC and
without format characters (a prompt shorter than n words is one shingle; one without a word has none). Word hashes
come from Polars' seeded hash, never from Python's salted `hash()`, so signatures are the same in every process (for
one Polars version; signals are per build).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self

import numba
import numpy as np
import polars as pl

CHUNK = 100_000  # texts tokenized at a time
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
                dtype=np.uint64)  # fmt: skip
MAX_NGRAM = len(_MIX)  # one mixing constant per word position


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Where each text's run starts (and, last, the total) from the runs' lengths."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass(frozen=True)
class HashLists:
    """64-bit hashes of many texts, concatenated: text i owns hashes[offsets[i]:offsets[i + 1]]."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = texts + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def of(self, i: int) -> np.ndarray:
        return self.hashes[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def concat(cls, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> Self:
        """From (hashes, per-text counts) parts, in text order."""
        counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, dtype=np.int64)
        offsets = _offsets(counts)
        hashes = np.concatenate([h for h, _ in parts]) if parts else np.zeros(0, dtype=np.uint64)
        return cls(hashes, offsets)

    def slice(self, start: int, stop: int) -> Self:
        """Texts start..stop-1."""
        offsets = self.offsets[start : stop + 1]
        return type(self)(self.hashes[offsets[0] : offsets[-1]], offsets - offsets[0])

    def take(self, texts: np.ndarray) -> Self:
        """The given texts, in the given order."""
        lengths = np.diff(self.offsets)[texts]
        offsets = _offsets(lengths)
        source = np.repeat(self.offsets[texts] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return type(self)(self.hashes[source], offsets)


class Words(HashLists):
    """Each text's lower-cased `\\w+` words, as seeded hashes, in order."""


class Shingles(HashLists):
    """Each text's unique word n-gram hashes, sorted."""


def tokenize(texts: Sequence[str]) -> pl.Series:
    """Each text's lower-cased `\\w+` words (a list per text), after compatibility folding (NFKC: full-width `Ｈｉ`
    is `Hi`) and without format characters (zero-width spaces, soft hyphens, bidi controls), which would cut a
    word in two and let a copy pass as another text. ASCII texts, most of them, need neither."""
    series = pl.Series(list(texts), dtype=pl.String)
    wide = (series.str.len_bytes() != series.str.len_chars()).fill_null(False)  # not ASCII
    if wide.any():  # folded alone (a `when/then` would fold every text)
        folded = series.filter(wide).str.normalize("NFKC").str.replace_all(r"\p{Cf}", "")
        series = series.scatter(wide.arg_true(), folded)
    return series.str.to_lowercase().str.extract_all(r"\w+")


def word_hashes(texts: Sequence[str], chunk: int = CHUNK, threads: int = 1) -> Words:
    """The words of each text as hashes, tokenized `chunk` texts at a time (so memory stays bounded), by
    `threads` chunks at once (Polars releases the GIL)."""
    chunks = [texts[start : start + chunk] for start in range(0, len(texts), chunk)]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return Words.concat(list(pool.map(_word_hashes, chunks)))


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    tokens = tokenize(texts)
    lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    return tokens.explode().drop_nulls().hash(seed=0x5EED).to_numpy().astype(np.uint64), lengths


def shingle_words(words: Words, n: int, chunk: int = CHUNK) -> Shingles:
    """Unique word n-gram hashes per text, from its word hashes in a compiled loop (`chunk` texts at a time)."""
    return Shingles.concat([_shingle_part(words.slice(s, min(s + chunk, len(words))), n)
                            for s in range(0, len(words), chunk)])  # fmt: skip


def _shingle_part(words: Words, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not 1 <= n <= MAX_NGRAM:
        raise ValueError(f"n-grams of 1 to {MAX_NGRAM} words are supported")
    lengths = np.diff(words.offsets)
    counts = np.maximum(lengths - n + 1, np.minimum(lengths, 1))  # a short text is one shingle; empty is none
    offsets = _offsets(counts)
    grams = np.empty(offsets[-1], dtype=np.uint64)
    unique = _ngrams(words.hashes, words.offsets, offsets, _MIX[:n].copy(), grams)
    # Keep each text's unique hashes (the start of its slice).
    index = np.repeat(offsets[:-1], unique) + (np.arange(unique.sum()) - np.repeat(np.cumsum(unique) - unique, unique))
    return grams[index], unique


def sequence_keys(words: Words) -> np.ndarray:
    """One uint64 per text for its whole word sequence: texts with the same words in the same order share it
    (different sequences collide with probability about 2^-64)."""
    out = np.empty(len(words), dtype=np.uint64)
    _sequence_keys(words.hashes, words.offsets, out)
    return out


@numba.njit(cache=True)
def _sequence_keys(hashes: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    for t in range(len(offsets) - 1):
        key = np.uint64(offsets[t + 1] - offsets[t]) * _MIX[0]
        for i in range(offsets[t], offsets[t + 1]):
            key ^= hashes[i]
            key = ((key << np.uint64(29)) | (key >> np.uint64(35))) * _MIX[1]
        out[t] = key


@numba.njit(parallel=True, cache=True)
def _ngrams(words: np.ndarray, word_offsets: np.ndarray, offsets: np.ndarray, mix: np.ndarray, out: np.ndarray):  # type: ignore[no-untyped-def]
    """Per text: its n-gram hashes (words past the end count as 0) into out[offsets[t]:], sorted, repeats
    moved out; returns how many unique hashes each text keeps at the start of its slice."""
    unique = np.zeros(len(offsets) - 1, dtype=np.int64)
    for t in numba.prange(len(offsets) - 1):
        lo, hi, first, length = offsets[t], offsets[t + 1], word_offsets[t], word_offsets[t + 1] - word_offsets[t]
        for i in range(hi - lo):
            gram = np.uint64(0)
            for k in range(len(mix)):
                word = words[first + i + k] if i + k < length else np.uint64(0)
                gram ^= word * mix[k]
                gram = (gram << np.uint64(13)) | (gram >> np.uint64(51))
            out[lo + i] = gram
        if hi > lo:
            out[lo:hi] = np.sort(out[lo:hi])
            kept = 1
            for i in range(lo + 1, hi):
                if out[i] != out[lo + kept - 1]:
                    out[lo + kept] = out[i]
                    kept += 1
            unique[t] = kept
    return unique


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Shared shingles over all of either. Two texts without a word (`???`, emoji alone) share no shingle: nothing
    says they are alike, so 0, never the 1 that would make every such prompt a duplicate of every other."""
    if not len(a) and not len(b):
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def minhash(shingles: Shingles, num_perm: int, seed: int = 1) -> np.ndarray:
    """(texts, num_perm) uint32 MinHash signatures by multiply-shift hashing; empty texts get all-max rows."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    out = np.full((len(shingles.offsets) - 1, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    _minhash(shingles.hashes, shingles.offsets, a, b, out)
    return out


@numba.njit(parallel=True, cache=True)
def _minhash(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    # The high 32 bits of (a * h + b) mod 2^64, minimized per text and permutation (18x numpy's broadcast form).
    for t in numba.prange(len(offsets) - 1):
        row = out[t]
        for i in range(offsets[t], offsets[t + 1]):
            h = hashes[i]
            for p in range(len(a)):
                value = np.uint32((h * a[p] + b[p]) >> np.uint64(32))
                if value < row[p]:
                    row[p] = value


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
