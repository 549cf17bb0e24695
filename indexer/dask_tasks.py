"""The plumbing of dask tasks shared by the distributed build and search: a task's result with
cluster failures made clear, user errors raised so they survive pickling, waiting for the first
of several futures, and per-process caches that threads of one worker share."""

from __future__ import annotations

import functools
import threading

from lookalike.errors import LookalikeError

_LOCK = threading.Lock()
_KEY_LOCKS: dict = {}


def task_result(future):
    """A task's result; failures of the cluster itself become one clear LookalikeError."""
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except LookalikeError:
        raise  # raised on the worker by the same code as on one machine; already clear
    except (KilledWorker, CommClosedError, OSError, TimeoutError) as exc:
        raise LookalikeError(f"a dask task failed on the cluster: {type(exc).__name__}: {exc}") from None


def wait_any(futures: list) -> None:
    """Block until the first of ``futures`` is done."""
    from distributed import wait

    wait(futures, return_when="FIRST_COMPLETED")


def clean_errors(fn):
    """Worker tasks raise a user error as a fresh copy: the original may chain a library
    exception that cannot be pickled (rasterio's), which dask would turn into a bare Exception."""

    @functools.wraps(fn)
    def task(*args, **kwargs):
        error = None
        try:
            return fn(*args, **kwargs)
        except LookalikeError as exc:
            error = type(exc)(str(exc))
        raise error

    return task


def cached_per_process(cache: dict, key, make):
    """``cache[key]``, made once per process even when tasks ask for it from several threads;
    one lock per key, so a slow load (a model, a shard's checksums) blocks only its own key."""
    if key in cache:
        return cache[key]
    with _LOCK:
        lock = _KEY_LOCKS.setdefault((id(cache), key), threading.Lock())
    with lock:
        if key not in cache:
            cache[key] = make()
        return cache[key]
