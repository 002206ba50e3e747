"""Where a build's independent tasks run: the embedded engine (this machine's processes, the default) or a Ray
cluster (`curate build --engine ray`).

The stages' logic is the same on both: an engine only runs tasks, which are plain functions of picklable
arguments (an input file to ingest, a batch of images to hash, a range of shard rows to write), and hands their
results back in the order asked. Every decision over the whole build (dedupe survivors, the mix, the shard order)
is taken by the driver over narrow columns, so the output does not depend on where or in which order tasks ran.
On Ray, a task whose worker dies is run again (`MAX_RETRIES`); tasks write under the build's `.partial` folder,
so the folder must be on storage every node sees (a shared file system; a local Ray shares this machine's).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from curation.errors import ClusterError, InputError
from curation.processes import worker_pool

ENGINES = ("embedded", "ray")
MAX_RETRIES = 3  # runs of a task whose worker died (an application error is not retried: it would fail again)


class Engine:
    """The embedded engine: tasks run in this machine's worker processes."""

    name = "embedded"

    def pool(self, workers: int) -> AbstractContextManager[Executor]:
        """An executor for `workers` tasks at once (processes here; Ray tasks on a cluster)."""
        return worker_pool(workers)

    def cpus(self, workers: int | None) -> int:
        """How many tasks run at once: `workers`, or every core."""
        return int(workers or os.cpu_count() or 1)

    @property
    def distributed(self) -> bool:
        return False

    def reset(self) -> None:
        """Forget the tasks recorded so far (a build starts)."""

    def share(self, value: Any) -> Any:
        """`value` as an argument for many tasks: on a cluster it is stored once and each node fetches it once."""
        return value

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class RayEngine(Engine):
    """Tasks run on a Ray cluster: the one at `address`, or a local one started for this build (`workers` CPUs)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--engine ray needs Ray: pip install 'rm-workbench[distributed]'") from None
        self.ray = ray
        self.address = address
        self.tasks: dict[str, list[tuple[float, str]]] = {}  # task kind -> (seconds, node) of each run
        self._lock = threading.Lock()
        if not ray.is_initialized():
            if address:
                _check_reachable(address)
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else (workers or os.cpu_count() or 1),
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=False,
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:  # Ray's message may run over lines: one
                raise InputError(f"--address {address}: cannot join the Ray cluster ({' '.join(str(exc).split())})"
                                 ) from None  # fmt: skip

    def pool(self, workers: int) -> AbstractContextManager[Executor]:
        return _ray_pool(self)

    def reset(self) -> None:
        with self._lock:
            self.tasks = {}

    def share(self, value: Any) -> Any:
        return self.ray.put(value)  # a task given the reference as an argument receives the value

    def record(self, kind: str, seconds: float, node: str) -> None:
        with self._lock:
            self.tasks.setdefault(kind, []).append((seconds, node))

    def cpus(self, workers: int | None) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    @property
    def distributed(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        """The engine, and per kind of task: how many ran, their seconds (total, longest) and on how many nodes."""
        with self._lock:
            tasks = {
                kind: {
                    "count": len(runs),
                    "seconds_total": round(sum(s for s, _ in runs), 3),
                    "seconds_max": round(max(s for s, _ in runs), 3),
                    "nodes": len({node for _, node in runs}),
                }
                for kind, runs in sorted(self.tasks.items())
            }
        return {"name": self.name, "ray_version": self.ray.__version__, "cpus": self.cpus(None), "tasks": tasks}


def make_engine(name: str, address: str | None = None, workers: int | None = None) -> Engine:
    if name == "embedded":
        if address is not None:
            raise InputError("--address is for --engine ray")
        return Engine()
    if name == "ray":
        return RayEngine(address, workers)
    raise InputError(f"--engine {name!r}: unknown; choose one of {', '.join(ENGINES)}")


def call(job: Callable[[], Any]) -> Any:
    """Run a prepared job (a `functools.partial`) as a task: `pool.submit(call, job)`."""
    return job()


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, str]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start, socket.gethostname()


def _kind(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    job = args[0] if fn is call and args else fn
    return getattr(getattr(job, "func", job), "__name__", "task").lstrip("_")


class _RayExecutor(Executor):
    """`concurrent.futures` over Ray tasks: a task's own exception comes back as itself (not wrapped), so an
    anticipated failure still reads as one `error:` line. Each task's time is recorded with the engine."""

    def __init__(self, engine: RayEngine) -> None:
        self.engine = engine
        self.refs: list[Any] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        ref = _remote(self.engine.ray).remote(fn, *args, **kwargs)  # shared values (`share`) as arguments
        self.refs.append(ref)
        future: Future[Any] = Future()
        kind = _kind(fn, args)

        def settle(done: Future[Any]) -> None:
            error = done.exception()
            if error is not None:
                future.set_exception(_task_error(self.engine.ray, kind, error))
                return
            result, seconds, node = done.result()
            self.engine.record(kind, seconds, node)
            future.set_result(result)

        ref.future().add_done_callback(settle)
        return future

    def cancel_all(self) -> None:
        for ref in self.refs:
            with contextlib.suppress(Exception):  # a finished task cannot be cancelled, which is fine
                self.engine.ray.cancel(ref, force=True)


def _task_error(ray: Any, kind: str, error: BaseException) -> BaseException:
    """A task's own exception as itself; the cluster failing to run it (a worker that died more often than
    retried, a lost node, out of memory) as one `ClusterError` line."""
    if isinstance(error, ray.exceptions.RayTaskError):
        return error.cause or error
    if isinstance(error, ray.exceptions.RayError):
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return ClusterError(f"Ray could not run task {kind} after {MAX_RETRIES} retries: {type(error).__name__}: "
                            f"{reason}")  # fmt: skip
    return error


def _check_reachable(address: str) -> None:
    """Fail at once on a cluster address nobody answers (`ray.init` would retry for ever)."""
    if address == "auto" or ("://" in address and not address.startswith("ray://")):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise InputError(f"--address {address}: no Ray cluster answers there ({exc})") from None


@functools.cache
def _remote(ray: Any) -> Any:
    return ray.remote(max_retries=MAX_RETRIES)(_timed)


@contextmanager
def _ray_pool(engine: RayEngine) -> Iterator[Executor]:
    executor = _RayExecutor(engine)
    try:
        yield executor
    except BaseException:
        executor.cancel_all()  # nothing of a failed build goes on running on the cluster
        raise
