"""Fault injection for the index writers: kills at write points, a full disk at the k-th write,
and the checks that an index came through whole. Shared by ``tests/indexer/test_faults.py`` and
``robustness/faults.py`` (a plain module, importable by name like ``lookalike_testkit``).

Write points. ``watch_writes(root, hook)`` patches the calls that change what is on disk under
``root`` -- ``os.replace`` (every commit of a file: chunk files, index files, the manifest),
``os.unlink`` and ``os.rmdir`` (clean-up, ``shutil.rmtree`` of the work folder) and ``os.fsync``
(a temporary file fully written, not yet renamed) -- and calls ``hook(point)`` just before and just
after each. A process killed with SIGKILL at a point leaves exactly the files as they are there
(the page cache survives a process kill), so

- ``snapshots`` runs a command in this process and copies the folder at every point: each copy
  is the disk a kill at that point would leave, to be opened and resumed from;
- ``kill_at_point`` runs the command in a child process (``lookalike`` plus this hook) that
  sends itself SIGKILL at the chosen point: the real thing;
- ``kill_after`` runs plain ``python -m lookalike`` and sends SIGKILL after a delay.

A full disk. ``disk_full(root, at=k)`` makes the k-th write to a file under ``root`` and every
write after it fail with ``OSError(ENOSPC)`` after writing half its bytes, as a disk that fills
up does; it covers Python file objects (``open``, ``Path.open``, ``os.fdopen``: numpy,
``atomic_write_bytes``) and Parquet files (pandas opens them with ``pyarrow.OSFile`` and writes
from C++; here they get a Python file instead). ``real_disk_full`` runs a command on a small tmpfs
in a private mount namespace (``unshare``), where the kernel itself says ENOSPC.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TESTS = Path(__file__).resolve().parent
KILL_ENV = "FAULTKIT_KILL_AT"  # the point number (``point_number``) for the child process
ROOT_ENV = "FAULTKIT_ROOT"


# ------------------------------------------------------------------ write points
@dataclass(frozen=True)
class Point:
    """One moment around a call that changes the disk: ``n`` counts calls from 0 in order."""

    n: int
    op: str  # replace | unlink | rmdir | fsync
    path: str  # relative to the watched root
    when: str  # before | after

    @property
    def label(self) -> str:
        return f"{self.when} {self.op} {self.path}"


def point_number(point: Point) -> int:
    """The child's numbering of a point: before and after each call are separate moments."""
    return 2 * point.n + (point.when == "after")


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _at(path, dir_fd=None) -> str | None:
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        base = _fd_path(dir_fd)
        return None if base is None else os.path.join(base, path)
    return os.path.abspath(path)


@contextlib.contextmanager
def watch_writes(root: str | Path, hook):
    """Call ``hook(Point)`` before and after every replace/unlink/rmdir/fsync under ``root``."""
    root = os.path.realpath(root)
    real = dict(replace=os.replace, unlink=os.unlink, remove=os.remove, rmdir=os.rmdir, fsync=os.fsync)
    counter = [0]
    busy = [False]  # the hook's own file operations are not write points

    def around(op, path, call):
        rel = None
        if path is not None and not busy[0]:
            full = os.path.realpath(path)
            if full == root or full.startswith(root + os.sep):
                rel = os.path.relpath(full, root)
        if rel is None:
            return call()
        n = counter[0]
        counter[0] += 1
        for when in ("before", "after"):
            if when == "after":
                result = call()
            busy[0] = True
            try:
                hook(Point(n, op, rel, when))
            finally:
                busy[0] = False
        return result

    def replace(src, dst, *a, **kw):
        return around("replace", _at(dst, kw.get("dst_dir_fd")), lambda: real["replace"](src, dst, *a, **kw))

    def unlink(path, *a, **kw):
        return around("unlink", _at(path, kw.get("dir_fd")), lambda: real["unlink"](path, *a, **kw))

    def rmdir(path, *a, **kw):
        return around("rmdir", _at(path, kw.get("dir_fd")), lambda: real["rmdir"](path, *a, **kw))

    def fsync(fd):
        fd_num = fd if isinstance(fd, int) else fd.fileno()
        return around("fsync", _fd_path(fd_num), lambda: real["fsync"](fd))

    os.replace, os.unlink, os.remove, os.rmdir, os.fsync = replace, unlink, unlink, rmdir, fsync
    try:
        yield counter
    finally:
        os.replace, os.unlink, os.remove, os.rmdir, os.fsync = (
            real["replace"],
            real["unlink"],
            real["remove"],
            real["rmdir"],
            real["fsync"],
        )


def write_points(root: str | Path, fn) -> tuple[list[Point], object]:
    """Run ``fn()`` and list every write point under ``root``; returns (points, fn's result)."""
    points: list[Point] = []
    with watch_writes(root, points.append):
        result = fn()
    return points, result


def folder_digest(path: Path) -> str:
    """sha256 over the names and contents of every file under ``path`` (a disk state)."""
    digest = hashlib.sha256()
    if path.exists():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def snapshots(root: Path, into: Path, fn) -> tuple[list[tuple[Point, Path]], object]:
    """Run ``fn()`` and copy ``root`` at every write point into ``into/NNNN``: the disk that a
    SIGKILL at that point would leave. Points that see the same disk share one copy. Returns
    ([(point, copy)] for every point in order, fn's result)."""
    taken: list[tuple[Point, Path]] = []
    seen: dict[str, Path] = {}

    def hook(point: Point) -> None:
        state = folder_digest(root)
        if state not in seen:
            copy = into / f"{len(seen):04d}"
            if root.exists():
                shutil.copytree(root, copy, symlinks=True)
            else:
                copy.mkdir(parents=True)
            seen[state] = copy
        taken.append((point, seen[state]))

    into.mkdir(parents=True, exist_ok=True)
    with watch_writes(root, hook):
        result = fn()
    return taken, result


def distinct(copies: list[tuple[Point, Path]]) -> list[tuple[Point, Path]]:
    """The first point of each distinct disk state."""
    out, seen = [], set()
    for point, copy in copies:
        if copy not in seen:
            seen.add(copy)
            out.append((point, copy))
    return out


# ------------------------------------------------------------------ SIGKILL in a child process
def child() -> None:
    """Entry point of ``kill_at_point``'s child: ``lookalike`` with a SIGKILL at one write point."""
    at = int(os.environ[KILL_ENV])

    def hook(point: Point) -> None:
        if point_number(point) == at:
            os.kill(os.getpid(), signal.SIGKILL)

    from lookalike.cli import main

    with watch_writes(os.environ[ROOT_ENV], hook):
        code = main(sys.argv[1:])
    sys.exit(code)


def _environment(env: dict | None) -> dict:
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = str(v)
    return full


@dataclass
class Killed:
    """How a child ended: ``killed`` is False when it exited by itself first."""

    killed: bool
    returncode: int
    stderr: str
    seconds: float


def listing(root: Path) -> list[tuple[str, int]]:
    """Names and sizes of everything under ``root`` (cheap: to notice that a write began)."""
    out = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                out.append((os.path.join(folder, name), os.stat(os.path.join(folder, name)).st_size))
    return sorted(out)


def _run(
    args: list[str], cwd: Path, env: dict, delay: float | None, timeout: float, watch: Path | None = None
) -> Killed:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if watch is not None and delay is not None:  # the delay counts from the first write
            before = listing(watch)
            while proc.poll() is None and listing(watch) == before and time.monotonic() - t0 < timeout:
                time.sleep(0.005)
        try:
            _, err = proc.communicate(timeout=timeout if delay is None else delay)
        except subprocess.TimeoutExpired:
            if delay is None:
                raise
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        return Killed(proc.returncode == -signal.SIGKILL, proc.returncode, err, time.monotonic() - t0)
    finally:
        if proc.poll() is None:  # never leave a child behind, whatever went wrong
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def kill_at_point(
    argv: list, root: Path, number: int, *, cwd: Path, env: dict | None = None, timeout: float = 300
) -> Killed:
    """Run ``lookalike ARGV`` in a child that SIGKILLs itself at write point ``number`` under
    ``root`` (``point_number``); ``killed`` is False when it finished before reaching it."""
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import faultkit; faultkit.child()"
    full = _environment(dict(env or {}, **{KILL_ENV: number, ROOT_ENV: root}))
    return _run([sys.executable, "-c", code, *map(str, argv)], cwd, full, None, timeout)


def kill_after(
    argv: list,
    delay: float,
    *,
    cwd: Path,
    env: dict | None = None,
    timeout: float = 300,
    watch: Path | None = None,
) -> Killed:
    """Run ``python -m lookalike ARGV`` and send it SIGKILL ``delay`` seconds after it started
    or, with ``watch``, after the first change under that folder (the first write)."""
    return _run(
        [sys.executable, "-m", "lookalike", *map(str, argv)], cwd, _environment(env), delay, timeout, watch
    )


# ------------------------------------------------------------------ a full disk
class _Full:
    def __init__(self, root: str, at: int | None):
        self.root, self.at, self.count, self.failed, self.paths = root, at, 0, 0, []

    def watched(self, path) -> bool:
        if path is None:
            return False
        return os.path.realpath(os.fsdecode(path)).startswith(self.root + os.sep)

    def write(self, raw, path, data):
        self.count += 1
        self.paths.append(os.path.relpath(os.path.realpath(path), self.root))
        if self.at is not None and self.count >= self.at:
            self.failed += 1
            view = memoryview(data).cast("B")
            raw.write(view[: len(view) // 2])
            raw.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(path))
        return raw.write(data)


class _FullFile:
    """A writable file whose writes go through ``_Full``; everything else is the real file's."""

    def __init__(self, raw, path, full: _Full):
        self._raw, self._path, self._full = raw, path, full

    def write(self, data):
        return self._full.write(self._raw, self._path, data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()

    def __iter__(self):
        return iter(self._raw)


@contextlib.contextmanager
def disk_full(root: str | Path, at: int | None = None):
    """Writes to files under ``root`` fail with ENOSPC from the ``at``-th on (1-based; None:
    count only). Yields the counter: ``count`` writes seen, ``failed`` writes refused,
    ``paths`` the file of each write (relative to ``root``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    full = _Full(os.path.realpath(root), at)
    real_open, real_fdopen, real_write_table = builtins.open, os.fdopen, pq.write_table
    real_osfile = pa.OSFile

    def writable(mode) -> bool:
        return isinstance(mode, str) and any(c in mode for c in "wax+")

    def open_(file, mode="r", *a, **kw):
        fh = real_open(file, mode, *a, **kw)
        if writable(mode) and not isinstance(file, int) and full.watched(file):
            return _FullFile(fh, os.fsdecode(file), full)
        return fh

    def fdopen(fd, mode="r", *a, **kw):
        fh = real_fdopen(fd, mode, *a, **kw)
        path = _fd_path(fd)
        if writable(mode) and full.watched(path):
            return _FullFile(fh, path, full)
        return fh

    def write_table(table, where, *a, **kw):
        if isinstance(where, (str, os.PathLike)) and full.watched(where):
            with open_(where, "wb") as fh:
                return real_write_table(table, fh, *a, **kw)
        return real_write_table(table, where, *a, **kw)

    def osfile(path, mode="r", *a, **kw):  # how pandas opens a Parquet file to write
        if writable(mode) and full.watched(path):
            return pa.PythonFile(open_(path, "wb"), mode="w")
        return real_osfile(path, mode, *a, **kw)

    builtins.open = io.open = open_
    os.fdopen, pq.write_table, pa.OSFile = fdopen, write_table, osfile
    try:
        yield full
    finally:
        builtins.open = io.open = real_open
        os.fdopen, pq.write_table, pa.OSFile = real_fdopen, real_write_table, real_osfile


def can_mount_tmpfs() -> bool:
    """Whether ``unshare`` gives this user a private mount namespace with a tmpfs."""
    if not shutil.which("unshare"):
        return False
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


VERIFY = r"""
import hashlib, json, sys
from lookalike.errors import LookalikeError
from lookalike.indexer.store import open_index
try:
    index = open_index(sys.argv[1], verify=True)
    print(json.dumps(dict(ok=True, generation=index.manifest["generation"], count=index.n,
                          codes=hashlib.sha256(index.codes.tobytes()).hexdigest(),
                          files=["manifest.json", *(f["name"] for f in index.manifest["files"].values())])))
except LookalikeError as exc:
    print(json.dumps(dict(ok=False, error=str(exc))))
"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def real_disk_full(
    index: Path, argv: list, free_bytes: int, *, mount: Path, env: dict | None = None, timeout: float = 300
) -> dict:
    """Copy ``index`` onto a tmpfs with about ``free_bytes`` left, run ``lookalike ARGV`` there
    (``{index}`` in ARGV stands for the copy), then open the copy with verification. Returns
    {returncode, stderr, after (the verification), files (names left in the copy)}."""
    mount.mkdir(parents=True, exist_ok=True)
    pages = sum(-(-p.stat().st_size // 4096) for p in index.rglob("*") if p.is_file())
    pages += -(-free_bytes // 4096)
    target, err = mount / index.name, mount.parent / f"{mount.name}.stderr"
    q = _quote
    args = " ".join(q(str(a).replace("{index}", str(target))) for a in argv)
    script = (
        f"mount -t tmpfs -o size={max(pages, 1) * 4096} tmpfs {q(str(mount))} && "
        f"cp -r {q(str(index))} {q(str(target))} && "
        f"{q(sys.executable)} -m lookalike {args} >/dev/null 2>{q(str(err))}; "
        f"echo \"rc=$?\"; sed 's/^/err: /' {q(str(err))}; "
        f"{q(sys.executable)} -c {q(VERIFY)} {q(str(target))}; "
        f"ls -A {q(str(target))} | sed 's/^/file: /'"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=_environment(env),
        timeout=timeout,
        cwd=mount.parent,
    )
    lines = done.stdout.splitlines()
    rc = next((int(line[3:]) for line in lines if line.startswith("rc=")), None)
    after = next((json.loads(line) for line in lines if line.startswith("{")), None)
    if rc is None or after is None:
        raise RuntimeError(f"tmpfs run failed:\n{done.stdout}\n{done.stderr}")
    return dict(
        returncode=rc,
        after=after,
        stderr="\n".join(line[5:] for line in lines if line.startswith("err: ")),
        files=[line[6:] for line in lines if line.startswith("file: ")],
    )


# ------------------------------------------------------------------ is the index whole?
def index_state(path: Path) -> dict:
    """What must survive, read through ``open_index(verify=True)``: codes bytes, tile table,
    landmark catalogue, count, generation."""
    from lookalike.indexer.store import open_index

    index = open_index(path, verify=True)
    return dict(
        codes=np.asarray(index.codes).tobytes(),
        tiles=index.tiles.copy(),
        landmarks=None if index.landmarks is None else index.landmarks.copy(),
        count=index.n,
        generation=int(index.manifest["generation"]),
    )


def differences(a: dict, b: dict, generation: bool = False) -> list[str]:
    """What differs between two ``index_state``s (codes byte for byte, tables with pandas)."""
    out = []
    if a["count"] != b["count"]:
        out.append(f"count {a['count']} != {b['count']}")
    if a["codes"] != b["codes"]:
        out.append("codes differ")
    for table in ("tiles", "landmarks"):
        x, y = a[table], b[table]
        if (x is None) != (y is None):
            out.append(f"{table}: only one index has them")
        elif x is not None:
            try:
                pd.testing.assert_frame_equal(x, y)
            except AssertionError as exc:
                out.append(f"{table} differ: {' '.join(str(exc).split())[:200]}")
    if generation and a["generation"] != b["generation"]:
        out.append(f"generation {a['generation']} != {b['generation']}")
    return out


def stray_files(path: Path) -> list[str]:
    """Entries of an index folder that its manifest does not list (temporary files, files of
    other generations, work folders); every entry when it has no manifest."""
    from lookalike.indexer.store import MANIFEST

    if not path.is_dir():
        return []
    keep = {MANIFEST}
    if (path / MANIFEST).is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            keep |= {f["name"] for f in json.loads((path / MANIFEST).read_text())["files"].values()}
    return sorted(p.name for p in path.iterdir() if p.name not in keep)
