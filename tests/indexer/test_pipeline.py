"""The prefetching pipeline of index builds (``indexer.pipeline``)."""

from __future__ import annotations

import threading
import time

import pytest

from lookalike.indexer.pipeline import StageTimes, prefetch_chunks


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 40])
@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_gives_the_serial_chunks(n, depth):
    chunks = list(prefetch_chunks(range(n), 8, depth))
    assert [x for c in chunks for x in c] == list(range(n))
    assert all(len(c) == 8 for c in chunks[:-1]) and (not chunks or 1 <= len(chunks[-1]) <= 8)


def test_prefetch_runs_ahead_on_another_thread():
    """While the caller works on chunk 0, the next ones are being made (up to depth ahead)."""
    made = []

    def items():
        for i in range(40):
            made.append((i, threading.current_thread().name))
            yield i

    chunks = prefetch_chunks(items(), 4, depth=2)
    first = next(chunks)
    deadline = time.time() + 5
    while len(made) < 12 and time.time() < deadline:  # chunk 0 taken, 1 and 2 queued, 3 being made
        time.sleep(0.01)
    assert first == [0, 1, 2, 3] and 12 <= len(made) <= 16
    assert {name for _, name in made} == {"lookalike-prefetch"}
    assert sum(len(c) for c in chunks) == 36


def test_an_error_reaches_the_caller_after_the_chunks_before_it():
    def items():
        yield from range(10)
        raise OSError("the disk went away")

    seen = []
    with pytest.raises(OSError, match="disk went away"):
        for chunk in prefetch_chunks(items(), 4):
            seen.extend(chunk)
    assert seen == list(range(8))  # the partial chunk holding the failure is not handed out


def test_a_caller_that_stops_stops_the_thread():
    made = []

    def items():
        for i in range(10_000):
            made.append(i)
            yield i

    before = threading.active_count()
    chunks = prefetch_chunks(items(), 10, depth=2)
    next(chunks)
    chunks.close()  # what a break, an error or Ctrl-C in the caller does
    assert threading.active_count() == before
    assert len(made) <= 50  # a few chunks ahead, not the whole source


def test_bad_sizes_and_stage_times():
    with pytest.raises(ValueError):
        list(prefetch_chunks(range(3), 0))
    times = StageTimes()
    with times.timing("encode"):
        time.sleep(0.01)
    times.add("encode", 0.5)
    list(prefetch_chunks(range(5), 2, times=times, stage="read"))
    result = times.as_dict()
    assert result["encode"] >= 0.51 and "read" in result


def test_then_runs_on_the_background_thread_at_lower_priority():
    """Chunks are finished (``then``) where they are made, on a thread that yields its core to
    the encoder: a niceness above the caller's (Linux)."""
    import os

    seen = []

    def items():
        seen.append((threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        yield from range(10)

    def then(chunk):
        seen.append((threading.get_native_id(), None))
        return sum(chunk)

    assert list(prefetch_chunks(items(), 4, then=then)) == [6, 22, 17]
    caller = threading.get_native_id()
    assert all(thread != caller for thread, _ in seen)
    base = os.getpriority(os.PRIO_PROCESS, caller)
    assert seen[0][1] == min(19, base + 10)


def test_a_generator_left_half_way_is_closed_on_its_own_thread():
    closed = []

    def items():
        try:
            yield from range(100)
        finally:
            closed.append(threading.get_native_id())

    held = items()  # still referenced (as an error's traceback would): not collected
    chunks = prefetch_chunks(held, 4)
    next(chunks)
    chunks.close()  # the caller stops after one chunk
    assert closed and closed[0] != threading.get_native_id()
