"""Model files that ship inside the package (``weights/``; its README says how each was made)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def default_hash_path() -> Path:
    """The default hash model: a 128-bit learned code."""
    return WEIGHTS_DIR / "hash_default.npz"


def shipped_classifier_path(name: str) -> Path:
    """The shipped landmark classifier ``name`` (``hirise``, ``msl``)."""
    return WEIGHTS_DIR / f"classifier_{name}.npz"
