import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from curation.demo import run_demo


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_writes_and_ingests_every_source_with_its_planted_problems(tmp_path: Path) -> None:
    results = {target.name: summary for target, summary in run_demo(tmp_path / "a")}
    assert sorted(results) == ["hh_rlhf", "mm_rlhf", "rlaif_v", "ultrafeedback", "vl_rewardbench"]
    assert all(s.balanced for s in results.values())
    assert dict(results["rlaif_v"].rejects_by_reason) == {"image undecodable": 1}
    assert dict(results["mm_rlhf"].rejects_by_reason) == {"image not found": 1}
    assert dict(results["hh_rlhf"].rejects_by_reason) == {"malformed json": 1}
    assert results["ultrafeedback"].ties == 1
    pairs = pq.read_table(tmp_path / "a" / "ingest" / "mm_rlhf" / "pairs.parquet").to_pylist()
    assert sorted({p["modality"] for p in pairs}) == ["image", "video"]
    video = next(p for p in pairs if p["modality"] == "video")
    assert len(video["images"]) == 3
    # The same demo twice gives the same bytes, native files and ingested parquet alike.
    run_demo(tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
