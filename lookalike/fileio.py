"""Crash-safe file writes and checksums, shared by the index store and the model files."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import secrets
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename;
    returns the sha256 of what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # like mkstemp, but with the ordinary 0666 & ~umask mode (mkstemp's is 0600, which would
    # make the committed file private to its writer)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make the renames and new names in ``folder`` durable: a rename lives in the folder's
    own data, which a power cut can lose even after the file itself was synced."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform or file system without directory handles: nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename itself stands
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


CHECKSUM = "xxh3_128"  # what new manifests record; "sha256" (earlier indexes) is still verified
_READ_BLOCK = 1 << 24


def checksum_file(path: Path, algorithm: str = CHECKSUM) -> str:
    """The hex digest of a file by ``algorithm`` ("xxh3_128" or "sha256"), read in blocks.

    xxh3_128 hashes at memory speed (about 9 GB/s a core against 1.2 GB/s for sha256 on a 2-core
    AMD EPYC), so verifying a large index costs reading its files rather than hashing them; it
    guards against partial, altered and corrupted files, not against an adversary who can write
    the manifest too."""
    if algorithm == "sha256":
        return sha256_file(path)
    if algorithm != "xxh3_128":
        raise ValueError(f"unknown checksum {algorithm!r}")
    import xxhash

    digest = xxhash.xxh3_128()
    buffer = bytearray(_READ_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while size := fh.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def checksums_of(entry: dict) -> dict[str, str]:
    """The checksums a manifest file entry records, by algorithm."""
    return {algorithm: str(entry[algorithm]) for algorithm in ("xxh3_128", "sha256") if algorithm in entry}


class _WriteOnly:
    """A file seen through its ``write`` alone (see ``save_npy``)."""

    def __init__(self, fh):
        self.write = fh.write


def save_npy(path: Path, array) -> None:
    """``np.save`` to ``path`` with every byte going through ``write``, so that a full disk
    raises OSError with its errno (ENOSPC). numpy's fast path for real files, ``tofile``,
    reports a short write as an OSError without one ("N requested and M written"), which
    reads as a crash, not as "no space left on device"."""
    import numpy as np

    with open(path, "wb") as fh:
        np.save(_WriteOnly(fh), array, allow_pickle=False)


def map_for_random_reads(path: Path) -> mmap.mmap:
    """``path`` memory-mapped read-only, with the kernel told that reads will be scattered
    (``MADV_RANDOM``): a page read from disk is the page asked for, not the 128 KB around it.
    A search reads its k hit rows from files of gigabytes; with read-around, each row of each
    column would bring 32 pages into the page cache and into the reader's resident memory.
    ValueError for an empty file (nothing to map)."""
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_RANDOM"):  # Linux and most Unixes
        mapped.madvise(mmap.MADV_RANDOM)
    return mapped


def load_npy_for_random_reads(path: Path):
    """The array of an ``.npy`` file as a read-only view of ``map_for_random_reads``, as
    ``np.load(path, mmap_mode="r")`` gives it but for scattered reads. ValueError when the file
    is not a plain ``.npy`` array."""
    import numpy as np

    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version} is not mapped here")
        formats = np.lib.format
        read = formats.read_array_header_1_0 if version == (1, 0) else formats.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError("an array of Python objects cannot be mapped")
    count = int(np.prod(shape, dtype=np.int64))
    mapped = map_for_random_reads(path) if count else b""
    array = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset if count else 0)
    return array.reshape(shape, order="F" if fortran else "C")


@contextlib.contextmanager
def reading_through(mapped: mmap.mmap):
    """Within the block, ``mapped`` (of ``map_for_random_reads``) is read from start to end:
    read-ahead is asked for, and scattered reads are announced again afterwards."""
    advise = hasattr(mapped, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL")
    if advise:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
    try:
        yield
    finally:
        if advise:
            mapped.madvise(mmap.MADV_RANDOM)


def release_pages(mapped: mmap.mmap) -> None:
    """Unmap the pages of ``mapped`` from this process: they stay in the system's page cache
    (a later read of them is a minor fault) but no longer count as this process's memory. For a
    map read as a window, its rows copied out: a server that takes scattered rows from a table
    of gigabytes would otherwise come to hold most of it as resident pages."""
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)
