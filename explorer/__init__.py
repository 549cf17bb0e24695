"""The explorer: a Panel app over the search API (``lookalike serve``, or ``Explorer`` in a notebook)."""

from __future__ import annotations


def __getattr__(name: str):
    # imported when first asked for: ``lookalike.explorer.served`` and friends need no Panel
    if name == "Explorer":
        from lookalike.explorer.notebook import Explorer

        return Explorer
    raise AttributeError(f"module 'lookalike.explorer' has no attribute {name!r}")


__all__ = ["Explorer"]
