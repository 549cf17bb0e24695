"""Fine-tuning the last blocks of a backbone on CPU cores, from cached stem activations.

The trunk is cut in two at a block boundary. The *stem* (every block before the cut) stays
frozen: it runs once per image and per view (the 8 rotations/flips of an orbital crop, which
has no up), and its activations are cached in float16 (``indexer.features.stem_activations``).
The *tail* (the blocks from the cut on, the last 1x1 convolution and the pooling) and a linear
head are trained on that cache by AdamW with discriminative learning rates (the pretrained tail
learns slower than the new head), label smoothing and class-balanced sampling. Only the tail
and the head ever run in the training loop, so a full fine-tune fits on two cores.

BatchNorm keeps its ImageNet running statistics (the tail trains in eval mode): the trained
tail then folds into its convolutions like the original network, and the cached path and the
full network give the same logits. The head is linear on the pooled features, so averaging the
features of the 8 views (``Encoder(views=8)``) is exactly the mean of the views' logits (test-
time augmentation).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lookalike.errors import ModelError
from lookalike.fileio import atomic_write_bytes
from lookalike.models.backbones import Backbone, create_backbone


@dataclass
class FinetuneConfig:
    """Settings of ``finetune_tail``."""

    cut: int | None = None  # first trunk module trained; None: the backbone's stage 6 (``default_cut``)
    epochs: int = 12  # passes over the images, each drawn in a random one of its cached views
    batch_size: int = 64
    lr_head: float = 2e-3
    lr_tail: float = 3e-4  # the pretrained blocks learn slower than the new head
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    balance: float = 0.5  # draw an image of class c with weight n_c ** -balance (1: balanced)
    dropout: float = 0.2  # on the pooled features, before the head
    seed: int = 0


def trunk(backbone: Backbone) -> nn.Sequential:
    """The backbone's sequence of blocks (``body.features``); ModelError for other layouts."""
    features = getattr(backbone.body, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ModelError(f"backbone {backbone.spec.name!r} has no block sequence to fine-tune")
    return features


def default_cut(backbone: Backbone) -> int:
    """The first block of the backbone's stage 6 (of 7): EfficientNet-Lite0 14, Lite1/Lite2 18.
    The last two stages hold about two thirds of the weights and see 14 x 14 maps at 224 px,
    which keeps the cached activations small."""
    starts = getattr(backbone.body, "stage_starts", None)
    if not starts or len(starts) < 6:
        raise ModelError(f"backbone {backbone.spec.name!r} has no known stages: give the cut")
    return starts[5]


def check_cut(backbone: Backbone, cut: int) -> None:
    n = len(trunk(backbone))
    if not 1 <= cut < n:
        raise ModelError(
            f"the cut must be a trunk module from 1 to {n - 1} of {backbone.spec.name}, got {cut}"
        )


def stem(backbone: Backbone, cut: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """images (B, 3, H, W) in [0, 1] -> activations at the cut (inference only: BatchNorm is
    folded into the convolutions and the maps run channels-last, which CPUs run faster)."""
    from torch.fx.experimental.optimization import fuse

    check_cut(backbone, cut)
    blocks = trunk(backbone)[:cut]
    try:
        blocks = fuse(blocks, inplace=False)
    except Exception:  # a stem torch.fx cannot trace runs unfused, just slower
        pass

    def run(images: torch.Tensor) -> torch.Tensor:
        x = (images - backbone._mean) / backbone._std
        return blocks(x.contiguous(memory_format=torch.channels_last)).contiguous()

    return run


TAIL_BITS = 5  # signed levels per output channel of a stored weight change: a tail of ~1.8 MB


def tail_keys(backbone: Backbone, cut: int) -> list[str]:
    """Names in ``backbone.body.state_dict()`` of the float tensors the fine-tune changes
    (BatchNorm's step counters are left out: they do nothing in eval mode)."""
    check_cut(backbone, cut)
    state = backbone.body.state_dict()
    return [
        k
        for k, t in state.items()
        if k.startswith("features.") and int(k.split(".")[1]) >= cut and t.is_floating_point()
    ]


def _imagenet_tail(backbone: Backbone, cut: int) -> dict[str, np.ndarray]:
    state = create_backbone(backbone.spec.name).body.state_dict()
    return {k: state[k].numpy() for k in tail_keys(backbone, cut)}


def tail_state(backbone: Backbone, cut: int) -> dict[str, np.ndarray]:
    """The tail as it is stored: each tensor's change from the ImageNet weights. A weight of two
    or more dimensions is quantized per output channel to ``TAIL_BITS`` signed levels (``KEY|q``
    int8, ``KEY|scale`` float32); a vector (BatchNorm) stays float32 (``KEY|delta``). Changes
    are small and mostly near zero, so the file stays small (logits move by < 0.1 on real
    crops)."""
    base = _imagenet_tail(backbone, cut)
    state = backbone.body.state_dict()
    levels = 2 ** (TAIL_BITS - 1) - 1
    out = {}
    for key, old in base.items():
        change = state[key].detach().cpu().numpy().astype(np.float32) - old
        if change.ndim < 2:
            out[f"{key}|delta"] = change
            continue
        scale = (np.abs(change).reshape(len(change), -1).max(1) / levels).astype(np.float32)
        scale[scale == 0] = 1.0
        out[f"{key}|q"] = np.round(change / scale.reshape(-1, *[1] * (change.ndim - 1))).astype(np.int8)
        out[f"{key}|scale"] = scale
    return out


def round_tail(backbone: Backbone, cut: int) -> dict[str, np.ndarray]:
    """Make the trained tail of ``backbone`` exactly what its stored form loads as; returns that form."""
    state = tail_state(backbone, cut)
    backbone.body.load_state_dict(
        {k: torch.from_numpy(v) for k, v in _imagenet_tail(backbone, cut).items()}, strict=False
    )
    load_tail(backbone, state, cut)
    return state


def load_tail(backbone: Backbone, state: dict[str, np.ndarray], cut: int) -> Backbone:
    """Apply a stored tail (``tail_state``) to ``backbone``, which holds the ImageNet weights,
    in place; ModelError when it does not fit."""
    own = backbone.body.state_dict()
    keys = tail_keys(backbone, cut)
    expected = {f"{k}|{part}" for k in keys for part in (("q", "scale") if own[k].ndim >= 2 else ("delta",))}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ModelError(
            f"the fine-tuned tail does not fit {backbone.spec.name} cut at {cut} "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    tensors = {}
    for key in keys:
        shape = tuple(own[key].shape)
        if own[key].ndim >= 2:
            q, scale = np.asarray(state[f"{key}|q"]), np.asarray(state[f"{key}|scale"])
            if q.shape != shape or scale.shape != shape[:1]:
                raise ModelError(
                    f"fine-tuned tensor {key} has shape {q.shape} (scales {scale.shape}), "
                    f"the backbone expects {shape}"
                )
            change = q.astype(np.float32) * scale.reshape(-1, *[1] * (len(shape) - 1))
        else:
            change = np.asarray(state[f"{key}|delta"], dtype=np.float32)
            if change.shape != shape:
                raise ModelError(
                    f"fine-tuned tensor {key} has shape {change.shape}, the backbone expects {shape}"
                )
        tensors[key] = own[key] + torch.from_numpy(change)
    backbone.body.load_state_dict(tensors, strict=False)
    return backbone


class TailClassifier(nn.Module):
    """activations at the cut -> logits: the backbone's tail, its pooling, dropout, a linear head."""

    def __init__(self, backbone: Backbone, cut: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        check_cut(backbone, cut)
        self.tail = trunk(backbone)[cut:]
        self.pool = backbone.body.pool
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.spec.num_features, n_classes)

    def pooled(self, acts: torch.Tensor) -> torch.Tensor:
        return self.pool(self.tail(acts)).flatten(1)

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(acts)))

    def train(self, mode: bool = True) -> TailClassifier:
        # BatchNorm keeps its running statistics (see the module docstring); only dropout trains
        super().train(False)
        self.dropout.train(mode)
        return self


def _warm_up_share(total: int) -> float:
    """OneCycleLR's ``pct_start`` for a tenth of ``total`` steps of warm-up (at least one), put
    half a step off the integers: the schedule divides by zero when its first phase ends on step 0."""
    return (max(1, round(0.1 * total)) + 0.5) / total


def sampling_weights(ids: np.ndarray, n_classes: int, balance: float) -> np.ndarray:
    """Per-row draw probabilities: rows of class c weigh n_c ** -balance (0: as in the data)."""
    counts = np.bincount(ids, minlength=n_classes).astype(np.float64)
    w = counts[ids] ** -balance
    return w / w.sum()


def _fingerprint(
    activations: np.ndarray, ids: np.ndarray, n_classes: int, backbone: Backbone, cfg: FinetuneConfig
) -> str:
    """What a checkpoint must have been trained on to be resumed: settings, data and weights."""
    settings = [
        asdict(cfg),
        list(activations.shape),
        str(activations.dtype),
        n_classes,
        backbone.spec.name,
        backbone.spec.weights_sha256,
    ]
    digest = hashlib.sha256(json.dumps(settings).encode())
    digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    if len(activations):  # a sample of the activations: a cache of other images prints otherwise
        flat = activations.reshape(len(activations), -1)
        sample = flat[:: max(1, len(flat) // 16), :: max(1, flat.shape[1] // 256)]
        digest.update(np.ascontiguousarray(sample).tobytes())
    return digest.hexdigest()


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` when it is readable and was made by the same training; else None."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply not resumed from
        return None
    return state if isinstance(state, dict) and state.get("fingerprint") == fingerprint else None


def _save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _check_activations(activations: np.ndarray, ids: np.ndarray, cfg: FinetuneConfig) -> None:
    """Reject activations that are not (N, views, C, H, W) for the ``ids``, or no epochs or batch."""
    if activations.ndim != 5 or len(activations) != len(ids):
        raise ModelError(
            f"expected (N, views, C, H, W) activations for {len(ids)} images, got shape {activations.shape}"
        )
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ModelError("epochs and batch size must be at least 1")


def _optimizer(
    model: TailClassifier, cfg: FinetuneConfig, total: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW over the tail and the head (each its own learning rate) and its one-cycle schedule
    over ``total`` steps."""
    opt = torch.optim.AdamW(
        [
            dict(params=model.tail.parameters(), lr=cfg.lr_tail),
            dict(params=model.head.parameters(), lr=cfg.lr_head),
        ],
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[cfg.lr_tail, cfg.lr_head], total_steps=total, pct_start=_warm_up_share(total)
    )
    return opt, sched


def _resume(
    checkpoint: Path | None,
    fingerprint: str,
    model: TailClassifier,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.OneCycleLR,
) -> tuple[list[float], int, float]:
    """Load the model, optimizer and schedule of a matching checkpoint, if there is one; returns
    the losses so far, the epochs done and the seconds they took (none without one)."""
    if (state := _load_checkpoint(checkpoint, fingerprint)) is None:
        return [], 0, 0.0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["schedule"])
    return state["losses"].tolist(), int(state["epoch"]), float(state["seconds"])


def _one_epoch(
    model: TailClassifier,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.OneCycleLR,
    loss_fn: nn.Module,
    activations: np.ndarray,
    p: np.ndarray,
    y_all: torch.Tensor,
    cfg: FinetuneConfig,
    epoch: int,
    steps: int,
    losses: list[float],
    bar,
) -> None:
    """``steps`` optimizer steps of epoch ``epoch``, drawn from its own seed; the losses are
    appended to ``losses``."""
    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout's draws, per epoch too
    n_views = activations.shape[1]
    for _ in range(steps):
        rows = rng.choice(len(y_all), cfg.batch_size, p=p)
        views = rng.integers(n_views, size=cfg.batch_size)
        x = torch.from_numpy(np.asarray(activations[rows, views], dtype=np.float32))
        loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y_all[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.update()
        bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-50:]):.3f}")


def _round_as_stored(model: TailClassifier, backbone: Backbone, cut: int) -> dict[str, np.ndarray]:
    """Make the weights behave as stored: round the tail and the head through their file types;
    returns the tail as stored (``round_tail``)."""
    stored = round_tail(backbone, cut)
    with torch.no_grad():
        model.head.weight.copy_(model.head.weight.half().float())
    return stored


def finetune_tail(
    activations: np.ndarray,
    ids: np.ndarray,
    n_classes: int,
    backbone: Backbone,
    config: FinetuneConfig | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> tuple[TailClassifier, dict]:
    """Train the tail of ``backbone`` (changed in place) and a linear head on cached activations.

    ``activations``: (N, V, C, H, W), the stem's output for V views of each of N images (float16
    is fine; batches are converted as drawn). Each draw takes an image by its class weight
    (``sampling_weights``) and one of its views at random; epoch e draws from its own seed
    (``[seed, e]``), so a resumed run draws what an uninterrupted one would.
    ``checkpoint``: a file written (atomically) after every epoch with the weights, the optimizer
    and the schedule; a later call with the same settings, data and weights resumes after the
    last epoch it holds (another training's checkpoint is ignored and replaced). The caller
    removes it once the model is saved. Returns the model (eval mode) and a report with the loss
    curve, the time taken, the epoch resumed from and the tail as stored (``tail_state``).
    """
    from tqdm.auto import tqdm

    cfg = config or FinetuneConfig()
    if cfg.cut is None:
        cfg = replace(cfg, cut=default_cut(backbone))
    _check_activations(activations, ids, cfg)
    fingerprint = _fingerprint(activations, ids, n_classes, backbone, cfg)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    torch.manual_seed(cfg.seed)
    model = TailClassifier(backbone, cfg.cut, n_classes, cfg.dropout)
    steps_per_epoch = max(1, int(np.ceil(len(ids) / cfg.batch_size)))
    total = cfg.epochs * steps_per_epoch
    opt, sched = _optimizer(model, cfg, total)
    losses, first_epoch, seconds_before = _resume(checkpoint, fingerprint, model, opt, sched)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    p = sampling_weights(np.asarray(ids), n_classes, cfg.balance)
    y_all = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(
        total=total,
        initial=first_epoch * steps_per_epoch,
        desc="fine-tuning",
        unit="step",
        disable=not progress,
    )
    for epoch in range(first_epoch, cfg.epochs):
        _one_epoch(
            model, opt, sched, loss_fn, activations, p, y_all, cfg, epoch, steps_per_epoch, losses, bar
        )
        if checkpoint is not None:
            _save_checkpoint(
                checkpoint,
                dict(
                    fingerprint=fingerprint,
                    epoch=epoch + 1,
                    seconds=seconds_before + time.perf_counter() - t0,
                    model=model.state_dict(),
                    optimizer=opt.state_dict(),
                    schedule=sched.state_dict(),
                    losses=torch.tensor(losses, dtype=torch.float64),
                ),
            )
    bar.close()
    model.eval()
    stored = _round_as_stored(model, backbone, cfg.cut)
    curve = [float(np.mean(losses[i : i + steps_per_epoch])) for i in range(0, total, steps_per_epoch)]
    return model, dict(
        steps=total,
        seconds=seconds_before + time.perf_counter() - t0,
        loss_per_epoch=curve,
        resumed_after_epoch=first_epoch,
        tail=stored,
    )


@torch.inference_mode()
def tail_logits(model: TailClassifier, activations: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(N, V, C, H, W) -> (N, V, classes) logits of every cached view."""
    n, v = activations.shape[:2]
    out = np.empty((n * v, model.head.out_features), dtype=np.float32)
    flat = activations.reshape(n * v, *activations.shape[2:])
    for s in range(0, n * v, batch_size):
        x = torch.from_numpy(np.asarray(flat[s : s + batch_size], dtype=np.float32))
        out[s : s + batch_size] = model(x.contiguous(memory_format=torch.channels_last)).numpy()
    return out.reshape(n, v, -1)
