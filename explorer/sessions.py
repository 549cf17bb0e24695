"""What a browser session brings and leaves behind: the parameters of its link, and the memory of
closed sessions, handed back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading

import panel as pn

URL_KEYS = (
    "body",
    "index",
    "view",
    "tile",
    "k",
    "zones",
    "from",
    "to",
    "bbox",
    "pos",
    "neg",
    "examples",
    "regions",
    "classes",
    "conf",
    "min_n",
)


def session_params() -> dict[str, str]:
    """The page's query-string parameters (first value of each)."""
    args = pn.state.session_args or {}
    out = {}
    for key in URL_KEYS:
        values = args.get(key)
        if values:
            value = values[0]
            out[key] = value.decode() if isinstance(value, bytes) else str(value)
    return out


RELEASE_DELAY_S = 2.0  # closed sessions dropped within this time share one collection


class MemoryRelease:
    """Collect dropped sessions' objects and hand the freed heap back to the system (glibc keeps
    it otherwise, so a server's RSS would only ever grow). A full collection of this heap takes
    a tenth of a second or more and holds every session up meanwhile, so the sessions dropped
    within ``RELEASE_DELAY_S`` of each other share one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __call__(self, session_context) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(RELEASE_DELAY_S, self._run)
                self._timer.daemon = True
                self._timer.start()

    def _run(self) -> None:
        with self._lock:
            self._timer = None
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)


release_memory = MemoryRelease()


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc: nothing to trim
        return None


_LIBC = _load_libc()
