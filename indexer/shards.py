"""Sharded indexes on disk: N ordinary index directories of contiguous rows and a checksummed
``shards.json`` written last, so a crash never leaves a shard set that loads half-written."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.errors import IndexCorruptError, LookalikeError
from lookalike.fileio import atomic_write_bytes, sha256_file
from lookalike.indexer.store import MANIFEST, read_manifest, write_index

SHARD_MANIFEST = "shards.json"


SHARD_FORMAT = "lookalike-shards"


# ------------------------------------------------------------------ shards on disk
def _body_sha256(body: dict) -> str:
    text = json.dumps({k: v for k, v in body.items() if k != "sha256"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_shards(
    out: str | Path,
    codes: np.ndarray,
    tiles: pd.DataFrame,
    n_shards: int,
    *,
    bits: int,
    hash_model: bytes,
    info: dict | None = None,
) -> Path:
    """Split an index into ``n_shards`` ordinary index directories of contiguous rows
    (``shard-000``, ...) and commit them with a checksummed ``shards.json`` written last."""
    out = Path(out)
    if (out / SHARD_MANIFEST).exists():
        raise LookalikeError(f"{out} already holds a sharded index; choose another --out")
    if len(codes) == 0:
        raise LookalikeError("cannot shard an empty index")
    n_shards = max(1, min(int(n_shards), len(codes)))
    for stale in out.glob("shard-*"):  # left by a write that never reached its shards.json
        shutil.rmtree(stale)
    edges = np.linspace(0, len(codes), n_shards + 1).round().astype(int)
    entries = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        path = out / f"shard-{i:03d}"
        write_index(
            path,
            codes[lo:hi],
            tiles.iloc[lo:hi].reset_index(drop=True),
            bits=bits,
            hash_model=hash_model,
            info=dict(info or {}, shard=dict(index=i, of=n_shards, offset=int(lo))),
        )
        entries.append(
            dict(
                path=path.name,
                offset=int(lo),
                count=int(hi - lo),
                manifest_sha256=sha256_file(path / MANIFEST),
            )
        )
    body = dict(format=SHARD_FORMAT, format_version=1, bits=int(bits), count=int(len(codes)), shards=entries)
    body["sha256"] = _body_sha256(body)
    atomic_write_bytes(out / SHARD_MANIFEST, json.dumps(body, indent=2).encode())
    return out


def is_sharded(path: str | Path) -> bool:
    path = Path(path)
    return path.name == SHARD_MANIFEST and path.is_file() or (path / SHARD_MANIFEST).is_file()


@dataclass(frozen=True)
class Shard:
    path: str  # an index directory, as the workers see it
    offset: int  # global row of its first tile
    count: int
    manifest_sha256: str


def read_shards(path: str | Path) -> tuple[list[Shard], int]:
    """The shards of a shard manifest (or of the folder holding one) and the code length;
    refuses a manifest that fails its checksum or whose shards were rewritten since."""
    path = Path(path)
    mpath = path if path.name == SHARD_MANIFEST else path / SHARD_MANIFEST
    if not mpath.is_file():
        raise IndexCorruptError(f"{path} has no {SHARD_MANIFEST}: not a sharded index")
    try:
        body = json.loads(mpath.read_text())
        if body.get("format") != SHARD_FORMAT or body.get("sha256") != _body_sha256(body):
            raise IndexCorruptError(f"{mpath} fails its checksum or is not a shard manifest")
        shards = [
            Shard(str(mpath.parent / e["path"]), int(e["offset"]), int(e["count"]), str(e["manifest_sha256"]))
            for e in body["shards"]
        ]
        bits = int(body["bits"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexCorruptError(f"{mpath} is not a valid shard manifest ({exc!r})") from None
    for s in shards:
        manifest = Path(s.path) / MANIFEST
        if not manifest.is_file() or sha256_file(manifest) != s.manifest_sha256:
            raise IndexCorruptError(f"shard {s.path} is missing or was changed after {mpath} was written")
    return shards, bits


def shards_of_dirs(dirs: list[str | Path]) -> tuple[list[Shard], int]:
    """Shards for plain index directories taken in this order (row offsets add up)."""

    shards, offset, bits = [], 0, set()
    for d in dirs:
        m = read_manifest(d)
        shards.append(Shard(str(Path(d)), offset, int(m["count"]), sha256_file(Path(d) / MANIFEST)))
        offset += int(m["count"])
        bits.add(int(m["bits"]))
    if len(bits) != 1:
        raise LookalikeError(f"the shards hold codes of different lengths: {sorted(bits)}")
    return shards, bits.pop()
