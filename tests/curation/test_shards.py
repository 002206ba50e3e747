"""Shard writing: rows routed by their placement, in position order, whatever the memory budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from curation.io import ParquetBatchWriter, sha256_file
from curation.schema import PAIR_SCHEMA
from curation.shards import Placement, write_shards


def _pairs(keys: list[int]) -> pa.Table:
    rows = [
        {"pair_id": f"p{k}", "prompt_id": f"q{k}", "source": "s", "source_row": f"f:{k}", "modality": "text",
         "prompt": [{"role": "user", "content": f"question {k}"}], "chosen": "yes " * (k % 5), "rejected": "no",
         "images": [], "tie": False, "meta": "{}"}
        for k in keys
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)
    return table.add_column(0, "row_key", pa.array(keys, pa.int64()))


def _batches(table: pa.Table, size: int) -> Iterator[pa.RecordBatch]:
    return iter(table.to_batches(max_chunksize=size))


def _run(tmp_path: Path, name: str, table: pa.Table, placement: Placement, budget: int) -> tuple[list, pa.Table]:
    removed = ParquetBatchWriter(tmp_path / name / "removed.parquet", PAIR_SCHEMA)
    shards = write_shards(lambda: _batches(table, 7), placement, tmp_path / name / "shards", 10, removed, budget)
    removed.close()
    return shards, pq.read_table(tmp_path / name / "removed.parquet")


def test_rows_go_to_their_positions_and_the_rest_to_removed(tmp_path: Path) -> None:
    keys = [(source << 40) + 3 * i for source in (0, 1) for i in range(20)]
    table = _pairs(keys)
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(keys, 25, replace=False).tolist())
    placed_keys = np.array(sorted(chosen + chosen[:4]), np.int64)  # four pairs upsampled: two copies each
    placement = Placement(placed_keys, rng.permutation(len(placed_keys)).astype(np.int64), np.ones(len(placed_keys)))

    one_read, removed = _run(tmp_path, "one", table, placement, budget=2**30)
    per_shard, removed_again = _run(tmp_path, "many", table, placement, budget=1)  # a read per shard
    assert [s["rows"] for s in one_read] == [10, 10, 9]
    assert [s["sha256"] for s in one_read] == [s["sha256"] for s in per_shard]
    assert all(s["sha256"] == sha256_file(tmp_path / "one" / s["file"]) for s in one_read)

    written = pa.concat_tables(
        ipc.open_stream(pa.memory_map(str(tmp_path / "one" / s["file"]))).read_all() for s in one_read
    )
    by_position = placed_keys[np.argsort(placement.positions)]
    assert written.column("pair_id").to_pylist() == [f"p{k}" for k in by_position]
    assert written.schema.metadata[b"huggingface"]  # `datasets` opens the files as they are
    not_chosen = [k for k in keys if k not in set(chosen)]
    assert removed.column("pair_id").to_pylist() == [f"p{k}" for k in not_chosen]
    assert removed.equals(removed_again)


def test_a_shard_is_put_in_order_across_its_record_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("curation.shards.BATCH_ROWS", 3)  # each shard of 10 rows in batches of 3, 3, 3 and 1
    keys = list(range(30))
    placement = Placement(np.array(keys, np.int64), np.random.default_rng(1).permutation(30), np.ones(30))
    shards, _ = _run(tmp_path, "small", _pairs(keys), placement, budget=2**30)
    for k, shard in enumerate(shards):
        reader = ipc.open_stream(pa.memory_map(str(tmp_path / "small" / shard["file"])))
        batches = list(reader)
        assert [b.num_rows for b in batches] == [3, 3, 3, 1]
        ids = pa.Table.from_batches(batches).column("pair_id").to_pylist()
        in_shard = np.flatnonzero(placement.positions // 10 == k)
        assert ids == [f"p{key}" for key in in_shard[np.argsort(placement.positions[in_shard])]]


def test_an_empty_selection_still_writes_one_empty_shard(tmp_path: Path) -> None:
    placement = Placement(np.array([], np.int64), np.array([], np.int64), np.array([]))
    shards, removed = _run(tmp_path, "empty", _pairs([0, 1, 2]), placement, budget=2**30)
    assert [s["rows"] for s in shards] == [0] and removed.num_rows == 3


def test_rows_out_of_key_order_are_refused(tmp_path: Path) -> None:
    table = _pairs([5, 1, 9])
    placement = Placement(np.array([1, 5, 9], np.int64), np.array([0, 1, 2], np.int64), np.ones(3))
    with pytest.raises(AssertionError, match="row_key order"):
        _run(tmp_path, "bad", table, placement, budget=2**30)


def test_reads_collect_consecutive_shards_within_the_budget() -> None:
    from curation.shards import _reads

    assert _reads(np.array([10.0, 10, 10, 30, 5]), 25) == [(0, 2), (2, 3), (3, 4), (4, 5)]  # 30 reads alone
    assert _reads(np.array([10.0, 10, 10]), 1000) == [(0, 3)]
    assert _reads(np.array([0.0]), 1) == [(0, 1)]
