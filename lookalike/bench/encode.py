"""``lookalike bench encode``: tiles/s of every candidate encoder path against plain eager
PyTorch, on identical tiles, in one process, with feature error and code bit error rate.

Repetitions are interleaved (one pass of every path, then the next round) so background load on
the cores hits all paths alike; each path's rate is its best pass. The project's default path is
whatever ``Encoder()`` picks here (``runtime="auto"``).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from lookalike.indexer.defaults import DEFAULT_VIEWS
from lookalike.indexer.encoding import Encoder, mars_tiles
from lookalike.models.backbones import Backbone, create_backbone
from lookalike.models.defaults import MULTILEVEL_BACKBONE
from lookalike.models.hashing import fit_default


def sample_tiles(n: int, size: int = 128, seed: int = 0) -> tuple[np.ndarray, str]:
    """Real Mars tiles when the mosaic is in the data cache, else random pixels."""

    try:
        return mars_tiles(n, size), "mars_8k tiles"
    except Exception:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "random pixels"


def _jit_path(
    backbone: Backbone, size: int, batch_size: int
) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """torch.jit.trace + freeze + optimize_for_inference of the folded channels_last model."""
    enc = Encoder(backbone, batch_size=batch_size, device="cpu", runtime="torch")
    t0 = time.perf_counter()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = torch.rand(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(enc.model, example)))
        frozen(example)
    setup = time.perf_counter() - t0
    dim = enc.dim

    @torch.inference_mode()
    def run(tiles: np.ndarray) -> np.ndarray:
        out = np.empty((len(tiles), dim), dtype=np.float32)
        for start in range(0, len(tiles), batch_size):
            x = enc._prepare(tiles[start : start + batch_size]).contiguous(memory_format=torch.channels_last)
            out[start : start + len(x)] = frozen(x).numpy()
        return out

    return run, setup


def _compile_path(
    backbone: Backbone, size: int, batch_size: int
) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """torch.compile (inductor) of the folded channels_last model; setup includes compiling."""
    enc = Encoder(backbone, batch_size=batch_size, device="cpu", runtime="torch")
    compiled = torch.compile(enc.model, dynamic=False)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(torch.rand(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last))
    setup = time.perf_counter() - t0

    @torch.inference_mode()
    def run(tiles: np.ndarray) -> np.ndarray:
        out = np.empty((len(tiles), enc.dim), dtype=np.float32)
        for start in range(0, len(tiles), batch_size):
            batch = tiles[start : start + batch_size]
            if len(batch) < batch_size:  # one static shape: no recompiles
                batch = np.concatenate(
                    [batch, np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)]
                )
            x = enc._prepare(batch).contiguous(memory_format=torch.channels_last)
            out[start : start + len(x)] = compiled(x)[: len(out) - start].numpy()
        return out

    return run, setup


def _encoder_path(
    backbone: Backbone, size: int, batch_size: int, **kwargs
) -> tuple[Callable[[np.ndarray], np.ndarray], float, Encoder]:
    t0 = time.perf_counter()
    enc = Encoder(backbone, batch_size=batch_size, **{"views": 1, **kwargs})
    enc.features(np.zeros((1, size, size, 3), np.uint8))  # export / load / quantize now, not in timing
    return enc.features, time.perf_counter() - t0, enc


def _candidate_paths(
    backbone: Backbone,
    eager: Encoder,
    default: Encoder,
    size: int,
    batch_size: int,
    batch_sizes: tuple[int, ...],
    compile: bool,
    int8: bool,
    jit: bool,
) -> dict[str, dict]:
    """Set up every candidate path: ``run``, ``setup_s`` and ``what`` each, or ``error`` where a
    path cannot run here (reported, not fatal)."""
    paths: dict[str, dict] = {}

    def add(name: str, what: str, make: Callable[[], tuple]) -> None:
        try:
            run, setup, *_ = make()
            paths[name] = dict(run=run, setup_s=setup, what=what)
        except Exception as exc:  # a path that cannot run here is reported, not fatal
            paths[name] = dict(error=f"{type(exc).__name__}: {exc}"[:300], what=what)

    paths["eager"] = dict(run=eager.features, setup_s=0.0, what="plain eager PyTorch, NCHW, inference_mode")
    add(
        "torch",
        "BatchNorm folded, channels_last, inference_mode",
        lambda: _encoder_path(backbone, size, batch_size, device="cpu", runtime="torch"),
    )
    if jit:
        add(
            "torch-jit",
            "torch.jit trace + freeze + optimize_for_inference",
            lambda: _jit_path(backbone, size, batch_size),
        )
    if compile:
        add(
            "torch-compile",
            "torch.compile (inductor), static batch",
            lambda: _compile_path(backbone, size, batch_size),
        )
    add(
        "onnx",
        "ONNX Runtime fp32, all graph optimisations",
        lambda: _encoder_path(backbone, size, batch_size, device="cpu", runtime="onnx"),
    )
    for bs in batch_sizes:
        add(
            f"onnx-b{bs}",
            f"ONNX Runtime fp32, batch {bs}",
            lambda bs=bs: _encoder_path(backbone, size, bs, device="cpu", runtime="onnx"),
        )
    if int8:
        add(
            "onnx-int8",
            "ONNX Runtime int8 (static QDQ, per-channel, calibrated on Mars tiles)",
            lambda: _encoder_path(backbone, size, batch_size, device="cpu", runtime="onnx-int8"),
        )
    if default.device.type != "cpu":
        add(
            "cuda",
            f"Encoder() default on {default.device}",
            lambda: _encoder_path(backbone, size, batch_size),
        )
    return paths


def _time_paths(
    runnable: dict[str, dict], tiles: np.ndarray, batch_size: int, repeat: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Warm every path up, then time ``repeat`` interleaved rounds: each path's best seconds over
    all ``tiles``, and its features of the last round."""
    for p in runnable.values():  # warm-up: allocations, kernels
        p["run"](tiles[:batch_size])
    best = {k: float("inf") for k in runnable}
    feats: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        for name, p in runnable.items():
            t0 = time.perf_counter()
            feats[name] = p["run"](tiles)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, feats


def _compare_paths(
    paths: dict[str, dict], best: dict[str, float], feats: dict[str, np.ndarray], n_tiles: int
) -> tuple[dict[str, dict], float]:
    """One result row per path (rate, ratio to eager, feature and code errors against eager, or
    the error that kept it from running), and the eager rate in tiles/s."""
    ref = feats["eager"]
    hash_model = fit_default(ref)  # the default recipe, fitted on these tiles as an index would
    ref_bits = np.unpackbits(hash_model.encode(ref), axis=1)
    eager_rate = n_tiles / best["eager"]
    results = {}
    for name, p in paths.items():
        row = dict(what=p["what"])
        if name in best:
            f = feats[name]
            bits = np.unpackbits(hash_model.encode(f), axis=1)
            rate = n_tiles / best[name]
            row.update(
                tiles_per_s=round(rate, 1),
                ratio=round(rate / eager_rate, 3),
                setup_s=round(p["setup_s"], 2),
                max_feature_diff=float(np.abs(f - ref).max()),
                rel_feature_error=float(np.linalg.norm(f - ref) / np.linalg.norm(ref)),
                bit_error_rate=float((bits != ref_bits).mean()),
                codes_identical=float((bits == ref_bits).all(axis=1).mean()),
            )
        else:
            row["error"] = p["error"]
        results[name] = row
    return results, eager_rate


def _time_views(backbone: Backbone, tiles: np.ndarray, batch_size: int, repeat: int) -> dict[str, dict]:
    """Tiles/s of the default path pooling 1, the default and 8 views, and each one's cost
    relative to one view."""
    size = tiles.shape[1]
    views = {}
    for n_views in (1, DEFAULT_VIEWS, 8):
        run, _, _ = _encoder_path(backbone, size, batch_size, views=n_views)
        run(tiles[:batch_size])
        seconds = min(_timed(run, tiles) for _ in range(repeat))
        views[str(n_views)] = dict(tiles_per_s=round(len(tiles) / seconds, 1))
    for row in views.values():
        row["cost_vs_one_view"] = round(views["1"]["tiles_per_s"] / row["tiles_per_s"], 2)
    return views


def _time_multilevel(tiles: np.ndarray, batch_size: int, repeat: int, rate: float | None) -> dict:
    """Tiles/s of the multilevel backbone on the default path, and its cost against ``rate``
    (the default backbone's tiles/s, when known)."""
    multi_run, _, _ = _encoder_path(create_backbone(MULTILEVEL_BACKBONE), tiles.shape[1], batch_size)
    multi_run(tiles[:batch_size])
    multi_rate = len(tiles) / min(_timed(multi_run, tiles) for _ in range(repeat))
    return dict(
        backbone=MULTILEVEL_BACKBONE,
        tiles_per_s=round(multi_rate, 1),
        cost_vs_default=round(rate / multi_rate, 2) if rate else None,
    )


def bench_encode(
    n: int = 256,
    batch_size: int = 64,
    repeat: int = 3,
    batch_sizes: tuple[int, ...] = (16, 32, 128),
    compile: bool = True,
    int8: bool = True,
    jit: bool = True,
    backbone: Backbone | None = None,
) -> dict:
    """Time every candidate path on the same ``n`` tiles; eager NCHW fp32 is the reference.
    The multilevel feature (``--backbone efficientnet_lite0_multilevel``) is timed on the default
    path beside the default backbone, one view each."""

    tiles, what = sample_tiles(n)
    size = tiles.shape[1]
    backbone = backbone or create_backbone()
    # a copy: Module.to(memory_format=...) converts in place, and the caller's backbone stays as is
    # runtimes are compared one pass per tile; the cost of more views is timed after
    eager = Encoder(
        copy.deepcopy(backbone), batch_size=batch_size, optimize=False, device="cpu", runtime="torch", views=1
    )
    eager.model = eager.model.to(memory_format=torch.contiguous_format)
    default = Encoder(backbone, batch_size=batch_size, views=1)
    paths = _candidate_paths(backbone, eager, default, size, batch_size, batch_sizes, compile, int8, jit)
    runnable = {k: v for k, v in paths.items() if "run" in v}
    best, feats = _time_paths(runnable, tiles, batch_size, repeat)
    results, eager_rate = _compare_paths(paths, best, feats, len(tiles))
    default_name = default.runtime if default.device.type == "cpu" else "cuda"
    views = _time_views(backbone, tiles, batch_size, repeat)
    chosen = results.get(default_name, {})
    multilevel = _time_multilevel(tiles, batch_size, repeat, chosen.get("tiles_per_s"))
    return dict(
        n=len(tiles),
        tiles=what,
        batch_size=batch_size,
        repeat=repeat,
        threads=torch.get_num_threads(),
        cpu_count=_cpu_count(),
        device=str(default.device),
        default_runtime=default.runtime,
        eager_tiles_per_s=round(eager_rate, 1),
        ours_tiles_per_s=chosen.get("tiles_per_s"),
        ratio=chosen.get("ratio"),
        bit_error_rate=chosen.get("bit_error_rate"),
        max_feature_diff=chosen.get("max_feature_diff"),
        versions=_versions(),
        paths=results,
        default_views=DEFAULT_VIEWS,
        views=views,
        backbone=backbone.spec.name,
        multilevel=multilevel,
        reference="plain eager PyTorch fp32, NCHW, inference_mode, batch " + str(batch_size),
    )


def _timed(run: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray) -> float:
    t0 = time.perf_counter()
    run(tiles)
    return time.perf_counter() - t0


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _versions() -> dict:
    out = dict(torch=torch.__version__)
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except Exception:
        pass
    return out


def markdown_table(result: dict) -> str:
    """The ``paths`` of a ``bench_encode`` result as a Markdown table."""
    lines = [
        "| path | what | tiles/s | vs eager | setup s | max feature diff | bit error rate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["paths"].items():
        if "error" in row:
            lines.append(f"| {name} | {row['what']} | failed: {row['error']} | | | | |")
            continue
        mark = " (default)" if name == result["default_runtime"] and result["device"] == "cpu" else ""
        lines.append(
            f"| {name}{mark} | {row['what']} | {row['tiles_per_s']:.1f} | {row['ratio']:.2f}x | "
            f"{row['setup_s']:.1f} | {row['max_feature_diff']:.1e} | {row['bit_error_rate']:.4f} |"
        )
    if result.get("views"):
        lines += [
            "",
            f"Views (default runtime; each tile's feature averaged over its rotations/flips, "
            f"default {result['default_views']}):",
            "",
            "| views | tiles/s | cost vs 1 view |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {v} | {row['tiles_per_s']:.1f} | {row['cost_vs_one_view']:.2f}x |"
            for v, row in result["views"].items()
        ]
    if result.get("multilevel"):
        multi = result["multilevel"]
        lines += [
            "",
            f"`--backbone {multi['backbone']}` on the default path, one view: "
            f"{multi['tiles_per_s']:.1f} tiles/s, {multi['cost_vs_default']}x the cost of "
            f"{result['backbone']}.",
        ]
    return "\n".join(lines)
