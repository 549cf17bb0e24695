"""Image classifiers by transfer learning: a probe on frozen ImageNet backbone features.

The backbone (EfficientNet-Lite0 by default) never runs in the training loop: its features of
each image are computed once and cached (``indexer.features.image_features``), and a small head
is trained on them: standardisation, then either a linear layer (multinomial logistic regression)
or a one-hidden-layer MLP with dropout, by AdamW with cross-entropy (optionally class weights,
label smoothing and features of augmented views as extra training rows).

Posteriors are calibrated by temperature scaling (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017): ``p = softmax(logits / T)`` with the one scalar ``T`` that minimises the
negative log-likelihood of held-out data. Here the held-out data are the out-of-fold logits of a
K-fold cross-fit on the training split (folds grouped by a column such as ``source_image`` when
the labels have one, so crops of one scene never sit on both sides), so the validation split
stays an honest report. Hyper-parameters, when searched, are chosen by the same cross-fit.

A model file is an ``.npz`` (no pickle) holding the weights and a JSON header: class names, the
backbone and image size its features come from, the temperature and how it was trained.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from lookalike.data.shipped import shipped_classifier_path
from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_bytes
from lookalike.models.defaults import DEFAULT_BACKBONE

CLASSIFIER_FORMAT = 1
SHIPPED = ("hirise", "msl")


# ------------------------------------------------------------------ the model
class ProbeClassifier:
    """A trained head as plain arrays: ``logits = MLP((x - mean) / std)``, ReLU between layers.

    ``predict_proba`` divides the logits by ``temperature`` before the softmax. The features
    ``x`` come from ``backbone`` at ``image_size``, averaged over ``views`` rotations/flips
    (``Encoder(views=...)``); a fine-tuned model also carries the backbone's trained ``tail``
    (trunk modules from ``cut`` on, see ``models.finetune``), which replaces the ImageNet one.
    ``indexer.encoding.classifier_encoder`` builds the encoder a model needs.
    """

    def __init__(
        self,
        classes: list[str],
        mean: np.ndarray,
        std: np.ndarray,
        weights: list[np.ndarray],
        biases: list[np.ndarray],
        temperature: float = 1.0,
        backbone: str = DEFAULT_BACKBONE,
        image_size: int = 224,
        meta: dict | None = None,
        views: int = 1,
        tail: dict[str, np.ndarray] | None = None,
        cut: int | None = None,
    ):
        self.classes = [str(c) for c in classes]
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.temperature = float(temperature)
        self.backbone = backbone
        self.image_size = int(image_size)
        self.meta = dict(meta or {})
        self.views = int(views)
        self.tail = dict(tail) if tail else None
        self.cut = int(cut) if self.tail else None
        if self.tail and cut is None:
            raise LookalikeError("a fine-tuned tail needs the trunk module it starts at (cut)")
        if self.weights[-1].shape[0] != len(self.classes):
            raise LookalikeError(
                f"classifier has {self.weights[-1].shape[0]} outputs for {len(self.classes)} classes"
            )

    @property
    def in_features(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def hidden(self) -> int:
        return int(self.weights[0].shape[0]) if len(self.weights) > 1 else 0

    def features_id(self) -> str:
        """A digest of where this model's features come from: backbone, image size, test-time
        views and the fine-tuned tail's tensors."""
        digest = hashlib.sha256(json.dumps([self.backbone, self.image_size, self.views, self.cut]).encode())
        for key, value in (self.tail or {}).items():
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()

    def logits(self, features: np.ndarray) -> np.ndarray:
        h = np.asarray(features, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.in_features:
            raise LookalikeError(
                f"classifier expects {self.in_features}-d features ({self.backbone}), got shape {h.shape}"
            )
        h = (h - self.mean) / self.std
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h

    def predict_proba(self, features: np.ndarray, calibrated: bool = True) -> np.ndarray:
        return softmax(self.logits(features) / (self.temperature if calibrated else 1.0))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes)[self.logits(features).argmax(1)]

    # -------------------------------------------------------------- persistence
    def to_bytes(self) -> bytes:
        header = dict(
            format=CLASSIFIER_FORMAT,
            kind="probe-classifier",
            classes=self.classes,
            backbone=self.backbone,
            image_size=self.image_size,
            in_features=self.in_features,
            hidden=self.hidden,
            layers=len(self.weights),
            temperature=self.temperature,
            meta=self.meta,
            views=self.views,
            tail_keys=list(self.tail or {}),
            cut=self.cut,
        )
        arrays = {f"w{i}": w.astype(np.float16) for i, w in enumerate(self.weights)}
        arrays.update({f"b{i}": b for i, b in enumerate(self.biases)})
        arrays.update({f"t{i}": t for i, t in enumerate((self.tail or {}).values())})
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            mean=self.mean,
            std=self.std,
            **arrays,
        )
        return buf.getvalue()

    def save(self, path: str | Path) -> str:
        """Write atomically; returns the file's sha256."""

        return atomic_write_bytes(Path(path), self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> ProbeClassifier:
        return _read(io.BytesIO(data), name)

    @classmethod
    def load(cls, path: str | Path) -> ProbeClassifier:
        try:
            with open(path, "rb") as fh:
                return _read(fh, str(path))
        except FileNotFoundError:
            raise LookalikeError(f"classifier model {path} does not exist") from None
        except IsADirectoryError:
            raise LookalikeError(f"classifier model {path} is a directory, not a model file") from None


def _read(fh, name: str) -> ProbeClassifier:
    try:
        with np.load(fh, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("kind") != "probe-classifier":
                raise LookalikeError(f"{name} is not a classifier model (kind {header.get('kind')!r})")
            if header.get("format") != CLASSIFIER_FORMAT:
                raise LookalikeError(
                    f"classifier model {name} has format {header.get('format')}, "
                    f"this version reads {CLASSIFIER_FORMAT}"
                )
            n = int(header["layers"])
            tail = {key: z[f"t{i}"] for i, key in enumerate(header.get("tail_keys") or [])}
            return ProbeClassifier(
                header["classes"],
                z["mean"],
                z["std"],
                [z[f"w{i}"] for i in range(n)],
                [z[f"b{i}"] for i in range(n)],
                header["temperature"],
                header["backbone"],
                header["image_size"],
                header.get("meta"),
                views=header.get("views", 1),
                tail=tail,
                cut=header.get("cut"),
            )
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
    ) as exc:
        raise LookalikeError(f"classifier model {name} is not a readable model file: {exc}") from None


def resolve_classifier(spec: str | Path) -> Path:
    """``--model``: a file path, or the name of a shipped model (``hirise``, ``msl``)."""
    spec = str(spec)
    if spec in SHIPPED and not Path(spec).exists():
        path = shipped_classifier_path(spec)
        if not path.is_file():
            raise LookalikeError(
                f"the shipped classifier {spec!r} is missing ({path.name}); "
                "reinstall or rebuild it (see data/weights/README.md)"
            )
        return path
    path = Path(spec)
    if not path.is_file():
        raise LookalikeError(
            f"classifier model {spec} does not exist (give a file, or a shipped model: {', '.join(SHIPPED)})"
        )
    return path


def load_classifier(spec: str | Path) -> ProbeClassifier:
    return ProbeClassifier.load(resolve_classifier(spec))


# ------------------------------------------------------------------ maths
def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer ``targets`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(z)), np.asarray(targets)].mean())


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, lo: float = 0.05, hi: float = 20.0, iters: int = 80
) -> float:
    """The temperature minimising held-out NLL (golden-section search on log T)."""
    if len(logits) == 0:
        return 1.0
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, targets, np.exp(c)), nll(logits, targets, np.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, targets, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, targets, np.exp(d))
    return float(np.exp((a + b) / 2.0))


# ------------------------------------------------------------------ training
@dataclass
class ClassifierConfig:
    hidden: int = 256  # 0: a linear probe (multinomial logistic regression)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    dropout: float = 0.5  # on the hidden layer
    input_dropout: float = 0.2  # on the standardised features
    label_smoothing: float = 0.0
    class_weights: float = 0.0  # weight of class c is (n / n_c) ** class_weights, mean 1
    views: int = 0  # augmented views (cached features) added as training rows
    min_steps: int = 300  # more epochs than asked when the data are few
    seed: int = 0


def _class_weights(ids: np.ndarray, n_classes: int, power: float) -> np.ndarray:
    counts = np.bincount(ids, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    return (w / (w[counts > 0].mean() if (counts > 0).any() else 1.0)).astype(np.float32)


def fit_head(
    x: np.ndarray,
    ids: np.ndarray,
    n_classes: int,
    config: ClassifierConfig,
    views: list[np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Train the head on features ``x`` (N, D) with class ids; returns (weights, biases, mean, std).

    Weights are rounded through float16, as they are stored, so a model behaves the same before
    and after saving.
    """
    import torch
    from torch import nn

    cfg = config
    torch.set_num_threads(1)  # small matrices: more threads only fight over the cores
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x = np.asarray(x, dtype=np.float32)
    # a floor on the scale keeps near-constant features (all-zero ReLU outputs on a small
    # training set) from blowing up on new images
    var = x.var(0)
    mean, std = x.mean(0), np.sqrt(var + 1e-2 * var.mean() + 1e-12)
    rows = [x] + [np.asarray(v, dtype=np.float32) for v in (views or [])[: cfg.views]]
    xt = torch.from_numpy((np.concatenate(rows) - mean) / std)
    yt = torch.from_numpy(np.tile(np.asarray(ids, dtype=np.int64), len(rows)))
    dim = x.shape[1]
    if cfg.hidden:
        head = nn.Sequential(
            nn.Dropout(cfg.input_dropout),
            nn.Linear(dim, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, n_classes),
        )
    else:
        head = nn.Sequential(nn.Dropout(cfg.input_dropout), nn.Linear(dim, n_classes))
    weight = (
        torch.from_numpy(_class_weights(np.asarray(ids), n_classes, cfg.class_weights))
        if cfg.class_weights
        else None
    )
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(xt) / cfg.batch_size)))
    epochs = max(cfg.epochs, int(np.ceil(cfg.min_steps / steps_per_epoch)))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    head.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(xt)))
        for s in range(0, len(xt), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            loss = loss_fn(head(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    linears = [m for m in head if isinstance(m, nn.Linear)]
    weights = [m.weight.detach().numpy().astype(np.float16).astype(np.float32) for m in linears]
    biases = [m.bias.detach().numpy().copy() for m in linears]
    return weights, biases, mean, std


def make_folds(n: int, ids: np.ndarray, groups: np.ndarray | None, k: int, seed: int = 0) -> np.ndarray:
    """Fold number of each row: whole groups per fold (greedy by size), else stratified by class."""
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    if groups is not None:
        names, inverse, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
        if len(names) < k:
            raise LookalikeError(f"cannot make {k} grouped folds from {len(names)} groups")
        order = rng.permutation(len(names))
        order = order[np.argsort(-sizes[order], kind="stable")]
        load = np.zeros(k)
        group_fold = np.empty(len(names), dtype=np.int64)
        for g in order:
            group_fold[g] = int(np.argmin(load))
            load[group_fold[g]] += sizes[g]
        return group_fold[inverse]
    for c in np.unique(ids):
        rows = rng.permutation(np.flatnonzero(ids == c))
        fold[rows] = (np.arange(len(rows)) + rng.integers(k)) % k
    return fold


def cross_fit(
    x: np.ndarray,
    ids: np.ndarray,
    n_classes: int,
    config: ClassifierConfig,
    folds: np.ndarray,
    views: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Out-of-fold logits (N, C): each fold scored by a head trained on the other folds."""
    out = np.zeros((len(x), n_classes), dtype=np.float32)
    for f in np.unique(folds):
        test = folds == f
        w, b, mean, std = fit_head(
            x[~test], ids[~test], n_classes, config, [v[~test] for v in views] if views else None
        )
        probe = ProbeClassifier([str(i) for i in range(n_classes)], mean, std, w, b)
        out[test] = probe.logits(x[test])
    return out


DEFAULT_GRID: list[dict] = [
    dict(hidden=0, epochs=30, weight_decay=1e-1, input_dropout=0.0, dropout=0.0),
    dict(hidden=0, epochs=10, weight_decay=1e-1, input_dropout=0.0, dropout=0.0, views=2),
    dict(hidden=256, epochs=40),
    dict(hidden=256, epochs=40, class_weights=0.5),
    dict(hidden=256, epochs=15, views=2),
    dict(hidden=512, epochs=15, views=2, input_dropout=0.4, label_smoothing=0.1),
]


def train_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    views: list[np.ndarray] | None = None,
    config: ClassifierConfig | None = None,
    grid: list[dict] | None = None,
    folds: int = 5,
    backbone: str = DEFAULT_BACKBONE,
    image_size: int = 224,
    progress: bool = True,
) -> tuple[ProbeClassifier, dict]:
    """Train a calibrated classifier; with ``grid``, pick the setting of best cross-fit accuracy.

    Returns the model (trained on all rows, temperature from the cross-fit) and a report.
    """
    from tqdm.auto import tqdm

    x = np.asarray(features, dtype=np.float32)
    classes, ids = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    if len(classes) < 2:
        raise LookalikeError(f"a classifier needs at least 2 classes, the labels have {len(classes)}")
    base = config or ClassifierConfig()
    fold = make_folds(len(x), ids, groups, folds, seed=base.seed)
    candidates = [base] if not grid else [replace(base, **{"views": 0, **g}) for g in grid]
    tried = []
    best = None
    for cfg in tqdm(candidates, desc="cross-fitting", unit="setting", disable=not progress):
        if cfg.views and (not views or len(views) < cfg.views):
            continue
        oof = cross_fit(x, ids, len(classes), cfg, fold, views)
        t = fit_temperature(oof, ids)
        row = dict(
            config=_diff(cfg),
            cv_accuracy=float((oof.argmax(1) == ids).mean()),
            cv_nll=nll(oof, ids, t),
            temperature=t,
        )
        tried.append(row)
        if best is None or (row["cv_accuracy"], -row["cv_nll"]) > (
            best[1]["cv_accuracy"],
            -best[1]["cv_nll"],
        ):
            best = (cfg, row, oof)
    if best is None:
        raise LookalikeError("no setting could be trained (augmented views missing?)")
    cfg, row, oof = best
    w, b, mean, std = fit_head(x, ids, len(classes), cfg, views)
    grouped = groups is not None
    meta = dict(
        config=asdict(cfg),
        n_train=len(x),
        cv=dict(
            folds=folds,
            grouped=grouped,
            accuracy=row["cv_accuracy"],
            nll=row["cv_nll"],
            nll_uncalibrated=nll(oof, ids),
        ),
        method=("linear probe" if not cfg.hidden else f"MLP probe ({cfg.hidden} hidden)")
        + " on frozen backbone features, temperature-scaled on out-of-fold logits",
    )
    model = ProbeClassifier(classes.tolist(), mean, std, w, b, row["temperature"], backbone, image_size, meta)
    return model, dict(
        selected=_diff(cfg),
        temperature=row["temperature"],
        cv_accuracy=row["cv_accuracy"],
        cv_nll=row["cv_nll"],
        tried=tried,
    )


def _diff(cfg: ClassifierConfig) -> dict:
    """A config as the fields that differ from the defaults (short, readable reports)."""
    default = ClassifierConfig()
    return {
        f.name: getattr(cfg, f.name) for f in fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)
    } or {"hidden": cfg.hidden}
