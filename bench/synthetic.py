"""A deterministic synthetic preference collection with planted truth, for benchmarking and testing `curate build`.

`generate(out, n)` writes under `out`:

- `text/pairs-NNNNN.parquet`: `ultrafeedback_binarized` rows in the flattened layout
  (`prompt`, `chosen`, `rejected`, `source_index`, `metadata{score_chosen, score_rejected}`), at most
  `rows_per_file` rows a file; scores on 1..10 in steps of 0.5, about 10% ties.
- `images/pairs-NNNNN.parquet`: `rlaif_v` rows in the Hub layout with embedded 64x48 images; base images are
  reused by several pairs with different questions.
- `benchmarks/text.jsonl`: a `rewardbench` slice (`id` is the 0-based line number);
  `benchmarks/vl/data.jsonl` and `benchmarks/vl/images/`: a `vl_rewardbench` slice in the converted layout.
- `truth.parquet`: one row per planted item. `file` and `row` locate it as the adapters' refs do (`ref` is
  `file:row`, 0-based within the file, file relative to `text/` or `images/`, which `dataset` names);
  `original` is the ref of the row copied, or the benchmark item id for contamination.

Planted kinds: `exact_dup` (a verbatim copy of an earlier text pair, scores included); `near_dup` (an earlier
prompt of at least 20 words with one word in 20 substituted, new answers; `jaccard` holds the exact word-3-gram
Jaccard, always >= 0.7); `near_dup_image` (an earlier image pair's question and answers with its picture
re-encoded as JPEG or resized by a few pixels: `variant` jpeg/resize); `contaminated_text` (a benchmark prompt,
`variant` exact or edited by one substituted word, with `jaccard`; new answers); `contaminated_image` (a
benchmark image, byte-identical, with its question; new answers). Originals of copies are unplanted rows, each
copied once. When there are more contaminated rows than benchmark items, items are reused (cycling through a
permutation); a reuse of an item is always edited where the prompt has >= 20 words, so rows sharing an
`original` may be near-duplicates of each other.

Words come from a 20k pseudo-word vocabulary with Zipf frequencies (frequent words are short); prompts are
lognormal around 40 words (at least 8), answers around 150 words. Everything derives from
`numpy.random.default_rng([seed, stream])`: the same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from curation.sources.rewardbench import SECTIONS

VOCAB_SIZE = 20_000
ROWS_PER_FILE = 200_000
MIN_PROMPT_WORDS = 8
NEAR_DUP_MIN_WORDS = 20
MIN_NEAR_JACCARD = 0.7
IMAGE_SIZE = (64, 48)
TIE_SHARE = 0.1
KINDS = ("exact_dup", "near_dup", "near_dup_image", "contaminated_text", "contaminated_image")

_TEXT_CHUNK = 16_384
_IMAGE_CHUNK = 2_048
_TABLE_BITS = 20
_COMPRESSION = "zstd"
# Independent random streams: default_rng([seed, stream]).
_VOCAB, _BENCH_TEXT, _BENCH_VL, _TEXT_LAYOUT, _TEXT_CONTENT, _IMAGE_LAYOUT, _IMAGE_CONTENT = range(7)
_PIXELS, _BENCH_PIXELS = 100, 101
# Row kinds in the layout arrays.
_BASE, _EXACT, _NEAR, _CONTAM, _NEAR_IMAGE, _CONTAM_IMAGE = range(6)

_ONSETS = (
    "",
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "br",
    "ch",
    "cl",
    "dr",
    "fl",
    "gr",
    "pl",
    "pr",
    "sh",
    "st",
    "th",
    "tr",
)
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io")
_CODAS = ("", "", "", "n", "r", "s", "l", "m", "t", "nd", "st")
_MODELS = ("synth-7b-chat", "synth-13b-instruct", "synth-70b-chat", "synth-moe-8x7b", "synth-mini-v2")
_ORIGINS = ("VQAv2", "OKVQA", "COCO", "ShareGPT4V", "MovieNet", "ArtQA")
_ANSWER_TYPES = ("detailed_description", "short_answer", "reasoning")
_VL_PREFIXES = ("wildvision", "hallucination_pair", "RLAIF-V", "svit-complex_reasoning", "mmmu_pro_test", "mathverse")

SCORE_TYPE = pa.struct([("score_chosen", pa.float64()), ("score_rejected", pa.float64())])
TEXT_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("source_index", pa.int64()),
        ("metadata", SCORE_TYPE),
    ]
)
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGE_PAIR_SCHEMA = pa.schema(
    [
        ("ds_name", pa.string()),
        ("image", IMAGE_STRUCT),
        ("question", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("origin_dataset", pa.string()),
        ("origin_split", pa.string()),
        ("idx", pa.string()),
        ("image_path", pa.string()),
    ]
)
TRUTH_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("dataset", pa.string()),
        ("file", pa.string()),
        ("row", pa.int64()),
        ("ref", pa.string()),
        ("original", pa.string()),
        ("variant", pa.string()),
        ("jaccard", pa.float64()),
    ]
)


def shingles(words: Sequence[Any], k: int = 3) -> set[tuple[Any, ...]]:
    """Word k-gram shingles (the whole sequence when shorter than k)."""
    items = list(words)
    if len(items) < k:
        return {tuple(items)}
    return set(zip(*(items[i:] for i in range(k)), strict=False))


def jaccard(a: Sequence[Any], b: Sequence[Any], k: int = 3) -> float:
    """Jaccard similarity of the word k-gram shingle sets of two word sequences."""
    sa, sb = shingles(a, k), shingles(b, k)
    return len(sa & sb) / len(sa | sb)


@dataclass(frozen=True)
class Vocabulary:
    """Pseudo-words by Zipf rank and an inverse-CDF table to draw them fast."""

    words: list[str]
    arrow: pa.Array
    table: np.ndarray

    @classmethod
    def build(cls, seed: int, size: int = VOCAB_SIZE, exponent: float = 1.0, shift: float = 2.7) -> Vocabulary:
        rng = np.random.default_rng([seed, _VOCAB])
        unique: dict[str, None] = {}
        while len(unique) < size:
            count = 2 * size
            syllables = rng.choice(4, size=count, p=[0.25, 0.4, 0.25, 0.1]) + 1
            parts = [rng.integers(0, len(s), size=(count, 4)) for s in (_ONSETS, _VOWELS, _CODAS)]
            for i in range(count):
                word = "".join(
                    _ONSETS[parts[0][i, j]] + _VOWELS[parts[1][i, j]] + _CODAS[parts[2][i, j]]
                    for j in range(syllables[i])
                )
                unique.setdefault(word)
        words = sorted(list(unique)[:size], key=len)  # stable: short words get the frequent ranks
        weights = 1.0 / (np.arange(1, size + 1) + shift) ** exponent
        cdf = np.cumsum(weights) / weights.sum()
        slots = (np.arange(1 << _TABLE_BITS) + 0.5) / (1 << _TABLE_BITS)
        table = np.minimum(np.searchsorted(cdf, slots), size - 1).astype(np.uint16)
        return cls(words, pa.array(words, pa.string()), table)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """`size` word indices, Zipf-distributed."""
        return self.table[rng.integers(0, self.table.size, size=size, dtype=np.uint32)]

    def strings(self, tokens: np.ndarray, offsets: np.ndarray) -> pa.Array:
        """Texts from flat word indices and row offsets (words joined by single spaces)."""
        lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), self.arrow.take(pa.array(tokens)))
        return pc.binary_join(lists, " ")

    def text(self, tokens: np.ndarray) -> str:
        return " ".join(self.words[t] for t in tokens.tolist())


def _lengths(rng: np.random.Generator, size: int, median: float, sigma: float, low: int) -> np.ndarray:
    """Lognormal word counts around `median`, at least `low`, at most 20x the median."""
    values = np.rint(median * np.exp(sigma * rng.standard_normal(size)))
    return np.clip(values, low, 20 * median).astype(np.int64)


def _scores(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) on 1..10 in steps of 0.5; about TIE_SHARE ties, otherwise chosen > rejected."""
    a = rng.integers(0, 19, size=size)
    b = rng.integers(0, 18, size=size)
    b = b + (b >= a)
    ties = rng.random(size) < TIE_SHARE
    b = np.where(ties, a, b)
    return 1.0 + np.maximum(a, b) / 2.0, 1.0 + np.minimum(a, b) / 2.0


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _edit(rng: np.random.Generator, vocab: Vocabulary, tokens: np.ndarray, n_edits: int) -> tuple[np.ndarray, float]:
    """`tokens` with `n_edits` words substituted by other words, and the exact 3-gram Jaccard to the original."""
    original = tokens.tolist()
    best: tuple[np.ndarray, float] | None = None
    for _ in range(20):
        edited = tokens.copy()
        where = rng.choice(tokens.size, size=min(n_edits, tokens.size), replace=False)
        new = vocab.draw(rng, where.size)
        while (same := new == edited[where]).any():
            new[same] = vocab.draw(rng, int(same.sum()))
        edited[where] = new
        score = jaccard(edited.tolist(), original)
        if best is None or score > best[1]:
            best = (edited, score)
        if score >= MIN_NEAR_JACCARD or n_edits == 1:
            break
    assert best is not None
    return best


def _place(rng: np.random.Generator, n_base: int, copy_of: np.ndarray, n_free: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order of base items, copies (each after its base original) and free items.

    Items are numbered base `0..n_base`, then copies, then free items. Returns (`item` by final position,
    final position by item).
    """
    later = copy_of + (1.0 - rng.random(copy_of.size)) * (n_base - copy_of)  # in (original, n_base]
    keys = np.concatenate([np.arange(n_base, dtype=np.float64), later, rng.random(n_free) * n_base])
    item = np.argsort(keys, kind="stable")
    position = np.empty_like(item)
    position[item] = np.arange(item.size)
    return item, position


def _ref(position: int, rows_per_file: int) -> tuple[str, int, str]:
    name = f"pairs-{position // rows_per_file:05d}.parquet"
    row = position % rows_per_file
    return name, row, f"{name}:{row}"


def _truth_row(
    kind: str,
    dataset: str,
    position: int,
    rows_per_file: int,
    original: str,
    variant: str | None = None,
    score: float | None = None,
) -> dict[str, Any]:
    name, row, ref = _ref(position, rows_per_file)
    return {
        "kind": kind,
        "dataset": dataset,
        "file": name,
        "row": row,
        "ref": ref,
        "original": original,
        "variant": variant,
        "jaccard": score,
    }


def _cycle(rng: np.random.Generator, items: int, count: int) -> np.ndarray:
    """`count` item indices: a permutation of the items, repeated (each repeat a new permutation) as needed."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if items == 0:
        raise ValueError("contamination needs a benchmark with at least one item")
    rounds = math.ceil(count / items)
    return np.concatenate([rng.permutation(items) for _ in range(rounds)])[:count]


# ---- images --------------------------------------------------------------------------------------------------


def _picture(seed: int, stream: int, index: int) -> np.ndarray:
    """A random picture (a 16x12 colour grid, bicubic upsampled, mild noise): distinct per index.

    The grid is fine enough that perceptual hashes of different pictures behave as random 64-bit strings.
    """
    rng = np.random.default_rng([seed, stream, index])
    width, height = IMAGE_SIZE
    grid = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-4, 5, size=smooth.shape, dtype=np.int16)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _near_image(rng: np.random.Generator, array: np.ndarray) -> tuple[bytes, str]:
    """The same picture re-encoded as JPEG or resized by a few pixels (PNG): perceptually close, bytes differ."""
    if rng.random() < 0.5:
        return _encode(array, "JPEG", quality=int(rng.integers(75, 96))), "jpeg"
    width, height = IMAGE_SIZE
    dx, dy = (int(v) * int(s) for v, s in zip(rng.integers(1, 5, size=2), rng.choice([-1, 1], size=2), strict=True))
    resized = Image.fromarray(array).resize((width + dx, height + dy), Image.Resampling.BILINEAR)
    return _encode(np.asarray(resized)), "resize"


# ---- writers -------------------------------------------------------------------------------------------------


@dataclass
class _Benchmarks:
    text_prompts: list[np.ndarray]
    vl_questions: list[str]
    vl_images: list[bytes]
    vl_ids: list[str]


def _write_benchmarks(out: Path, vocab: Vocabulary, seed: int, n_text: int, n_vl: int) -> _Benchmarks:
    rng = np.random.default_rng([seed, _BENCH_TEXT])
    subsets = sorted(SECTIONS)
    plen = _lengths(rng, n_text, 40, 0.45, MIN_PROMPT_WORDS)
    clen, rlen = _lengths(rng, n_text, 150, 0.6, 5), _lengths(rng, n_text, 150, 0.6, 5)
    columns = {}
    prompts: list[np.ndarray] = []
    for name, lengths in (("prompt", plen), ("chosen", clen), ("rejected", rlen)):
        offsets = _offsets(lengths)
        tokens = vocab.draw(rng, int(offsets[-1]))
        columns[name] = vocab.strings(tokens, offsets).to_pylist()
        if name == "prompt":
            prompts = [tokens[offsets[i] : offsets[i + 1]].copy() for i in range(n_text)]
    models = rng.integers(0, len(_MODELS), size=(n_text, 2))
    subset = rng.integers(0, len(subsets), size=n_text)
    (out / "benchmarks").mkdir(parents=True, exist_ok=True)
    with open(out / "benchmarks" / "text.jsonl", "w", encoding="utf-8") as handle:
        for i in range(n_text):
            row = {
                "prompt": columns["prompt"][i],
                "chosen": columns["chosen"][i],
                "chosen_model": _MODELS[models[i, 0]],
                "rejected": columns["rejected"][i],
                "rejected_model": _MODELS[models[i, 1]],
                "subset": subsets[subset[i]],
                "id": i,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    rng = np.random.default_rng([seed, _BENCH_VL])
    lengths = {
        "prompt": _lengths(rng, n_vl, 14, 0.35, MIN_PROMPT_WORDS),
        "chosen": _lengths(rng, n_vl, 80, 0.6, 5),
        "rejected": _lengths(rng, n_vl, 80, 0.6, 5),
        "chosen_reason": _lengths(rng, n_vl, 20, 0.4, 5),
        "rejected_reason": _lengths(rng, n_vl, 20, 0.4, 5),
    }
    texts = {}
    for name, counts in lengths.items():
        offsets = _offsets(counts)
        texts[name] = vocab.strings(vocab.draw(rng, int(offsets[-1])), offsets).to_pylist()
    vl_root = out / "benchmarks" / "vl"
    image_dir = vl_root / "images" / "vl_reward" / "img"
    image_dir.mkdir(parents=True, exist_ok=True)
    ids, images = [], []
    with open(vl_root / "data.jsonl", "w", encoding="utf-8") as handle:
        for i in range(n_vl):
            item_id = f"{_VL_PREFIXES[i % len(_VL_PREFIXES)]}-{i}"
            data = _encode(_picture(seed, _BENCH_PIXELS, i))
            (image_dir / f"image_{i}.png").write_bytes(data)
            ids.append(item_id)
            images.append(data)
            row = {
                "id": item_id,
                "prompt": texts["prompt"][i],
                "chosen": texts["chosen"][i],
                "rejected": texts["rejected"][i],
                "image": f"vl_reward/img/image_{i}.png",
                "chosen_reason": texts["chosen_reason"][i],
                "rejected_reason": texts["rejected_reason"][i],
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return _Benchmarks(prompts, texts["prompt"], images, ids)


def _write_text(
    out: Path,
    vocab: Vocabulary,
    seed: int,
    n_text: int,
    shares: dict[str, float],
    bench: _Benchmarks,
    rows_per_file: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rng = np.random.default_rng([seed, _TEXT_LAYOUT])
    n_exact = round(shares["exact_dup"] * n_text)
    n_near = round(shares["near_dup"] * n_text)
    n_contam = round(shares["contaminated_text"] * n_text)
    n_base = n_text - n_exact - n_near - n_contam
    base_plen = _lengths(rng, n_base, 40, 0.45, MIN_PROMPT_WORDS)
    # Originals: distinct base rows; near-dup originals have prompts long enough to keep Jaccard high.
    shuffled = rng.permutation(n_base)
    exact_of = np.sort(shuffled[:n_exact])
    rest = shuffled[n_exact:]
    near_of = np.sort(rest[base_plen[rest] >= NEAR_DUP_MIN_WORDS][:n_near])
    n_near = near_of.size
    copy_of = np.concatenate([exact_of, near_of])
    item, position = _place(rng, n_base, copy_of, n_contam)
    total = item.size

    kind = np.full(total, _BASE, dtype=np.int8)
    source = np.full(total, -1, dtype=np.int64)  # position of the original, or benchmark index
    copies = position[n_base : n_base + copy_of.size]
    kind[copies[:n_exact]] = _EXACT
    kind[copies[n_exact:]] = _NEAR
    source[copies] = position[copy_of]
    contam_pos = position[n_base + copy_of.size :]
    bench_index = _cycle(rng, len(bench.text_prompts), n_contam)
    bench_len = np.array([p.size for p in bench.text_prompts], dtype=np.int64)
    first_use = np.arange(n_contam) < len(bench.text_prompts)
    long_enough = bench_len[bench_index] >= NEAR_DUP_MIN_WORDS
    edited = long_enough & (~first_use | (rng.random(n_contam) < 0.5))
    kind[contam_pos] = _CONTAM
    source[contam_pos] = bench_index
    contam_edited = np.zeros(total, dtype=bool)
    contam_edited[contam_pos] = edited

    plen = np.empty(total, dtype=np.int64)
    plen[position[:n_base]] = base_plen
    plen[copies] = base_plen[copy_of]
    plen[contam_pos] = bench_len[bench_index]
    clen, rlen = _lengths(rng, total, 150, 0.6, 5), _lengths(rng, total, 150, 0.6, 5)
    score_c, score_r = _scores(rng, total)
    exact_pos = copies[:n_exact]
    for array in (clen, rlen, score_c, score_r):
        array[exact_pos] = array[source[exact_pos]]
    keep_prompt = np.zeros(total, dtype=bool)
    keep_prompt[source[copies]] = True
    keep_answers = np.zeros(total, dtype=bool)
    keep_answers[source[exact_pos]] = True

    rng = np.random.default_rng([seed, _TEXT_CONTENT])
    stash: dict[int, list[np.ndarray]] = {}
    truth: list[dict[str, Any]] = []
    folder = out / "text"
    if total:
        folder.mkdir(parents=True, exist_ok=True)
    for file_start in range(0, total, rows_per_file):
        file_end = min(file_start + rows_per_file, total)
        path = folder / f"pairs-{file_start // rows_per_file:05d}.parquet"
        with pq.ParquetWriter(path, TEXT_SCHEMA, compression=_COMPRESSION) as writer:
            for start in range(file_start, file_end, _TEXT_CHUNK):
                end = min(start + _TEXT_CHUNK, file_end)
                offsets = [_offsets(lengths[start:end]) for lengths in (plen, clen, rlen)]
                tokens = [vocab.draw(rng, int(o[-1])) for o in offsets]

                def segment(
                    column: int, row: int, tokens: list[np.ndarray] = tokens, offsets: list[np.ndarray] = offsets
                ) -> np.ndarray:
                    return tokens[column][offsets[column][row] : offsets[column][row + 1]]

                for p in (np.flatnonzero(keep_prompt[start:end]) + start).tolist():
                    columns = 3 if keep_answers[p] else 1
                    stash[p] = [segment(c, p - start).copy() for c in range(columns)]
                for p in (np.flatnonzero(kind[start:end] != _BASE) + start).tolist():
                    row, k, src = p - start, int(kind[p]), int(source[p])
                    if k == _EXACT:
                        for column, value in enumerate(stash.pop(src)):
                            segment(column, row)[:] = value
                        truth.append(_truth_row("exact_dup", "text", p, rows_per_file, _ref(src, rows_per_file)[2]))
                    elif k == _NEAR:
                        original = stash.pop(src)[0]
                        prompt, score = _edit(rng, vocab, original, max(1, original.size // 20))
                        segment(0, row)[:] = prompt
                        truth.append(
                            _truth_row("near_dup", "text", p, rows_per_file, _ref(src, rows_per_file)[2], score=score)
                        )
                    else:
                        prompt = bench.text_prompts[src]
                        score = 1.0
                        if contam_edited[p]:
                            prompt, score = _edit(rng, vocab, prompt, 1)
                        segment(0, row)[:] = prompt
                        truth.append(
                            _truth_row(
                                "contaminated_text",
                                "text",
                                p,
                                rows_per_file,
                                str(src),
                                "edited" if contam_edited[p] else "exact",
                                score,
                            )
                        )
                scores = pa.StructArray.from_arrays(
                    [pa.array(score_c[start:end]), pa.array(score_r[start:end])], fields=list(SCORE_TYPE)
                )
                table = pa.Table.from_arrays(
                    [
                        *(vocab.strings(t, o) for t, o in zip(tokens, offsets, strict=True)),
                        pa.array(np.arange(start, end, dtype=np.int64)),
                        scores,
                    ],
                    schema=TEXT_SCHEMA,
                )
                writer.write_table(table)
    assert not stash
    counts = {
        "text_pairs": total,
        "text_files": math.ceil(total / rows_per_file),
        "text_ties": int((score_c == score_r).sum()),
        "exact_dup": n_exact,
        "near_dup": n_near,
        "contaminated_text": n_contam,
    }
    return truth, counts


def _write_images(
    out: Path,
    vocab: Vocabulary,
    seed: int,
    n_images: int,
    shares: dict[str, float],
    bench: _Benchmarks,
    rows_per_file: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rng = np.random.default_rng([seed, _IMAGE_LAYOUT])
    n_near = round(shares["near_dup"] * n_images)
    n_contam = round(shares["contaminated_image"] * n_images)
    n_base = n_images - n_near - n_contam
    pool = max(1, math.ceil(0.7 * n_base)) if n_base else 0
    picture_of = rng.permutation(np.concatenate([np.arange(pool), rng.integers(0, max(pool, 1), n_base - pool)]))
    near_of = np.sort(rng.permutation(n_base)[:n_near])
    n_near = near_of.size
    item, position = _place(rng, n_base, near_of, n_contam)
    total = item.size
    kind = np.full(total, _BASE, dtype=np.int8)
    source = np.full(total, -1, dtype=np.int64)  # picture (base), original position (near dup), benchmark index
    copies = position[n_base : n_base + n_near]
    contam_pos = position[n_base + n_near :]
    kind[copies], kind[contam_pos] = _NEAR_IMAGE, _CONTAM_IMAGE
    source[position[:n_base]] = picture_of
    source[copies] = position[near_of]
    source[contam_pos] = _cycle(rng, len(bench.vl_images), n_contam)
    qlen = _lengths(rng, total, 14, 0.35, MIN_PROMPT_WORDS)
    clen, rlen = _lengths(rng, total, 80, 0.6, 5), _lengths(rng, total, 80, 0.6, 5)
    for array in (qlen, clen, rlen):
        array[copies] = array[source[copies]]
    qlen[contam_pos] = 1  # replaced by the benchmark question
    origin = rng.integers(0, len(_ORIGINS), size=total)
    model = rng.integers(0, len(_MODELS), size=total)
    answer_type = rng.integers(0, len(_ANSWER_TYPES), size=total)
    for array in (origin, model, answer_type):
        array[copies] = array[source[copies]]
    keep = np.zeros(total, dtype=bool)
    keep[source[copies]] = True
    uses = np.bincount(picture_of, minlength=pool)
    cache: dict[int, bytes] = {}

    rng = np.random.default_rng([seed, _IMAGE_CONTENT])
    stash: dict[int, tuple[list[np.ndarray], int]] = {}
    truth: list[dict[str, Any]] = []
    folder = out / "images"
    if total:
        folder.mkdir(parents=True, exist_ok=True)
    for file_start in range(0, total, rows_per_file):
        file_end = min(file_start + rows_per_file, total)
        path = folder / f"pairs-{file_start // rows_per_file:05d}.parquet"
        with pq.ParquetWriter(path, IMAGE_PAIR_SCHEMA, compression=_COMPRESSION) as writer:
            for start in range(file_start, file_end, _IMAGE_CHUNK):
                end = min(start + _IMAGE_CHUNK, file_end)
                offsets = [_offsets(lengths[start:end]) for lengths in (qlen, clen, rlen)]
                tokens = [vocab.draw(rng, int(o[-1])) for o in offsets]

                def segment(
                    column: int, row: int, tokens: list[np.ndarray] = tokens, offsets: list[np.ndarray] = offsets
                ) -> np.ndarray:
                    return tokens[column][offsets[column][row] : offsets[column][row + 1]]

                questions = vocab.strings(tokens[0], offsets[0]).to_pylist()
                images, names = [], []
                for p in range(start, end):
                    row, k, src = p - start, int(kind[p]), int(source[p])
                    if keep[p]:
                        stash[p] = ([segment(c, row).copy() for c in range(3)], src)
                    if k == _BASE:
                        data = cache.pop(src, None) or _encode(_picture(seed, _PIXELS, src))
                        uses[src] -= 1
                        if uses[src]:
                            cache[src] = data  # encoded once, kept until its last use
                        images.append(data)
                        names.append(f"synthetic/picture_{src:07d}.png")
                    elif k == _NEAR_IMAGE:
                        answers, picture = stash.pop(src)
                        for column, value in enumerate(answers):
                            segment(column, row)[:] = value
                        questions[row] = vocab.text(answers[0])
                        data, variant = _near_image(rng, _picture(seed, _PIXELS, picture))
                        images.append(data)
                        suffix = "jpg" if variant == "jpeg" else "png"
                        names.append(f"synthetic/picture_{picture:07d}_{variant}.{suffix}")
                        truth.append(
                            _truth_row(
                                "near_dup_image", "images", p, rows_per_file, _ref(src, rows_per_file)[2], variant
                            )
                        )
                    else:
                        questions[row] = bench.vl_questions[src]
                        images.append(bench.vl_images[src])
                        names.append(f"synthetic/benchmark_{src:07d}.png")
                        truth.append(_truth_row("contaminated_image", "images", p, rows_per_file, bench.vl_ids[src]))
                splits = [
                    json.dumps({"model": _MODELS[m], "type": _ANSWER_TYPES[t]})
                    for m, t in zip(model[start:end].tolist(), answer_type[start:end].tolist(), strict=True)
                ]
                table = pa.Table.from_arrays(
                    [
                        pa.array(["RLAIF-V"] * (end - start), pa.string()),
                        pa.StructArray.from_arrays(
                            [pa.array(images, pa.binary()), pa.array(names, pa.string())], fields=list(IMAGE_STRUCT)
                        ),
                        pa.array(questions, pa.string()),
                        vocab.strings(tokens[1], offsets[1]),
                        vocab.strings(tokens[2], offsets[2]),
                        pa.array([_ORIGINS[o] for o in origin[start:end].tolist()], pa.string()),
                        pa.array(splits, pa.string()),
                        pa.array([str(p) for p in range(start, end)], pa.string()),
                        pa.array(names, pa.string()),
                    ],
                    schema=IMAGE_PAIR_SCHEMA,
                )
                writer.write_table(table)
    assert not stash
    counts = {
        "image_pairs": total,
        "image_files": math.ceil(total / rows_per_file),
        "pictures": pool,
        "near_dup_image": n_near,
        "contaminated_image": n_contam,
    }
    return truth, counts


def generate(
    out: Path,
    n: int,
    seed: int = 0,
    *,
    image_share: float = 0.05,
    exact_dup_share: float = 0.05,
    near_dup_share: float = 0.05,
    contaminated_share: float = 0.02,
    n_benchmark: int = 1000,
    n_benchmark_images: int | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> dict[str, int]:
    """Write the collection under `out` (see the module docstring) and return its counts.

    `n` pairs in all, `image_share` of them image pairs. Shares of planted rows: `exact_dup_share` and
    `near_dup_share` of the text pairs, `near_dup_share` of the image pairs (near-duplicate pictures) and
    `contaminated_share` of each. `n_benchmark` text benchmark items; `n_benchmark_images` image benchmark
    items (default `max(20, n_benchmark // 10)`).
    """
    shares = {
        "image": image_share,
        "exact_dup": exact_dup_share,
        "near_dup": near_dup_share,
        "contaminated_text": contaminated_share,
        "contaminated_image": contaminated_share,
    }
    if n < 1 or rows_per_file < 1 or n_benchmark < 0:
        raise ValueError("n and rows_per_file must be positive, n_benchmark non-negative")
    if any(not 0.0 <= s < 1.0 for s in shares.values()) or exact_dup_share + near_dup_share + contaminated_share > 0.5:
        raise ValueError("shares must be in [0, 1) and planted shares must sum to at most 0.5")
    out = Path(out)
    n_vl = max(20, n_benchmark // 10) if n_benchmark_images is None else n_benchmark_images
    n_images = round(image_share * n)
    vocab = Vocabulary.build(seed)
    bench = _write_benchmarks(out, vocab, seed, n_benchmark, n_vl)
    # Images (PIL encoding) run beside text (numpy and Arrow): both release the GIL for most of their work.
    with ThreadPoolExecutor(max_workers=1) as executor:
        images = executor.submit(_write_images, out, vocab, seed, n_images, shares, bench, rows_per_file)
        text_truth, text_counts = _write_text(out, vocab, seed, n - n_images, shares, bench, rows_per_file)
        image_truth, image_counts = images.result()
    truth = sorted(text_truth, key=lambda r: (r["file"], r["row"])) + sorted(
        image_truth, key=lambda r: (r["file"], r["row"])
    )
    pq.write_table(pa.Table.from_pylist(truth, schema=TRUTH_SCHEMA), out / "truth.parquet", compression=_COMPRESSION)
    counts = {
        "pairs": n,
        **text_counts,
        **image_counts,
        "benchmark_text": n_benchmark,
        "benchmark_images": n_vl,
        "truth_rows": len(truth),
    }
    counts["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, help="number of pairs (text and image)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-benchmark", type=int, default=1000)
    args = parser.parse_args(argv)
    counts = generate(args.out, args.n, args.seed, n_benchmark=args.n_benchmark)
    for key, value in counts.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
