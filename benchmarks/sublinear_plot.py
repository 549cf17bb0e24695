"""Recall@k against speed-up over the exact scan, from ``lookalike bench sublinear`` JSON files.

    python benchmarks/sublinear_plot.py benchmarks/results/sublinear.json [MORE.json ...] --out curve.png

One line per (N, code set, method): the settings of the method's search option in order, so a
line is the method's whole trade-off curve. The goal region (recall >= 0.95 and >= 10x the
scan) is shaded; ``--filtered`` plots the same settings under the run's filter instead.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves(result: dict, filtered: bool = False) -> dict[str, list[tuple[float, float]]]:
    """(N, codes, method) label -> [(recall, speed-up)] in the order the settings were run."""
    prefix = "filtered_" if filtered else ""
    out: dict[str, list[tuple[float, float]]] = {}
    for run in result["runs"]:
        for setting, entry in run["methods"].items():
            if f"{prefix}recall" not in entry:
                continue
            family = re.sub(r"-(ef|nprobe|nflip)\d+$", "", setting)
            label = f"{run['n'] / 1e6:g} M, {run['codes']}: {family}"
            out.setdefault(label, []).append((entry[f"{prefix}recall"], entry[f"{prefix}speedup"]))
    return out


def plot(
    results: list[dict],
    out: Path,
    filtered: bool = False,
    recall_bar: float = 0.95,
    speedup_bar: float = 10.0,
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.fill_between(
        [recall_bar, 1.0],
        speedup_bar,
        1000,
        color="tab:green",
        alpha=0.12,
        label=f"goal: recall >= {recall_bar}, >= {speedup_bar:g}x the scan",
    )
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.text(0.02, 1.05, "the exact scan", color="grey", fontsize=8, transform=ax.get_yaxis_transform())
    for result in results:
        for label, points in curves(result, filtered).items():
            recall, speedup = zip(*points)
            ax.plot(recall, speedup, marker="o", ms=3.5, label=label)
    ax.set_yscale("log")
    ax.set_ylim(0.01, 50)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel(f"recall@{results[0]['k']} (share of the exact top-k distances)")
    ax.set_ylabel("speed-up over the exact scan, one query at a time (log)")
    ax.set_title(
        ("under a 10 % filter: " if filtered else "")
        + f"{results[0]['bits']}-bit realistic codes, k = {results[0]['k']}, 2 CPU cores"
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--filtered", action="store_true")
    args = parser.parse_args(argv)
    plot([json.loads(p.read_text()) for p in args.results], args.out, filtered=args.filtered)
    print(args.out)


if __name__ == "__main__":
    main()
