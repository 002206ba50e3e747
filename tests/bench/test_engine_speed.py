"""The projection of `bench.engine_speed`: task work spread over the cluster, the driver's share on the head."""

from bench.engine_speed import project


def test_projection_spreads_tasks_and_bounds_the_driver() -> None:
    run = {
        "engine": {"cpus": 2, "tasks": {"ingest_file": {"seconds_total": 40.0}, "write_shard": {"seconds_total": 4.0}}},
        "timings": {"total_seconds": 60.0, "ingest": 30.0, "near_dedupe": 10.0, "write": 20.0},
    }
    lines = project(run, 1_000, 100_000, cluster_cpus=100, head_cores=20)
    # ingest: 40 task CPU-s x 100 / 100 CPUs = 40 s; driver 30 - 40 / 2 = 10 s x 100 = 1000 s, / 10 ideally:
    # 140 s to 1040 s.
    assert lines[0] == "| ingest | 30.0 | 40.0 | 10.0 | 2.3 - 17.3 |"
    # near_dedupe ran no tasks here: all of it is the driver's.
    assert lines[1] == "| near_dedupe | 10.0 | 0.0 | 10.0 | 1.7 - 16.7 |"
    # write: 20 - 4 / 2 = 18 s on the driver.
    assert lines[2] == "| write | 20.0 | 4.0 | 18.0 | 3.1 - 30.1 |"
    assert lines[3].startswith("| **total** | 60.0 |") and lines[3].endswith("**7 - 64** |")
