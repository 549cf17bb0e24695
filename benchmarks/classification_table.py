"""Validation table of the shipped classifiers, against earlier models
-> benchmarks/results/classification.md.

    python benchmarks/classification_table.py [--data DIR] [--split val] [--threshold 0.9]
        [--baseline hirise=OLD.npz --baseline msl=OLD.npz]

DIR holds ``hirise_v1/`` and ``msl_curiosity/`` (default: ``$LOOKALIKE_DATA`` or ``../shared/data``
beside the checkout). A ``--baseline`` is another model file for that data set (e.g. the previous
shipped model, ``git show REV:data/weights/classifier_hirise.npz > old.npz``); both are scored
on the same split and timed on the same crops in this run: milliseconds per crop through the
path users run (``classifier_encoder``: backbone, fine-tuned tail, test-time views), and for a
fine-tuned model, the same model averaging over all 8 rotations/flips. Test splits are held back: report val.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = [("hirise", "hirise_v1", "HiRISE v1 landmarks"), ("msl", "msl_curiosity", "MSL Curiosity surface")]
PAPER = {  # the paper's test-set figures (Wagstaff et al.), for reference only
    "hirise": "90.6% (94.5% at posterior >= 0.9, 13% abstention)",
    "msl": "66.7% (84.0% at posterior >= 0.9, 52% abstention)",
}
TIMED_CROPS = 64


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def describe(model) -> str:
    meta = model.meta
    if model.tail:
        cfg = meta.get("config", {})
        secs = meta.get("training", {})
        took = secs.get("seconds")
        return (
            f"fine-tuned trunk modules {model.cut}+ and a linear head, {cfg.get('epochs')} epochs, "
            f"balance {cfg.get('balance')}, test-time views {model.views}"
            + (f", trained in {took / 60:.1f} min" if took else "")
        )
    cfg = meta.get("config", {})
    head = "linear probe" if not cfg.get("hidden") else f"MLP probe ({cfg['hidden']} hidden)"
    return f"{head} on frozen features, {cfg.get('views', 0)} augmented views"


def ms_per_crop(model, images: np.ndarray) -> float:
    """Median over 3 runs of encoding and classifying ``images``, in ms per crop."""
    from lookalike.indexer.encoding import classifier_encoder

    encoder = classifier_encoder(model, batch_size=32)
    model.predict_proba(encoder.features(images[:4]))  # export/load the runtime first
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.predict_proba(encoder.features(images))
        runs.append(time.perf_counter() - t0)
    return 1000 * float(np.median(runs)) / len(images)


def with_views(model, views: int):
    """The same model averaging its logits over ``views`` rotations/flips."""
    from lookalike.models.classifier import ProbeClassifier

    return ProbeClassifier(
        model.classes,
        model.mean,
        model.std,
        model.weights,
        model.biases,
        model.temperature,
        model.backbone,
        model.image_size,
        model.meta,
        views=views,
        tail=model.tail,
        cut=model.cut,
    )


def main(argv=None) -> int:
    from lookalike.indexer.image_folders import load_image, read_labels
    from lookalike.models.classifier import load_classifier
    from lookalike.workflows.evaluation import evaluate_classifier

    env = os.environ.get("LOOKALIKE_DATA", "").strip()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=env or str(REPO.parent / "shared" / "data"))
    p.add_argument("--split", default="val")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="an earlier model file to compare with the shipped model NAME",
    )
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "classification.md"))
    args = p.parse_args(argv)
    baselines = dict(b.split("=", 1) for b in args.baseline)
    out = Path(args.out)
    t = args.threshold
    overview = [
        f"| data | model | n | accuracy | accuracy at >= {t} | abstention at {t} | balanced accuracy "
        "| NLL | ECE | T | ms per crop | paper (test) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    sections, saved = [], {}
    for name, folder, title in DATASETS:
        root = Path(args.data) / folder
        if not (root / "labels.csv").is_file():
            print(f"skipping {name}: {root}/labels.csv not found", file=sys.stderr)
            continue
        table = read_labels(root, root / "labels.csv", split=args.split)
        crops = np.stack([load_image(root / f, 224) for f in table["path"][:TIMED_CROPS]])
        candidates = [("shipped", name)] + ([("baseline", baselines[name])] if name in baselines else [])
        results = {}
        for label, spec in candidates:
            model = load_classifier(spec)
            png = (
                out.parent
                / f"classification_{name}_{args.split}{'' if label == 'shipped' else '_' + label}.png"
            )
            r = evaluate_classifier(
                spec, root, root / "labels.csv", split=args.split, threshold=t, plot=png, progress=False
            )
            r["ms_per_crop"] = ms_per_crop(model, crops)
            if model.tail:  # what test-time augmentation over all 8 rotations/flips would cost
                r["ms_per_crop_8_views"] = ms_per_crop(with_views(model, 8), crops)
            r["description"], r["png"] = describe(model), png.name
            results[label] = r
            timing = f"{r['ms_per_crop']:.1f}" + (
                f" ({r['ms_per_crop_8_views']:.1f} with 8 views)" if "ms_per_crop_8_views" in r else ""
            )
            overview.append(
                f"| {title} | {label}: {r['description']} | {r['n']} | {_pct(r['accuracy'])} | "
                f"{_pct(r['accuracy_at_threshold'])} | {_pct(r['abstention_rate'])} | "
                f"{_pct(r['balanced_accuracy'])} | {r['nll']:.3f} | {r['ece']:.3f} | "
                f"{r['temperature']:.2f} | {timing} | {PAPER[name]} |"
            )
            cross = model.meta.get("calibration_cross_fitted")
            if cross and model.meta.get("calibration", {}).get("split") == args.split:
                # the temperature came from this split: show the honest, cross-fitted figures too
                r["cross_fitted"] = cross
                overview.append(
                    f"| {title} | {label}, temperature cross-fitted on {args.split} halves | {r['n']} "
                    f"| {_pct(r['accuracy'])} | {_pct(cross['accuracy_at_threshold'])} | "
                    f"{_pct(cross['abstention_rate'])} | {_pct(r['balanced_accuracy'])} | "
                    f"{cross['nll']:.3f} | {cross['ece']:.3f} | "
                    f"{' / '.join(f'{t:.2f}' for t in cross['temperatures'])} | | |"
                )
        # the JSON names files, not where they sat on the machine that ran this
        saved[name] = {
            k: {**{f: v for f, v in r.items() if f not in ("curve", "plot")}, "model": Path(r["model"]).name}
            for k, r in results.items()
        }
        labels = list(results)
        head = " | ".join(
            f"{lab} {col}" for col in ("recall", f"acc. at >= {t}", f"abstention at {t}") for lab in labels
        )
        rows = [
            f"### {title} ({args.split})",
            "",
            *[
                f"![{lab}: threshold curve and per-class precision/recall]({results[lab]['png']})"
                for lab in labels
            ],
            "",
            f"| class | support | {head} |",
            "|---|---:|" + "---:|" * (3 * len(labels)),
        ]
        for c, v in results["shipped"]["per_class"].items():
            flag = "" if v["known_to_model"] else " (not in train)"
            cells = [
                _pct(results[lab]["per_class"].get(c, {}).get(col))
                for col in ("recall", "accuracy_at_threshold", "abstention_rate")
                for lab in labels
            ]
            rows.append(f"| {c}{flag} | {v['support']} | " + " | ".join(cells) + " |")
        cells = [
            _pct(results[lab][col])
            for col in ("accuracy", "accuracy_at_threshold", "abstention_rate")
            for lab in labels
        ]
        rows.append(f"| **all** | {results['shipped']['n']} | " + " | ".join(cells) + " |")
        sections.append("\n".join(rows))
    text = "\n".join(
        [
            "# Classification: shipped classifiers on the validation splits",
            "",
            "Produced by `python benchmarks/classification_table.py --baseline hirise=OLD.npz "
            "--baseline msl=OLD.npz` (rerun it to refresh); *baseline* is the model shipped before "
            "(see `data/weights/README.md` for how each was trained). The val split chose the "
            "settings and, for a model calibrated on it (`--calibrate-on val`), fitted the one "
            "temperature; it never trained a weight. Its figures at the threshold, NLL and ECE are "
            "then in-sample, so the row below such a model gives them cross-fitted: val in two grouped "
            "halves (HiRISE scenes, MSL sols), each scored with the temperature fitted on the other "
            "(accuracy and balanced accuracy do not depend on the temperature). Test splits are "
            "held back, so the paper's test figures are shown for reference, not as a like-for-like "
            "comparison. Percentages; recall is over the class's items; 'at >= t' counts only items "
            "whose calibrated max posterior is at least t, and abstention is the fraction below it "
            "(— where undefined). *ms per crop*: encoding and classifying "
            f"{TIMED_CROPS} val crops at 224 px on this machine's CPU, median of 3 runs in one process "
            "(ONNX Runtime when installed), with the model's test-time views and, in brackets, with "
            "test-time augmentation over all 8 rotations/flips.",
            "",
            *overview,
            "",
            *[s + "\n" for s in sections],
        ]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(saved, indent=2, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
