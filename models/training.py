"""Training hashing heads on cached backbone features (the backbone never runs in the loop).

Methods:
- ``mirs-triplet``: MIRS head, online semi-hard triplet loss (labels), optional inter-class
  triplets;
- ``mirs-ntxent``: MIRS head, NT-Xent on two augmented views per item (no labels);
- ``descartes-classifier``: noisy sigmoid code layer + classifier, cross-entropy (labels);
- ``descartes-autoencoder``: D-1024-512-1024-D autoencoder, reconstruction (no labels).
Each adds ``push_weight * push_loss + balance_weight * balance_loss`` on the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lookalike.errors import LookalikeError
from lookalike.models.hashing import MAX_BITS, NetworkHash
from lookalike.models.heads import AutoencoderHead, MIRSHead, NoisyClassifierHead, SimilarityHead
from lookalike.models.losses import (
    ContrastivePairs,
    SemiHardTriplet,
    balance_loss,
    inter_class_triplets,
    push_loss,
    signed,
    similarity_matching_loss,
)
from lookalike.models.whitening import SOURCE, TARGET, GroupWhitening, binary_entropy

METHODS = ("mirs-triplet", "mirs-ntxent", "descartes-classifier", "descartes-autoencoder")
SUPERVISED = ("mirs-triplet", "descartes-classifier")


@dataclass
class TrainConfig:
    method: str = "mirs-triplet"
    bits: int = 128
    epochs: int = 60
    batch_size: int | None = None  # None: 96 for triplets (mining cost grows as B^3), else 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    push_weight: float = 0.1
    balance_weight: float = 0.1
    inter_class_weight: float = 0.0
    inter_class_clusters: int = 8  # k of the k-means on class-standardised features
    margin: float = 0.25
    whiten_group: int = 0  # > 0: domain-specific group whitening before the head (needs target)
    entropy_weight: float = 0.1  # weight of the code entropy on target items (with whitening)
    temperature: float = 0.5
    seed: int = 0


def class_standardised_clusters(
    features: np.ndarray, labels: np.ndarray, k: int = 8, seed: int = 0
) -> np.ndarray:
    """k-means cluster of each item after removing its class's mean and spread per feature."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    z = np.empty_like(x)
    for c in np.unique(labels):
        rows = labels == c
        std = x[rows].std(0)
        z[rows] = (x[rows] - x[rows].mean(0)) / np.where(std > 1e-4, std, np.inf)
    k = max(1, min(k, len(x)))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(z)


def _batches(n: int, labels: np.ndarray | None, batch_size: int, rng: np.random.Generator):
    """Index batches; with labels, class-balanced (m per class) so triplets can be mined."""
    if labels is None:
        order = rng.permutation(n)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    classes = np.unique(labels)
    m = max(2, batch_size // len(classes))
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    batches = []
    for _ in range(max(1, n // batch_size)):
        batch = [rng.choice(pools[c], size=m, replace=len(pools[c]) < m) for c in classes]
        batches.append(np.concatenate(batch))
    return batches


def train_hash(
    features: np.ndarray,
    labels: np.ndarray | None = None,
    views: tuple[np.ndarray, np.ndarray] | None = None,
    config: TrainConfig | None = None,
    backbone: str = "",
    progress: bool = True,
    target: np.ndarray | None = None,
) -> NetworkHash:
    """Train a hashing head; returns it as a ``NetworkHash`` ready to encode and save."""
    threads = torch.get_num_threads()
    # small matrices: one thread is as fast, and spinning OpenMP threads starve other work
    torch.set_num_threads(1)
    try:
        return _train(features, labels, views, config or TrainConfig(), backbone, progress, target)
    finally:
        torch.set_num_threads(threads)


def _check_method(
    cfg: TrainConfig, labels: np.ndarray | None, views: tuple[np.ndarray, np.ndarray] | None
) -> None:
    """Reject an unknown method, a method without the data it needs, or an unusable code length."""
    if cfg.method not in METHODS:
        raise LookalikeError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    if cfg.method in SUPERVISED and labels is None:
        raise LookalikeError(f"{cfg.method} needs labels")
    if cfg.method == "mirs-ntxent" and views is None:
        raise LookalikeError("mirs-ntxent needs features of two augmented views of each item")
    if cfg.bits <= 0 or cfg.bits % 8 or cfg.bits > MAX_BITS:
        raise LookalikeError(f"bits must be a positive multiple of 8 up to {MAX_BITS}, got {cfg.bits}")


def _make_head(
    cfg: TrainConfig, x: np.ndarray, class_ids: np.ndarray | None, n_classes: int | None
) -> tuple[nn.Module, nn.Module | None, torch.Tensor | None]:
    """The head of ``cfg.method`` for features ``x``, its loss module (triplets or contrastive
    pairs, else None) and, for inter-class triplets, each item's class-standardised cluster."""
    dim = x.shape[1]
    extra: nn.Module | None = None
    clusters = None
    if cfg.method in ("mirs-triplet", "mirs-ntxent"):
        head: nn.Module = MIRSHead(dim, cfg.bits)
        if cfg.method == "mirs-triplet":
            extra = SemiHardTriplet(cfg.margin)
            if cfg.inter_class_weight:
                clusters = torch.from_numpy(
                    class_standardised_clusters(x, class_ids, cfg.inter_class_clusters, cfg.seed)
                )
        else:
            extra = ContrastivePairs(cfg.bits, temperature=cfg.temperature)
    elif cfg.method == "descartes-classifier":
        head = NoisyClassifierHead(dim, n_classes, cfg.bits)
    else:
        head = AutoencoderHead(dim, cfg.bits)
    return head, extra, clusters


def _make_whitening(
    cfg: TrainConfig,
    dim: int,
    target: np.ndarray | None,
    norm: Callable[[np.ndarray], torch.Tensor],
) -> tuple[GroupWhitening | None, torch.Tensor | None]:
    """The domain-specific group whitening ``cfg.whiten_group`` asks for (None for 0) and the
    standardised target-domain features it is trained on; it needs a MIRS head and ``target``."""
    if not cfg.whiten_group:
        return None, None
    if cfg.method not in ("mirs-triplet", "mirs-ntxent"):
        raise LookalikeError("domain-specific whitening is an option of the MIRS heads")
    if target is None or len(target) < 2:
        raise LookalikeError("domain-specific whitening needs target-domain features")
    return GroupWhitening(dim, cfg.whiten_group), norm(target)


@dataclass
class _Trainee:
    """A head in training and what its batches are drawn from: the standardised features (and
    augmented views, target-domain features), class ids and inter-class clusters."""

    cfg: TrainConfig
    head: nn.Module
    extra: nn.Module | None
    xt: torch.Tensor
    yt: torch.Tensor | None
    views: tuple[torch.Tensor, torch.Tensor] | None
    clusters: torch.Tensor | None
    whitening: GroupWhitening | None
    target: torch.Tensor | None

    def code(self, v: torch.Tensor, domain: int = SOURCE) -> torch.Tensor:
        """The head's relaxed code of ``v``, whitened for its domain first when whitening."""
        return self.head(self.whitening(v, domain)) if self.whitening else self.head(v)


def _batch_loss(t: _Trainee, idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The loss of one batch of rows ``idx``: the method's own, plus push and balance on the
    code and, with whitening, the code entropy of as many target items."""
    cfg, extra, xt, yt = t.cfg, t.extra, t.xt, t.yt
    idx_t = torch.from_numpy(idx)
    if cfg.method == "mirs-ntxent":
        # (original, augmented) pairs, the augmented view drawn from the cached ones
        va, vb = t.views
        pick = torch.from_numpy(rng.random(len(idx)) < 0.5)
        augmented = torch.where(pick[:, None], va[idx_t], vb[idx_t])
        p_a, p_b = t.code(xt[idx_t]), t.code(augmented)
        loss = extra(p_a, p_b)
        p = torch.cat([p_a, p_b])
    else:
        p = t.code(xt[idx_t])
        if cfg.method == "mirs-triplet":
            loss = extra(p, yt[idx_t])
            if cfg.inter_class_weight:
                triplets = inter_class_triplets(yt[idx_t], t.clusters[idx_t])
                if len(triplets[0]):
                    loss = loss + cfg.inter_class_weight * extra(p, yt[idx_t], triplets)
        elif cfg.method == "descartes-classifier":
            loss = nn.functional.cross_entropy(t.head.classifier(p), yt[idx_t])
        else:
            loss = nn.functional.mse_loss(t.head.reconstruct(p), xt[idx_t])
    loss = loss + cfg.push_weight * push_loss(p) + cfg.balance_weight * balance_loss(p)
    if t.whitening is not None:
        p_t = t.code(t.target[torch.from_numpy(rng.integers(0, len(t.target), len(idx)))], TARGET)
        loss = loss + cfg.entropy_weight * binary_entropy(p_t)
    return loss


def _one_epoch(
    t: _Trainee, class_ids: np.ndarray | None, opt: torch.optim.Optimizer, rng: np.random.Generator
) -> torch.Tensor:
    """One pass over the items in batches (class-balanced for triplets); returns the last loss."""
    t.head.train()
    cfg = t.cfg
    batch_labels = class_ids if cfg.method == "mirs-triplet" else None
    batch_size = cfg.batch_size or (96 if cfg.method == "mirs-triplet" else 256)
    for idx in _batches(len(t.xt), batch_labels, batch_size, rng):
        loss = _batch_loss(t, idx, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


def _train(
    features, labels, views, cfg: TrainConfig, backbone: str, progress: bool, target: np.ndarray | None
) -> NetworkHash:
    """``train_hash`` with a full configuration, torch's threads left to the caller."""
    _check_method(cfg, labels, views)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x = np.asarray(features, dtype=np.float32)
    # features (near) constant in training carry nothing learnable: an infinite std gives them
    # zero weight, where 1/std would blow up the few non-zero values unseen images have there
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-4, std, np.inf).astype(np.float32)
    norm = lambda a: torch.from_numpy((np.asarray(a, np.float32) - mean) / std)  # noqa: E731
    xt = norm(x)
    classes = class_ids = None
    if labels is not None:
        classes, class_ids = np.unique(np.asarray(labels), return_inverse=True)
    head, extra, clusters = _make_head(cfg, x, class_ids, None if classes is None else len(classes))
    paired = (norm(views[0]), norm(views[1])) if cfg.method == "mirs-ntxent" else None
    whitening, tt = _make_whitening(cfg, x.shape[1], target, norm)
    params = list(head.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    yt = torch.from_numpy(class_ids) if class_ids is not None else None
    trainee = _Trainee(cfg, head, extra, xt, yt, paired, clusters, whitening, tt)
    bar = tqdm(range(cfg.epochs), desc=f"training {cfg.method}", unit="epoch", disable=not progress)
    for _ in bar:
        loss = _one_epoch(trainee, class_ids, opt, rng)
        sched.step()
        bar.set_postfix(loss=float(loss.detach()))
    return export_head(
        head,
        mean,
        std,
        cfg,
        backbone,
        n_train=len(x),
        whitening=whitening.eval() if whitening is not None else None,
    )


def export_head(
    head: nn.Module,
    mean: np.ndarray,
    std: np.ndarray,
    cfg: TrainConfig,
    backbone: str,
    n_train: int,
    whitening: GroupWhitening | None = None,
) -> NetworkHash:
    """The head's code path as arrays, with input standardisation (and the target-domain
    whitening, an affine map too) folded into layer one."""
    if isinstance(head, MIRSHead):
        linears = [m for m in head.layers if isinstance(m, nn.Linear)]
        slope = head.config["slope"]
    elif isinstance(head, AutoencoderHead):
        linears = [m for m in head.encoder if isinstance(m, nn.Linear)]
        slope = 0.2
    elif isinstance(head, SimilarityHead):
        linears = [m for m in head.code.modules() if isinstance(m, nn.Linear)]
        slope = head.config["slope"] if head.config["hidden"] else 0.0
    else:
        linears, slope = [head.code], 0.0
    weights = [m.weight.detach().numpy().copy() for m in linears]
    biases = [m.bias.detach().numpy().copy() for m in linears]
    if whitening is not None:
        # W A (x_std - mu) + b  ==  (W A) x_std + (b - W A mu)
        a, mu = (t.detach().numpy().astype(np.float64) for t in whitening.affine(TARGET))
        w_eff = weights[0].astype(np.float64) @ a
        biases[0] = (biases[0] - w_eff @ mu).astype(np.float32)
        weights[0] = w_eff.astype(np.float32)
    # W((x - mean) / std) + b  ==  (W / std) x + (b - W (mean / std))
    biases[0] = biases[0] - weights[0] @ (mean / std)
    weights[0] = weights[0] / std[None, :]
    return NetworkHash(
        weights, biases, slope, cfg.method, backbone, dict(asdict(cfg), n_train=n_train, head=head.config)
    )


# ------------------------------------------------------------ similarity-preserving codes
SIMILARITY = "similarity"


@dataclass
class SimilarityConfig:
    """Settings of ``train_similarity_hash``."""

    bits: int = 128
    steps: int = 3000
    domain_batch: int = 128  # unlabelled items per domain in a step
    labelled_batch: int = 256  # items per labelled set in a step
    lr: float = 1e-3
    weight_decay: float = 1e-4
    similarity_weight: float = 1.0
    supervised_weight: float = 0.0
    push_weight: float = 0.1
    balance_weight: float = 0.1
    hidden: int = 0  # > 0: one hidden layer of this width (LeakyReLU) before the code layer
    label_blend: float = 0.45  # labelled pairs match (1 - b) * cosine + b * same class
    balanced: bool = True  # draw labelled items class-balanced (rare classes as often as common ones)
    seed: int = 0


def train_similarity_hash(
    domains: dict[str, np.ndarray],
    labelled: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    config: SimilarityConfig | None = None,
    backbone: str = "",
    progress: bool = True,
) -> NetworkHash:
    """A code that keeps each domain's feature neighbourhoods and separates labelled classes.

    ``domains``: unlabelled features per kind of imagery (e.g. Mars tiles, Earth tiles, HiRISE
    crops). Each step draws ``domain_batch`` items of every domain and asks the codes' cosine
    to match the cosine of the features centred on their domain's mean
    (``similarity_matching_loss``), one domain at a time. ``labelled``: (features, labels) sets
    whose classes shape the code as one part of the loss, not the whole of it: their pairs'
    target blends feature cosine with class agreement (``label_blend``) and/or a linear
    classifier per set reads the classes off the code (cross-entropy, ``supervised_weight``).
    """
    cfg = config or SimilarityConfig()
    labelled = labelled or {}
    if not domains or any(len(x) < 2 for x in domains.values()):
        raise LookalikeError("each unlabelled domain needs at least 2 feature vectors")
    if cfg.bits <= 0 or cfg.bits % 8 or cfg.bits > MAX_BITS:
        raise LookalikeError(f"bits must be a positive multiple of 8 up to {MAX_BITS}, got {cfg.bits}")
    dims = {x.shape[1] for x in domains.values()} | {x.shape[1] for x, _ in labelled.values()}
    if len(dims) != 1:
        raise LookalikeError(f"every feature set must have the same width, got {sorted(dims)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast
    try:
        return _train_similarity(domains, labelled, cfg, backbone, progress)
    finally:
        torch.set_num_threads(threads)


def _train_similarity(domains, labelled, cfg: SimilarityConfig, backbone: str, progress: bool) -> NetworkHash:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    union = np.concatenate([np.asarray(x, np.float32) for x in domains.values()])
    mean, std = union.mean(0), union.std(0)
    std = np.where(std > 1e-4, std, np.inf).astype(np.float32)
    norm = lambda a: torch.from_numpy((np.asarray(a, np.float32) - mean) / std)  # noqa: E731
    centred = lambda t: torch.from_numpy(t - t.mean(0))  # noqa: E731
    unlabelled = [(norm(x), centred(np.asarray(x, np.float32))) for x in domains.values()]
    sets = []
    for x, y in labelled.values():
        _, ids = np.unique(np.asarray(y), return_inverse=True)
        weights = 1.0 / np.bincount(ids)[ids] if cfg.balanced else np.ones(len(ids))
        sets.append(
            (
                norm(x),
                torch.from_numpy(ids),
                centred(np.asarray(x, np.float32)),
                torch.from_numpy(weights / weights.sum()),
            )
        )
    head = SimilarityHead(
        union.shape[1], cfg.bits, tuple(int(s[1].max()) + 1 for s in sets), hidden=cfg.hidden
    )
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    bar = tqdm(range(cfg.steps), desc="training similarity code", unit="step", disable=not progress)
    for step in bar:
        loss = torch.zeros(())
        for xs, targets in unlabelled:
            rows = torch.randint(len(xs), (min(cfg.domain_batch, len(xs)),), generator=gen)
            p = head(xs[rows])
            loss = loss + (
                cfg.similarity_weight * similarity_matching_loss(p, targets[rows])
                + cfg.push_weight * push_loss(p)
                + cfg.balance_weight * balance_loss(p)
            ) / len(unlabelled)
        for (xs, ids, targets, weights), classifier in zip(sets, head.classifiers):
            rows = torch.multinomial(weights, cfg.labelled_batch, replacement=True, generator=gen)
            p = head(xs[rows])
            if cfg.supervised_weight:
                loss = loss + cfg.supervised_weight * nn.functional.cross_entropy(
                    classifier(signed(p)), ids[rows]
                )
            if cfg.label_blend:
                same = (ids[rows][:, None] == ids[rows][None, :]).float()
                loss = loss + cfg.similarity_weight * similarity_matching_loss(
                    p, targets[rows], same, cfg.label_blend
                )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=float(loss.detach()))
    head.eval()
    train_cfg = TrainConfig(
        method=SIMILARITY,
        bits=cfg.bits,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        push_weight=cfg.push_weight,
        balance_weight=cfg.balance_weight,
        seed=cfg.seed,
    )
    model = export_head(
        head, mean, std, train_cfg, backbone, n_train=int(sum(len(x) for x in domains.values()))
    )
    model.meta.update(
        similarity=asdict(cfg),
        domains={k: len(v) for k, v in domains.items()},
        labelled={k: len(v[0]) for k, v in labelled.items()},
    )
    return model
