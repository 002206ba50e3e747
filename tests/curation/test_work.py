"""Work files: pairs written as Arrow IPC files and read back, memory-mapped, by row_key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from curation.io import ArrowBatchWriter, ParquetBatchWriter
from curation.schema import PAIR_SCHEMA
from curation.work import ROW_KEY_BITS, WorkPairs


def _rows(source: str, n: int) -> list[dict]:
    return [
        {"pair_id": f"{source}{k}", "prompt_id": f"q{k}", "source": "adapter_key", "source_row": f"f:{k}",
         "modality": "text", "prompt": [{"role": "user", "content": f"question {k}"}], "chosen": "yes " * (k % 5),
         "rejected": "no", "images": [], "tie": False, "meta": "{}"}
        for k in range(n)
    ]  # fmt: skip


def _work(tmp_path: Path, sizes: dict[str, int]) -> WorkPairs:
    paths = []
    for name, n in sizes.items():
        writer = ArrowBatchWriter(tmp_path / name / "pairs.arrow", PAIR_SCHEMA, rows_per_group=4)
        writer.write(_rows(name, n))
        writer.close()
        paths.append(writer.path)
    return WorkPairs(paths, list(sizes))


def test_an_arrow_work_file_holds_the_rows_and_groups_a_parquet_one_would(tmp_path: Path) -> None:
    rows = _rows("a", 11)
    arrow = ArrowBatchWriter(tmp_path / "pairs.arrow", PAIR_SCHEMA, rows_per_group=4)
    parquet = ParquetBatchWriter(tmp_path / "pairs.parquet", PAIR_SCHEMA, rows_per_group=4)
    for writer in (arrow, parquet):
        writer.write(rows[:5])
        writer.write_table(pa.Table.from_pylist(rows[5:], schema=PAIR_SCHEMA))
        writer.close()
    file = ipc.open_file(pa.memory_map(str(tmp_path / "pairs.arrow")))
    assert [file.get_batch(i).num_rows for i in range(file.num_record_batches)] == [4, 4, 3]
    assert file.read_all().equals(pq.read_table(tmp_path / "pairs.parquet"))
    assert not (tmp_path / "pairs.arrow.partial").exists()


def test_a_writer_block_publishes_its_file_or_none_when_it_raises(tmp_path: Path) -> None:
    with ArrowBatchWriter(tmp_path / "done.arrow", PAIR_SCHEMA) as writer:
        writer.write(_rows("a", 3))
    assert ipc.open_file(pa.memory_map(str(tmp_path / "done.arrow"))).read_all().num_rows == 3
    with pytest.raises(RuntimeError), ParquetBatchWriter(tmp_path / "failed.parquet", PAIR_SCHEMA) as failing:
        failing.write(_rows("a", 3))
        raise RuntimeError("the producer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.arrow"]


def test_take_returns_the_asked_rows_in_order_with_the_recipes_source_names(tmp_path: Path) -> None:
    work = _work(tmp_path, {"zeta": 9, "alpha": 6})
    keys = np.array([(1 << ROW_KEY_BITS) + 5, 3, 3, 8, (1 << ROW_KEY_BITS), 0, (1 << ROW_KEY_BITS) + 2], np.int64)
    batches = list(work.take(keys, 3))
    assert [b.num_rows for b in batches] == [3, 3, 1]
    taken = pa.Table.from_batches(batches)
    assert taken.schema == PAIR_SCHEMA
    assert taken.column("pair_id").to_pylist() == ["alpha5", "zeta3", "zeta3", "zeta8", "alpha0", "zeta0",
                                                   "alpha2"]  # fmt: skip
    assert taken.column("source").to_pylist() == ["alpha", "zeta", "zeta", "zeta", "alpha", "zeta", "alpha"]
    assert taken.column("prompt").to_pylist()[1] == [{"role": "user", "content": "question 3"}]
    work.release()  # the pages are let go of, the rows stay readable
    assert pa.Table.from_batches(list(work.take(keys[:2], 5))).column("pair_id").to_pylist() == ["alpha5", "zeta3"]


def test_take_refuses_a_key_of_no_pair(tmp_path: Path) -> None:
    work = _work(tmp_path, {"only": 3})
    for key in (3, 1 << ROW_KEY_BITS):
        with pytest.raises(AssertionError, match="not among"):
            list(work.take(np.array([0, key], np.int64), 10))


def test_tables_carry_each_pairs_row_key(tmp_path: Path) -> None:
    first, second = _work(tmp_path, {"zeta": 5, "alpha": 2}).tables()
    assert first.column("row_key").to_pylist() == [0, 1, 2, 3, 4]
    assert second.column("row_key").to_pylist() == [1 << ROW_KEY_BITS, (1 << ROW_KEY_BITS) + 1]
    assert second.column("pair_id").to_pylist() == ["alpha0", "alpha1"]
