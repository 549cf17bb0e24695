"""Validation table of the shipped classifiers -> benchmarks/results/classification.md (+ PNGs).

    python benchmarks/classification_table.py [--data DIR] [--split val] [--threshold 0.9]

DIR holds ``hirise_v1/`` and ``msl_curiosity/`` (default: ``$LOOKALIKE_DATA`` or ``../shared/data``
beside the checkout). Backbone features are cached, so a rerun takes seconds. Test splits are
held back: report val.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = [("hirise", "hirise_v1", "HiRISE v1 landmarks"), ("msl", "msl_curiosity", "MSL Curiosity surface")]
PAPER = {  # the paper's test-set figures (Wagstaff et al.), for reference only
    "hirise": "90.6% (94.5% at posterior >= 0.9, 13% abstention)",
    "msl": "66.7% (84.0% at posterior >= 0.9, 52% abstention)",
}


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def main(argv=None) -> int:
    from lookalike.models.classifier import load_classifier
    from lookalike.workflows.evaluation import evaluate_classifier

    env = os.environ.get("LOOKALIKE_DATA", "").strip()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=env or str(REPO.parent / "shared" / "data"))
    p.add_argument("--split", default="val")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "classification.md"))
    args = p.parse_args(argv)
    out = Path(args.out)
    t = args.threshold
    overview = ["| data | classes | n | accuracy | accuracy at >= {t} | abstention at {t} | balanced accuracy "
                "| NLL | ECE | T | paper (test) |".format(t=t),
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    sections = []
    for name, folder, title in DATASETS:
        root = Path(args.data) / folder
        if not (root / "labels.csv").is_file():
            print(f"skipping {name}: {root}/labels.csv not found", file=sys.stderr)
            continue
        model = load_classifier(name)
        png = out.parent / f"classification_{name}_{args.split}.png"
        r = evaluate_classifier(name, root, root / "labels.csv", split=args.split, threshold=t, plot=png,
                                progress=False)
        overview.append(f"| {title} | {len(model.classes)} | {r['n']} | {_pct(r['accuracy'])} | "
                        f"{_pct(r['accuracy_at_threshold'])} | {_pct(r['abstention_rate'])} | "
                        f"{_pct(r['balanced_accuracy'])} | {r['nll']:.3f} | {r['ece']:.3f} | "
                        f"{r['temperature']:.2f} | {PAPER[name]} |")
        cfg = model.meta.get("config", {})
        head = "linear" if not cfg.get("hidden") else f"MLP {cfg['hidden']} hidden"
        rows = [f"### {title} ({args.split}, model `{name}`: {head}, "
                f"{cfg.get('views', 0)} augmented views, class-weight power {cfg.get('class_weights', 0)})",
                "",
                f"![threshold curve and per-class precision/recall]({png.name})",
                "",
                f"| class | support | precision | recall | accuracy at >= {t} | abstention at {t} |",
                "|---|---:|---:|---:|---:|---:|"]
        for c, v in r["per_class"].items():
            flag = "" if v["known_to_model"] else " (not in train)"
            rows.append(f"| {c}{flag} | {v['support']} | {_pct(v['precision'])} | {_pct(v['recall'])} | "
                        f"{_pct(v['accuracy_at_threshold'])} | {_pct(v['abstention_rate'])} |")
        rows.append(f"| **all** | {r['n']} | | {_pct(r['accuracy'])} | {_pct(r['accuracy_at_threshold'])} "
                    f"| {_pct(r['abstention_rate'])} |")
        sections.append("\n".join(rows))
    text = "\n".join([
        "# Classification: shipped classifiers on the validation splits",
        "",
        "Produced by `python benchmarks/classification_table.py` (rerun it to refresh). Models:",
        "`data/weights/classifier_{hirise,msl}.npz`, probes on frozen EfficientNet-Lite0 ImageNet "
        "features at 224 px, temperature-scaled on out-of-fold logits of the train split (see "
        "`data/weights/README.md`). The val split was used for nothing but this report; test splits "
        "are held back, so the paper's test figures are shown for reference, not as a like-for-like "
        "comparison. Percentages; precision is over predictions of the class, recall over its items; "
        "'at >= t' counts only items whose calibrated max posterior is at least t, and abstention is "
        "the fraction below it. Precision/accuracy shown as — where undefined (no predictions or "
        "nothing accepted).",
        "",
        *overview,
        "",
        *[s + "\n" for s in sections],
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
