"""HiRISE v1 fine-tune variants on val -> benchmarks/results/finetune_variants.{md,json}.

    python benchmarks/finetune_variants.py [--data DIR] [--seeds 0 1 2]

Trains the shipped recipe (``lookalike train-classifier --finetune``: ``FinetuneConfig()``, cut
14, whole train split) from several seeds on one cached stem, and next to it what might make it
generalise to val's scenes: the seeds' ensemble (mean of their logits), and training on a second
cached copy of every image with random photometric and scale jitter (gamma, contrast,
brightness, a zoom to 65-100 % of the crop) beside the clean views. Each row: val accuracy (one
view), balanced accuracy, per-class recall, and accuracy/abstention at posterior >= 0.9 with the
temperature fitted on val (the shipped models' calibration). DIR holds ``hirise_v1/`` (default:
``$LOOKALIKE_DATA`` or ``../shared/data`` beside the checkout). Val logits are cached under
``$LOOKALIKE_CACHE``, so an interrupted run resumes at the first missing row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

THRESHOLD = 0.9


def jittered(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) uint8 crop zoomed to 65-100 % of its side at a random place, then gamma,
    contrast and brightness drawn at random: what another scene's stretch and scale look like."""
    from PIL import Image

    h, w = image.shape[:2]
    side = int(h * rng.uniform(0.65, 1.0))
    y, x = rng.integers(0, h - side + 1, 2)
    im = np.asarray(Image.fromarray(image[y : y + side, x : x + side]).resize((w, h), Image.BILINEAR))
    im = (im.astype(np.float32) / 255) ** np.exp(rng.uniform(-0.4, 0.4))
    mean = im.mean()
    im = (im - mean) * np.exp(rng.uniform(-0.4, 0.4)) + mean + rng.uniform(-0.1, 0.1)
    return (np.clip(im, 0, 1) * 255 + 0.5).astype(np.uint8)


def jittered_stem(root: Path, table, cut: int, seed: int = 7, batch: int = 64) -> np.ndarray:
    """Stem activations (N, 8, C, H, W) of one jittered copy of every image, all 8 views; cached."""
    import torch
    from tqdm.auto import tqdm

    from lookalike.config import features_dir
    from lookalike.indexer.defaults import ORIENTATIONS as VIEW_SETS
    from lookalike.indexer.encoding import dihedral_copy as dihedral_view
    from lookalike.indexer.encoding import images_to_tensor
    from lookalike.indexer.image_folders import load_image
    from lookalike.models.backbones import create_backbone
    from lookalike.models.finetune import stem

    path = features_dir() / f"finetune-variants-jitter-{cut}-{seed}-{len(table)}.npy"
    if path.is_file():
        return np.load(path)
    run, rng, parts = stem(create_backbone(), cut), np.random.default_rng(seed), []
    for s in tqdm(range(0, len(table), batch), desc="caching jittered stem activations", unit="batch"):
        images = np.stack([jittered(load_image(root / p, 224), rng) for p in table["path"][s : s + batch]])
        with torch.inference_mode():
            x = images_to_tensor(images, 224)
            parts.append(
                np.stack(
                    [run(dihedral_view(x, t, m)).to(torch.float16).numpy() for t, m in VIEW_SETS[8]], axis=1
                )
            )
    acts = np.concatenate(parts)
    np.save(path.with_suffix(".tmp.npy"), acts)
    path.with_suffix(".tmp.npy").replace(path)
    return acts


def scores(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """The project's classification figures, with the temperature fitted on these logits."""
    from lookalike.models.classifier import fit_temperature, softmax
    from lookalike.models.metrics import classification_metrics

    ids = np.searchsorted(classes, labels)
    temperature = fit_temperature(logits, ids)
    metrics = classification_metrics(labels, softmax(logits / temperature), list(classes), THRESHOLD)
    return dict(
        {
            k: metrics[k]
            for k in ("accuracy", "balanced_accuracy", "accuracy_at_threshold", "abstention_rate")
        },
        temperature=temperature,
        recall={c: metrics["per_class"][c]["recall"] for c in classes},
    )


def main(argv=None) -> int:
    from lookalike.config import features_dir
    from lookalike.indexer.features import stem_activations
    from lookalike.indexer.image_folders import read_labels
    from lookalike.models.backbones import create_backbone
    from lookalike.models.finetune import FinetuneConfig, finetune_tail, tail_logits

    env = os.environ.get("LOOKALIKE_DATA", "").strip()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=env or str(REPO.parent / "shared" / "data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jitter-seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "finetune_variants"))
    args = p.parse_args(argv)
    root = Path(args.data) / "hirise_v1"
    if not (root / "labels.csv").is_file():
        p.error(f"{root}/labels.csv not found")
    train = read_labels(root, root / "labels.csv", split="train")
    val = read_labels(root, root / "labels.csv", split="val")
    classes, ids = np.unique(train["label"].astype(str).to_numpy(), return_inverse=True)
    val_labels = val["label"].astype(str).to_numpy()
    cfg = FinetuneConfig()
    cut = 14
    acts = stem_activations(root, train, cut=cut, views=8)
    val_acts = stem_activations(root, val, cut=cut, views=8)[:, :1]  # the shipped model's one view

    def trained(tag: str, seed: int, activations: np.ndarray) -> tuple[np.ndarray, float]:
        settings = json.dumps([asdict(replace(cfg, cut=cut, seed=seed)), activations.shape, len(val)])
        digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
        cached = features_dir() / f"finetune-variants-{tag}-{digest}.npz"
        if cached.is_file():
            with np.load(cached) as z:
                return z["logits"], float(z["seconds"])
        t0 = time.perf_counter()
        model, _ = finetune_tail(
            activations, ids, len(classes), create_backbone(), replace(cfg, cut=cut, seed=seed)
        )
        logits = tail_logits(model, val_acts)[:, 0]
        seconds = time.perf_counter() - t0
        np.savez(cached, logits=logits, seconds=seconds)
        return logits, seconds

    rows = []
    plain = []
    for seed in args.seeds:
        logits, seconds = trained("plain", seed, acts)
        plain.append(logits)
        rows.append(
            dict(
                variant=f"shipped recipe, seed {seed}", seconds=seconds, **scores(logits, val_labels, classes)
            )
        )
    if len(plain) > 1:
        rows.append(
            dict(
                variant=f"ensemble of the {len(plain)} seeds above (mean logits)",
                seconds=None,
                **scores(np.mean(plain, axis=0), val_labels, classes),
            )
        )
    if args.jitter_seeds:
        both = np.concatenate([acts, jittered_stem(root, train, cut)], axis=1)
        for seed in args.jitter_seeds:
            logits, seconds = trained("jitter", seed, both)
            rows.append(
                dict(
                    variant=f"clean + jittered copies, seed {seed}",
                    seconds=seconds,
                    **scores(logits, val_labels, classes),
                )
            )

    out = Path(args.out)
    out.with_suffix(".json").write_text(
        json.dumps(dict(data="hirise_v1", split="val", n=len(val), threshold=THRESHOLD, rows=rows), indent=1)
    )
    intro = " ".join(__doc__.split("\n\n")[2].split())  # the docstring's description, one line
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [
        f"# HiRISE v1 fine-tune variants (val, {len(val)} crops)",
        "",
        f"Produced by `python benchmarks/finetune_variants.py`. {intro}",
        "",
        "| variant | accuracy | balanced | acc. at >= 0.9 | abstention | "
        + " | ".join(f"{c} recall" for c in classes)
        + " | training min |",
        "|---|" + "---:|" * (5 + len(classes)),
    ]
    for r in rows:
        took = f"{r['seconds'] / 60:.1f}" if r["seconds"] else ""
        lines.append(
            f"| {r['variant']} | {pct(r['accuracy'])} | {pct(r['balanced_accuracy'])} | "
            f"{pct(r['accuracy_at_threshold'])} | {pct(r['abstention_rate'])} | "
            + " | ".join(pct(r["recall"][c]) for c in classes)
            + f" | {took} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
