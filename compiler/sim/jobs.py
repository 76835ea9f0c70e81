"""Independent measurements in parallel: a local process pool, or a Ray cluster; the same results as serial.

A job is `function(model, shared, part)`: the model and `shared` (data,
target, options) reach each worker once, the parts are what differs. Every
random draw is keyed by what it measures (seed, draw, layer), never by the
worker, and results come back in the order of the parts, so any split
gives the serial result. Workers share the machine's cores: each
onnxruntime session in a pool of N uses cores / N threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.graph.modelio import read_model, save_model_atomic

PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent ends
SESSION_THREADS = 0  # onnxruntime's intra-op threads per session (0: one per core); a pool's worker takes its share


@dataclass(frozen=True)
class Workers:
    """Where measurements run: `count` local processes (1: this one), or the Ray cluster at `ray_address`."""

    count: int = 1
    ray_address: str | None = None
    serial_below_bytes: int = 8 << 20  # a local pool costs seconds to start: smaller models run serially

    @property
    def parallel(self) -> bool:
        return self.ray_address is not None or self.count > 1

    def even(self, jobs: int) -> bool:
        """Whether `jobs` of equal cost share out evenly among local workers (a cluster takes any number).

        Unevenly, the busiest worker runs more of them than a fair share, on fewer threads: ResNet-50's 3
        draws on 2 workers took 24-32 s a mapping against 19 s in one process of 2 threads.
        """
        return self.ray_address is not None or jobs % min(self.count, jobs) == 0


def default_worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_parts(function: Callable, model: ir.Model, shared, parts: list, workers: Workers) -> list:
    """[function(model, shared, part) for part in parts], on `workers`."""
    if not workers.parallel or len(parts) <= 1:
        return [function(model, shared, part) for part in parts]
    if workers.ray_address is None and weight_bytes(model) < workers.serial_below_bytes:
        return [function(model, shared, part) for part in parts]
    if workers.ray_address is not None:
        return _map_ray(function, ir.to_proto(model).SerializeToString(), shared, parts, workers)
    count = min(workers.count, len(parts))
    threads = max(1, default_worker_count() // count)
    with _model_file(model) as path:
        context = multiprocessing.get_context("spawn")  # no fork of onnxruntime's or torch's threads
        initargs = (str(path), shared, threads, os.getpid())
        with ProcessPoolExecutor(count, context, initializer=_start, initargs=initargs) as pool:
            try:
                return list(pool.map(_run, [function] * len(parts), parts))
            except BaseException:  # stopped (an error, Ctrl-C, SIGTERM): leaving the pool would wait for its parts
                for process in multiprocessing.active_children():
                    process.terminate()
                raise


@contextlib.contextmanager
def _model_file(model: ir.Model):
    """The model saved for the pool's workers to read (a weight at a time: no serialised copy of it here).

    On Linux the file is unlinked as soon as it is written and read through this process's descriptor, so
    nothing stays in the temporary folder however this process ends, killed (out of memory) included.
    """
    descriptor, name = tempfile.mkstemp(prefix="hetmap-workers-", suffix=".onnx")
    os.close(descriptor)
    path = Path(name)
    try:
        save_model_atomic(model, path)
        if not sys.platform.startswith("linux"):
            yield path
            return
        with open(path, "rb") as handle:
            path.unlink()
            yield Path(f"/proc/{os.getpid()}/fd/{handle.fileno()}")
    finally:
        path.unlink(missing_ok=True)


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


_worker: dict = {}


def _start(path: str, shared, threads: int, parent: int) -> None:
    global SESSION_THREADS
    _end_with(parent)
    SESSION_THREADS = threads
    _worker["model"] = read_model(Path(path))
    _worker["shared"] = shared
    gc.freeze()  # the model and shared data live as long as the worker: its measurements' collections skip them


def _end_with(parent: int) -> None:
    """Have the kernel end this worker when `parent` ends, however it ends (Linux; elsewhere the pool's own care)."""
    if not sys.platform.startswith("linux"):
        return
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before the request took hold
        os._exit(1)


def _run(function: Callable, part):
    return function(_worker["model"], _worker["shared"], part)


def _map_ray(function: Callable, payload: bytes, shared, parts: list, workers: Workers) -> list:
    try:
        import ray
    except ImportError:
        raise HetmapError("--ray needs Ray: pip install 'hetmap[ray]'") from None
    if not ray.is_initialized():
        address = None if workers.ray_address == "local" else workers.ray_address
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    model_ref, shared_ref = ray.put(payload), ray.put(shared)
    task = ray.remote(_ray_task)
    return ray.get([task.remote(function, model_ref, shared_ref, part) for part in parts])


def _ray_task(function: Callable, payload: bytes, shared, part):
    global SESSION_THREADS
    SESSION_THREADS = 1
    return function(ir.serde.deserialize_model(onnx.load_from_string(payload)), shared, part)


def split(items: list, count: int) -> list[list]:
    """Items dealt round-robin into at most `count` parts (long and short jobs mixed in each)."""
    count = max(1, min(count, len(items)))
    return [items[index::count] for index in range(count)]
