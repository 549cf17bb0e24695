"""Thumbnails made at index time: one JPEG per tile in a single file of the index.

Layout of a thumbnail file: the JPEG bytes of rows 0..N-1 back to back, then N + 1 offsets
(uint64, little-endian) where row i's bytes are ``[offsets[i], offsets[i+1])``, then N (uint64).
A lookup is two reads of a memory map, no decoding or resampling; files are concatenated for
appends by shifting the offsets.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lookalike.errors import IndexCorruptError

THUMB_SIZE = 96  # pixels per side of a stored thumbnail
QUALITY = 85


def jpeg_thumbnails(
    images: np.ndarray | Iterable[np.ndarray], size: int = THUMB_SIZE, quality: int = QUALITY
) -> list[bytes]:
    """JPEG bytes of each (H, W, 3) uint8 image, resized to ``size`` x ``size``."""
    from PIL import Image

    out = []
    for pixels in images:
        pixels = np.ascontiguousarray(pixels, np.uint8)
        if pixels.ndim == 3 and pixels.shape[2] == 3:  # straight from the buffer: twice as fast
            image = Image.frombuffer("RGB", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "RGB", 0, 1)
        else:
            image = Image.fromarray(pixels)
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


def write_thumbnails(path: Path, blobs: Iterable[bytes]) -> int:
    """Write a thumbnail file of ``blobs`` (one per row, in row order); returns the row count."""
    offsets = [0]
    with open(path, "wb") as fh:
        for blob in blobs:
            fh.write(blob)
            offsets.append(offsets[-1] + len(blob))
        fh.write(np.asarray(offsets, "<u8").tobytes())
        fh.write(np.asarray([len(offsets) - 1], "<u8").tobytes())
    return len(offsets) - 1


def iter_thumbnails(paths: Iterable[Path]) -> Iterable[bytes]:
    """Every thumbnail of these files, file after file (what an append or a build joins)."""
    for path in paths:
        store = ThumbnailFile(path)
        for row in range(store.count):
            yield store[row]


class ThumbnailFile:
    """Read access to a thumbnail file through a memory map."""

    def __init__(self, path: Path, expected: int | None = None):
        self.path = Path(path)
        try:
            # a plain array over the map: np.memmap's subclass hooks cost more than a lookup
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"{path}: the thumbnail file cannot be read ({exc})") from None
        size = len(self._map)
        count = int(self._map[-8:].view("<u8")[0]) if size >= 16 else -1
        table = 8 * (count + 2)
        if count < 0 or table > size or (expected is not None and count != expected):
            raise IndexCorruptError(
                f"{path}: the thumbnail file does not hold {expected if expected is not None else 'its'} rows"
            )
        self.count = count
        self._offsets = self._map[size - table : size - 8].view("<u8")
        if int(self._offsets[-1]) != size - table or np.any(np.diff(self._offsets.astype(np.int64)) < 0):
            raise IndexCorruptError(f"{path}: the thumbnail file's offsets are damaged")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, row: int) -> bytes:
        if not 0 <= row < self.count:
            raise IndexError(f"row {row} of {self.count}")
        return self._map[int(self._offsets[row]) : int(self._offsets[row + 1])].tobytes()
