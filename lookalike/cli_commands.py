"""What each ``lookalike`` command does: one call of the Python API per command, its arguments
taken from the parsed command line (see :mod:`lookalike.cli_parsers`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lookalike import cli_options as opts
from lookalike.errors import OptionError
from lookalike.fileio import atomic_write_bytes


def _write_json(path: str | None, payload: dict) -> None:
    """Print ``payload`` as JSON, and write it to ``path`` too when one is given."""
    text = json.dumps(payload, indent=2, default=str)
    if path:
        atomic_write_bytes(Path(path), text.encode())
    print(text)


# The modules behind a command are imported when it runs: --help does not pay for torch.
def cmd_fetch(args) -> None:
    from lookalike.data.registry import fetch
    from lookalike.data.scenes import SCENE_COLLECTIONS, fetch_scenes

    if args.name in SCENE_COLLECTIONS:
        print("\n".join(str(p) for p in fetch_scenes(args.name)))
    else:
        print(fetch(args.name))


def cmd_index(args) -> None:
    from lookalike.workflows.indexing import build_index, index_summary, shards_summary

    out = build_index(
        args.out,
        rasters=args.rasters,
        images=args.images,
        labels=args.labels,
        split=args.split,
        image_size=args.image_size,
        name=args.name,
        crs=args.crs,
        bounds=args.bounds,
        bands=args.bands or None,
        time=args.time,
        stacks=args.stack,
        body=args.body,
        time_from_name=args.time_from_name,
        times_csv=args.times,
        tile_size=args.tile_size,
        stride=args.stride,
        gsd=args.gsd,
        zones=args.zones,
        bbox=args.bbox,
        min_valid=args.min_valid,
        hash_path=args.hash,
        bits=args.bits,
        backbone=args.backbone,
        weights=args.weights,
        batch_size=args.batch_size,
        runtime=args.runtime,
        views=args.views,
        append=args.append,
        scheduler=args.scheduler,
        shards=args.shards,
        footprints=args.footprints,
        classify=args.classify,
        ann=args.ann,
        ann_params=opts.ann_params(args.ann_param),
        prefetch=args.prefetch,
    )
    _write_json(None, shards_summary(out) if args.shards else index_summary(out, verify=False))


def cmd_info(args) -> None:
    from lookalike.workflows.indexing import index_summary

    _write_json(args.json, index_summary(args.index, verify=not args.no_verify))


def cmd_search(args) -> None:
    import pandas as pd

    from lookalike.indexer.search import Query
    from lookalike.workflows.searching import hit_columns, run_search

    query = Query(
        tile_id=args.tile,
        lonlat=args.lonlat,
        image=args.image,
        positives=opts.words(args.positive) if args.positive else [],
        negatives=opts.words(args.negative) if args.negative else [],
    )
    hits, elapsed = run_search(
        args.index,
        query,
        k=args.k,
        filters=opts.filters_from(args),
        method=args.method,
        scheduler=args.scheduler,
        verify=not args.no_verify,
        geojson=args.geojson,
    )
    columns, method = hit_columns(hits), hits.attrs.get("method", args.method)
    if args.json:
        _write_json(
            args.json,
            dict(n_hits=len(hits), ms=elapsed, method=method, hits=hits[columns].to_dict("records")),
        )
        return
    with pd.option_context("display.max_rows", args.show, "display.width", 200):
        print(hits[columns].head(args.show).to_string(index=False))
    written = f"; GeoJSON written to {args.geojson}" if args.geojson else ""
    print(f"{len(hits)} hits in {elapsed:.1f} ms ({method}){written}")


def cmd_eval(args) -> None:
    from lookalike.workflows.evaluation import evaluate_retrieval

    result = evaluate_retrieval(
        args.images,
        args.labels,
        archive_split=args.archive_split,
        query_split=args.query_split,
        k=args.k,
        method="float" if args.float else "hash",
        hash_path=args.hash,
        bits=args.bits,
        image_size=args.image_size,
        backbone=args.backbone,
        **({} if args.views is None else dict(views=args.views)),
    )
    _write_json(args.json, result)


def cmd_eval_classify(args) -> None:
    from lookalike.workflows.evaluation import evaluate_classifier

    plot = args.plot
    if plot is None and args.json:
        plot = str(Path(args.json).with_suffix(".png"))
    result = evaluate_classifier(
        args.model, args.images, args.labels, split=args.split, threshold=args.threshold, plot=plot
    )
    if not args.curve:
        result.pop("curve")
    _write_json(args.json, result)


def cmd_train_classifier(args) -> None:
    from lookalike.models.classifier import ClassifierConfig
    from lookalike.workflows.classifier_training import (
        finetune_classifier_from_folder,
        train_classifier_from_folder,
    )

    if args.finetune:
        from lookalike.models.finetune import FinetuneConfig

        config = FinetuneConfig(
            cut=args.cut, epochs=args.epochs or FinetuneConfig.epochs, balance=args.balance, seed=args.seed
        )
        report = finetune_classifier_from_folder(
            args.images,
            args.labels,
            args.out,
            split=args.split,
            val_split=args.val_split,
            config=config,
            views=args.tta,
            calibration_split=args.calibrate_on,
            group_column=args.group_by,
            group_pattern=args.group_pattern,
            image_size=args.image_size,
            backbone=args.backbone,
        )
        _write_json(args.json, report)
        return
    config = ClassifierConfig(
        hidden=args.hidden,
        epochs=args.epochs or ClassifierConfig.epochs,
        views=args.views,
        class_weights=args.class_weights,
        seed=args.seed,
    )
    report = train_classifier_from_folder(
        args.images,
        args.labels,
        args.out,
        split=args.split,
        val_split=args.val_split,
        config=config,
        search=args.search,
        folds=args.folds,
        group_column=args.group_by,
        group_pattern=args.group_pattern,
        image_size=args.image_size,
        backbone=args.backbone,
    )
    if not args.search:
        report.pop("tried", None)
    _write_json(args.json, report)


def cmd_train_hash(args) -> None:
    from lookalike.models.training import SIMILARITY, SimilarityConfig, TrainConfig
    from lookalike.workflows.training import train_hash_head, train_similarity_code

    if args.method == SIMILARITY:
        labelled = opts.folder_pairs(args.labelled) + ([(args.images, args.labels)] if args.images else [])
        config = SimilarityConfig(
            bits=args.bits,
            steps=args.steps,
            label_blend=args.label_blend,
            supervised_weight=args.supervised_weight,
            balanced=not args.unbalanced,
            push_weight=args.push_weight,
            balance_weight=args.balance_weight,
            seed=args.seed,
        )
        report = train_similarity_code(
            args.out,
            config,
            labelled=labelled,
            unlabelled=opts.folder_pairs(args.unlabelled),
            mosaics=args.mosaic or [],
            split=args.split,
            val_split=args.val_split,
            image_size=args.image_size,
        )
        _write_json(args.json, report)
        return
    for option in ("labelled", "unlabelled", "mosaic"):
        if getattr(args, option):
            raise OptionError(f"--{option} is for --method similarity")
    config = TrainConfig(
        method=args.method,
        bits=args.bits,
        epochs=args.epochs,
        push_weight=args.push_weight,
        balance_weight=args.balance_weight,
        inter_class_weight=args.inter_class_weight,
        seed=args.seed,
        whiten_group=args.whiten_group,
        entropy_weight=args.entropy_weight,
    )
    report = train_hash_head(
        args.out,
        config,
        images=args.images,
        labels=args.labels,
        index=args.index,
        limit=args.limit,
        split=args.split,
        val_split=args.val_split,
        image_size=args.image_size,
        target_images=args.target_images,
        target_labels=args.target_labels,
        target_split=args.target_split,
    )
    _write_json(args.json, report)


def cmd_bench(args) -> None:
    from lookalike.bench.search import bench_search

    _write_json(args.json, bench_search(args.n, args.bits, args.k, repeat=args.repeat, queries=args.queries))


def cmd_bench_sublinear(args) -> None:
    from lookalike.bench.sublinear import bench_sublinear, markdown_table, parse_params, parse_sweeps

    result = bench_sublinear(
        args.n,
        args.bits,
        args.k,
        source_indexes=args.source_index,
        n_queries=args.queries,
        uniform=not args.no_uniform,
        noise_scale=args.noise_scale,
        seed=args.seed,
        methods=opts.words(args.methods) if args.methods else None,
        sweeps=parse_sweeps(args.sweep),
        params=parse_params(args.param),
        filter_share=args.filter_share,
    )
    print(markdown_table([result]))
    _write_json(args.json, result)


def cmd_bench_scale(args) -> None:
    from lookalike.bench.scale import bench_scale

    if args.source_index:
        source = args.source_index
    else:
        from lookalike.workflows.demo import ensure_demo_index

        source = ensure_demo_index("mars")
    result = bench_scale(args.n, source, bits=args.bits, k=args.k, n_queries=args.queries, seed=args.seed)
    _write_json(args.json, result)


def cmd_bench_index(args) -> None:
    from lookalike.bench.index import bench_index
    from lookalike.workflows.indexing import raster_sources

    sources = raster_sources(args.rasters, crs=args.crs, bounds=args.bounds) if args.rasters else None
    result = bench_index(
        sources,
        images=args.images,
        labels=args.labels,
        split=args.split,
        image_size=args.image_size,
        size=args.tile_size,
        stride=args.stride,
        gsd=args.gsd,
        zones=args.zones,
        bbox=args.bbox,
        runtime=args.runtime,
        batch_size=args.batch_size,
        serial=not args.no_serial,
        encode_sample=args.encode_sample,
        views=args.views,
    )
    _write_json(args.json, result)


def cmd_bench_encode(args) -> None:
    from lookalike.bench.encode import bench_encode, markdown_table

    result = bench_encode(
        args.n, args.batch_size, args.repeat, compile=not args.no_compile, int8=not args.no_int8
    )
    print(markdown_table(result), file=sys.stderr)
    _write_json(args.json, result)


def cmd_landmarks(args) -> None:
    from lookalike.workflows.landmarks import landmark_table

    summary = landmark_table(
        args.scenes,
        args.out,
        model=args.model,
        threshold=args.threshold,
        border=args.border,
        window=args.window,
        band=args.band,
        crs=args.crs,
        bounds=args.bounds,
        time=args.time,
        max_regions=args.max_regions,
        geojson=args.geojson,
        index=args.index,
        replace=args.replace,
        ground_scale=args.ground_scale,
    )
    _write_json(args.json, summary)


def cmd_serve(args) -> None:
    from lookalike.explorer.app import serve

    serve(args.index, port=args.port, show=args.show, address=args.address)


def cmd_demo(args) -> None:
    from lookalike.explorer.app import serve
    from lookalike.workflows.demo import demo_indexes

    serve(
        demo_indexes(args.bodies, args.root, hirise=not args.no_hirise_layer),
        port=args.port,
        show=args.show,
        address=args.address,
    )
