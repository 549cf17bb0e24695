"""Overlapping the reading of tiles with their encoding: a bounded prefetch queue, and the time
each stage of a build took.

A build alternates two kinds of work: making tiles (reading and warping a raster through GDAL,
decoding JPEGs, cutting and converting pixels) and encoding them (ONNX Runtime or PyTorch). Both
release the GIL for most of their time, so a thread that makes the next chunk of tiles while the
caller encodes the current one keeps the encoder fed. The queue holds at most ``depth`` chunks,
so memory is bounded by the chunk size, never by the source.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any


class StageTimes:
    """Seconds spent per named stage, summed over calls (thread-safe)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    @contextmanager
    def timing(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {stage: round(s, 4) for stage, s in self.seconds.items()}


_DONE = object()
BACKGROUND_NICENESS = 10  # added to the process's own


def _lower_priority() -> None:
    """Let the calling thread yield its core to the encoder's threads: on 2 cores a tile maker
    at equal priority pre-empts them, and a batch then waits for its slowest thread."""
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness + BACKGROUND_NICENESS))
    except (AttributeError, OSError):  # not Linux, or not allowed: equal priority
        pass


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch_chunks(
    items: Iterable,
    size: int,
    depth: int = 2,
    times: StageTimes | None = None,
    stage: str = "read",
    then: Callable[[list], Any] | None = None,
) -> Iterator:
    """Lists of ``size`` items (the last one shorter) from ``items``, made on a background thread
    up to ``depth`` chunks ahead of the caller. The time spent making them goes to ``stage``.
    With ``then``, the caller receives ``then(chunk)``, also computed on the background thread.

    An exception in ``items`` is raised in the caller at the chunk where it happened; when the
    caller stops early (an error, Ctrl-C, ``break``) the thread stops at its next item.
    """
    if size < 1 or depth < 1:
        raise ValueError(f"size and depth must be at least 1, got {size} and {depth}")
    chunks: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                chunks.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        _lower_priority()
        iterator = None
        try:
            iterator = iter(items)
            while not stop.is_set():
                chunk, t0 = [], time.perf_counter()
                for item in iterator:
                    chunk.append(item)
                    if len(chunk) == size or stop.is_set():
                        break
                if times is not None:
                    times.add(stage, time.perf_counter() - t0)
                if chunk and not put(then(chunk) if then is not None else chunk):
                    return
                if len(chunk) < size:
                    break
            put(_DONE)
        except BaseException as exc:  # handed to the caller, who decides what it means
            put(_Failure(exc))
        finally:
            # a generator left half-way (the caller stopped) is closed here, on the thread that
            # ran it, not by the garbage collector on whichever thread comes next (a raster
            # reader then closes outside its GDAL environment)
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # the caller already has the error that stopped it
                    pass

    worker = threading.Thread(target=produce, name="lookalike-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            value = chunks.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.exc
            yield value
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                chunks.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()
