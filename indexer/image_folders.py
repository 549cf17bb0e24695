"""Folders of labelled image chips: a labels CSV (``path,label[,split][,...]``) and the image
files it names, read as RGB uint8 squares."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.errors import OptionError, SourceError


def read_labels(
    root: str | Path, labels_csv: str | Path, split: str | None = None, check_files: bool = True
) -> pd.DataFrame:
    """Rows of a labels CSV (``path,label[,split][,...]``, paths relative to ``root``).

    Raises a clear error for an empty CSV, missing columns, an unknown split, or rows whose
    image file does not exist (all of them are listed, up to ten).
    """
    root, labels_csv = Path(root), Path(labels_csv)
    if not labels_csv.is_file():
        raise SourceError(f"labels CSV {labels_csv} does not exist")
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise SourceError(f"labels CSV {labels_csv} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceError(f"labels CSV {labels_csv} cannot be parsed: {exc}") from None
    missing_cols = {"path", "label"} - set(table.columns)
    if missing_cols:
        raise SourceError(
            f"labels CSV {labels_csv} lacks column(s) {', '.join(sorted(missing_cols))}; "
            "expected path,label[,split][,...]"
        )
    if table.empty:
        raise SourceError(f"labels CSV {labels_csv} has a header but no rows")
    if split is not None:
        if "split" not in table.columns:
            raise SourceError(f"labels CSV {labels_csv} has no split column (asked for {split!r})")
        selected = table[table["split"] == split]
        if selected.empty:
            raise SourceError(
                f"labels CSV {labels_csv} has no rows with split {split!r} "
                f"(splits: {_names(sorted(table['split'].unique()))})"
            )
        table = selected
    if check_files:
        exists = np.array([(root / p).is_file() for p in table["path"]])
        if not exists.all():
            bad = table["path"][~exists].tolist()
            raise SourceError(
                f"{len(bad)} row(s) of {labels_csv} point at missing files under {root}: {_names(bad)}"
            )
    return table.reset_index(drop=True)


def _names(values: list[str], limit: int = 10) -> str:
    """Values of a CSV for a message: the first ``limit``, on one line (line breaks and other
    unprintable characters escaped)."""
    shown = [v if v.isprintable() else repr(v) for v in values[:limit]]
    return ", ".join(shown) + (" ..." if len(values) > limit else "")


def load_image(path: str | Path, size: int) -> np.ndarray:
    """An image file as RGB uint8 (size, size, 3); grey is repeated to three channels.

    Images of more pixels than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``,
    about 89 million) are refused before they are decoded.
    """
    from PIL import Image

    if size < 1:
        raise OptionError(f"image size must be at least 1 pixel, got {size}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's complaints about metadata
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise SourceError(f"cannot read image {path}: {exc.strerror}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SourceError(
            f"image {path} declares more than {Image.MAX_IMAGE_PIXELS} pixels; refusing to decode it"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file makes Pillow raise many kinds
        raise SourceError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
