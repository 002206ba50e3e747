"""The engine seam without a cluster: choosing an engine, and one `error:` line for what cannot work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curation.build import build
from curation.cli import app
from curation.engine import Engine, make_engine
from curation.errors import InputError
from curation.recipe import load_recipe


def test_the_default_engine_is_this_machine() -> None:
    engine = make_engine("embedded")
    assert type(engine) is Engine and not engine.distributed and engine.describe() == {"name": "embedded"}
    assert engine.cpus(3) == 3


def test_ray_engine_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    with pytest.raises(InputError, match=r"pip install 'rm-workbench\[distributed\]'"):
        make_engine("ray")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark"], "error: --engine 'spark': unknown; choose one of embedded, ray"),
        (["--address", "auto"], "error: --address is for --engine ray"),
        (["--stage", "somewhere"], "error: --stage is for an object store's --out"),
    ],
)
def test_cli_refuses_odd_engine_options(demo_recipe: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["build", "--mix", str(demo_recipe), "--out", str(tmp_path / "b"), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_stage_only_with_a_uri(demo_recipe: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--stage"):
        build(load_recipe(demo_recipe), tmp_path / "b", stage=tmp_path / "stage")


def test_an_unreachable_cluster_fails_at_once() -> None:
    pytest.importorskip("ray", reason="Ray is not installed")
    with pytest.raises(InputError, match=r"--address 127.0.0.1:1: no Ray cluster answers there"):
        make_engine("ray", "127.0.0.1:1")


def test_a_cluster_that_refuses_the_driver_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's own message may run over several lines: the error stays one line."""
    ray = pytest.importorskip("ray", reason="Ray is not installed")
    import curation.engine

    def refuse(**kwargs: object) -> None:
        raise ConnectionError("Could not connect.\n  Is the cluster up?\n  Check the address.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(curation.engine, "_check_reachable", lambda address: None)
    with pytest.raises(InputError) as refused:
        make_engine("ray", "http://x:1")
    assert str(refused.value) == ("--address http://x:1: cannot join the Ray cluster (Could not connect. Is the "
                                  "cluster up? Check the address.)")  # fmt: skip


def test_paths_given_to_tasks_are_absolute(demo_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks of a cluster run in other working folders: the builder hands them absolute paths."""
    from curation.build import Builder

    monkeypatch.chdir(tmp_path)
    builder = Builder(load_recipe(demo_recipe), Path("relative"), cache=Path("cache"))
    assert builder.out == tmp_path / "relative" and builder.tmp.is_absolute() and builder.cache == tmp_path / "cache"
