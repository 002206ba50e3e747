"""Shard writing: the pairs at the given row_keys, in that order, cut into shards that `datasets` opens."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from curation import shards
from curation.io import ArrowBatchWriter, sha256_file
from curation.schema import PAIR_SCHEMA
from curation.shards import shard_jobs
from curation.work import ROW_KEY_BITS, WorkPairs


def _work(tmp_path: Path) -> tuple[WorkPairs, list[int]]:
    paths, keys = [], []
    for source in (0, 1):
        rows = [
            {"pair_id": f"p{source}-{k}", "prompt_id": f"q{k}", "source": "s", "source_row": f"f:{k}",
             "modality": "text", "prompt": [{"role": "user", "content": f"question {k}"}],
             "chosen": "yes " * (k % 5), "rejected": "no", "images": [], "tie": False, "meta": "{}"}
            for k in range(20)
        ]  # fmt: skip
        writer = ArrowBatchWriter(tmp_path / f"s{source}" / "pairs.arrow", PAIR_SCHEMA, rows_per_group=7)
        writer.write(rows)
        writer.close()
        paths.append(writer.path)
        keys += [(source << ROW_KEY_BITS) + k for k in range(20)]
    return WorkPairs(paths, ["s0", "s1"]), keys


def write_shards(work: WorkPairs, keys: np.ndarray, folder: Path, rows_per_shard: int, threads: int = 1) -> list[dict]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda job: job(), shard_jobs(work.take, keys, folder, rows_per_shard)))


def _read(tmp_path: Path, shards: list[dict]) -> list[pa.RecordBatch]:
    return [b for s in shards for b in ipc.open_stream(pa.memory_map(str(tmp_path / s["file"])))]


def test_shards_hold_the_pairs_in_the_order_given(tmp_path: Path) -> None:
    work, keys = _work(tmp_path)
    rng = np.random.default_rng(0)
    chosen = rng.choice(keys, 25, replace=False)
    order = rng.permutation(np.concatenate([chosen, chosen[:4]]))  # four pairs upsampled: two copies each
    shards = write_shards(work, order, tmp_path / "shards", 10, threads=2)
    assert [s["rows"] for s in shards] == [10, 10, 9]
    assert [s["file"] for s in shards] == [f"shards/train-0000{k}-of-00003.arrow" for k in range(3)]
    assert all(s["sha256"] == sha256_file(tmp_path / s["file"]) for s in shards)
    written = pa.Table.from_batches(_read(tmp_path, shards))
    expected = [f"p{k >> ROW_KEY_BITS}-{k & ((1 << ROW_KEY_BITS) - 1)}" for k in order.tolist()]
    assert written.column("pair_id").to_pylist() == expected
    assert written.column("source").to_pylist() == [f"s{k >> ROW_KEY_BITS}" for k in order.tolist()]
    assert written.schema.metadata[b"huggingface"]  # `datasets` opens the files as they are

    again = write_shards(work, order, tmp_path / "again", 10, threads=1)
    assert [s["sha256"] for s in again] == [s["sha256"] for s in shards]  # threads do not change the bytes


def test_a_shard_is_written_in_record_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("curation.shards.BATCH_ROWS", 3)  # each shard of 10 rows in batches of 3, 3, 3 and 1
    work, keys = _work(tmp_path)
    shards = write_shards(work, np.array(keys[:20], np.int64)[::-1], tmp_path / "shards", 10)
    batches = _read(tmp_path, shards)
    assert [b.num_rows for b in batches] == [3, 3, 3, 1] * 2
    assert pa.Table.from_batches(batches).column("pair_id").to_pylist() == [f"p0-{k}" for k in range(19, -1, -1)]


def test_an_empty_selection_still_writes_one_empty_shard(tmp_path: Path) -> None:
    work, _ = _work(tmp_path)
    shards = write_shards(work, np.array([], np.int64), tmp_path / "shards", 10)
    assert [s["rows"] for s in shards] == [0]
    assert ipc.open_stream(pa.memory_map(str(tmp_path / shards[0]["file"]))).read_all().num_rows == 0


def _shard_file(path: Path, direct: bool) -> shards._ShardFile:
    """A shard file open for direct I/O or not, as asked; skips where the file system refuses direct I/O."""
    sink = shards._ShardFile(path)
    if sink.direct is not direct:
        sink.close()
        pytest.skip(f"the file system under {path.parent} refuses direct I/O")
    return sink


@pytest.mark.parametrize("direct", [True, False])
def test_shard_file_writes_and_hashes_every_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool) -> None:
    """Direct writes go out in whole staged blocks and the padded tail is cut off; without direct I/O (a file
    system that refuses it) the same bytes are written buffered."""
    import hashlib
    import os

    monkeypatch.setattr(shards, "STAGE_BYTES", 2 * shards.DIRECT_BLOCK)  # several flushes from a small file
    if not direct:
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    data = np.random.default_rng(0).integers(0, 256, 30_001, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    with _shard_file(path, direct) as sink:
        for start, end in [(0, 5), (5, 9000), (9000, 9001), (9001, 30_001)]:
            assert sink.write(data[start:end]) == end - start
    assert path.read_bytes() == data
    assert sink.direct is direct  # the padded tail went out direct too
    assert sink.digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_shard_file_goes_on_buffered_when_direct_writes_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems open a file for direct I/O and then refuse the writes (EINVAL): no byte is lost."""
    import errno
    import os

    real_write, refused = os.write, []

    def write(fd: int, data: memoryview) -> int:
        if not refused:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(shards, "STAGE_BYTES", 2 * shards.DIRECT_BLOCK)
    monkeypatch.setattr(os, "write", write)
    data = np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    with _shard_file(path, True) as sink:
        sink.write(data)
    assert refused and not sink.direct
    assert path.read_bytes() == data


def test_recorded_shards_are_not_written_again(tmp_path: Path) -> None:
    """With `records`, a shard written before for the same rows is taken from its record (a resumed build);
    other rows, or a shard whose file changed size, are written again."""
    work, keys = _work(tmp_path)
    order = np.array(keys[:25], np.int64)
    records = tmp_path / "records"
    first = [job() for job in shard_jobs(work.take, order, tmp_path / "shards", 10, records)]

    def failing_take(keys: np.ndarray, batch_rows: int) -> Any:
        raise AssertionError("a recorded shard was written again")

    assert [job() for job in shard_jobs(failing_take, order, tmp_path / "shards", 10, records)] == first
    changed = order.copy()
    changed[[0, 1]] = changed[[1, 0]]
    again = [job() for job in shard_jobs(work.take, changed, tmp_path / "shards", 10, records)]
    assert again[0]["sha256"] != first[0]["sha256"] and again[1:] == first[1:]
    with open(tmp_path / first[2]["file"], "ab") as handle:
        handle.write(b"x")
    assert shard_jobs(work.take, changed, tmp_path / "shards", 10, records)[2]() == first[2]
    assert sha256_file(tmp_path / first[2]["file"]) == first[2]["sha256"]
    # Damaged in place (a failing disk): the same size, other bytes, also written again.
    shard = tmp_path / first[1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    shard.write_bytes(bytes(data))
    assert shard_jobs(work.take, changed, tmp_path / "shards", 10, records)[1]() == first[1]
    assert sha256_file(shard) == first[1]["sha256"]
