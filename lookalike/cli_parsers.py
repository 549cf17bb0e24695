"""The ``lookalike`` parser: one sub-parser a command, each bound to its ``cmd_*`` function in
:mod:`lookalike.cli_commands`."""

from __future__ import annotations

import argparse

from lookalike import cli_options as opts
from lookalike.cli_commands import (
    cmd_bench,
    cmd_bench_encode,
    cmd_bench_index,
    cmd_bench_scale,
    cmd_bench_sublinear,
    cmd_demo,
    cmd_eval,
    cmd_eval_classify,
    cmd_fetch,
    cmd_index,
    cmd_info,
    cmd_landmarks,
    cmd_search,
    cmd_serve,
    cmd_train_classifier,
    cmd_train_hash,
)
from lookalike.config import INDEXES_ENV
from lookalike.indexer.defaults import ANN_NAMES, BATCH_SIZE
from lookalike.models.defaults import DEFAULT_BACKBONE, LITE_BACKBONES


def _fetch_parser(sub) -> None:
    f = sub.add_parser("fetch", help="download a registered dataset into the cache (LOOKALIKE_DATA)")
    f.add_argument(
        "name",
        help="a mosaic (mars_8k, earth_8k) or a scene collection (hirise_red_25cm, "
        "hirise_colour_5m, naip_5m, sentinel2_10m, landsat8_30m)",
    )
    f.set_defaults(func=cmd_fetch)


def _index_parser(sub) -> None:
    i = sub.add_parser("index", help="build (or --append to) an index from rasters or an image folder")
    i.add_argument("rasters", nargs="*", help=opts.RASTERS_HELP)
    i.add_argument("--out", required=True)
    i.add_argument("--images", help="root folder of image chips")
    i.add_argument("--labels", help="labels CSV: path,label[,split][,...], paths relative to --images")
    i.add_argument("--split", help="index only this split of the labels CSV")
    opts.add_image_size(i, "chips are resized to this size")
    i.add_argument("--name", help="source name (default: file stem)")
    opts.add_georeference(i, "CRS for rasters that lack one, e.g. EPSG:4326 or IAU_2015:49900")
    i.add_argument("--bands", type=opts.bands, help="1-based bands to use as RGB, e.g. 4,3,2")
    opts.add_products(i)
    opts.add_tiling(
        i, "only these zones, e.g. 33N,34N", "only tiles centred in west,south,east,north (degrees)"
    )
    i.add_argument(
        "--min-valid", type=opts.unit_interval, default=0.5, help="skip tiles with less valid data"
    )
    _add_index_encoding(i)
    _add_index_extras(i)
    i.set_defaults(func=cmd_index)


def _add_index_encoding(i: argparse.ArgumentParser) -> None:
    """``lookalike index``: how tiles become codes (hash model, backbone, runtime, views)."""
    i.add_argument(
        "--hash",
        help="hash model: a file, 'default' (the default: the shipped learned code "
        "plus PCA-ITQ bits fitted on the new tiles) or 'itq' (the PCA-ITQ baseline, "
        "fitted on them)",
    )
    i.add_argument("--bits", type=int, help=opts.BITS_HELP)
    i.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        help="feature extractor (models.backbones); "
        "efficientnet_lite0_multilevel needs --hash itq or a model trained on its features",
    )
    i.add_argument("--weights", help="local weights file for the backbone")
    opts.add_runtime(
        i,
        "encoder runtime: auto (ONNX Runtime fp32 on a CPU, torch on a GPU), torch, "
        "onnx, or onnx-int8 (faster, approximate: code bits differ)",
    )
    opts.add_views(
        i,
        "average each tile's features over this many rotations/flips (1, 2 = as is and "
        "turned 180 degrees, 4, 8); default 2, or the index's own with --append",
    )


def _add_index_extras(i: argparse.ArgumentParser) -> None:
    """``lookalike index``: appending, approximate indexes, prefetching, clusters, shards, catalogue."""
    i.add_argument("--append", action="store_true", help="add to an existing index")
    i.add_argument(
        "--ann",
        choices=ANN_NAMES,
        help="also store an approximate index (hnsw: faiss HNSW graph; usearch; ivf; lsh), "
        "measured against the scan so that --method auto uses it only where it keeps "
        "recall@1000 >= 0.95; with no rasters or images, add it to the index at --out",
    )
    i.add_argument(
        "--prefetch",
        type=int,
        metavar="CHUNKS",
        help="chunks of 512 tiles (or images) made ahead of the encoder on another thread "
        "(default: 2; 0 turns it off)",
    )
    i.add_argument(
        "--ann-param",
        action="append",
        metavar="NAME=INT",
        help="a build option of --ann, e.g. m=32 or ef_construction=40 (hnsw); repeatable",
    )
    i.add_argument(
        "--scheduler",
        help="tile and encode on a dask cluster: its scheduler address "
        "(tcp://HOST:8786) or 'local' for a LocalCluster on this machine",
    )
    i.add_argument(
        "--shards",
        type=int,
        help="write this many index shards plus shards.json "
        "(search them with: lookalike search OUT --scheduler ...)",
    )
    i.add_argument(
        "--footprints",
        help="with --images: place chips at the HiRISE observation named "
        "by their source_image column; 'hirise' (the cached observation table) or a CSV",
    )
    i.add_argument(
        "--classify",
        metavar="MODEL",
        help="with --images: classify every chip with "
        "this classifier ('hirise', 'msl' or a file) into the landmark catalogue",
    )


def _info_parser(sub) -> None:
    n = sub.add_parser("info", help="describe and verify an index")
    n.add_argument("index")
    opts.add_json(n)
    n.add_argument("--no-verify", action="store_true", help="skip the checksum verification")
    n.set_defaults(func=cmd_info)


def _search_parser(sub) -> None:
    s = sub.add_parser("search", help="search an index")
    s.add_argument("index")
    q = s.add_argument_group("query (exactly one)")
    q.add_argument("--tile", help="tile id")
    q.add_argument("--lonlat", type=opts.lonlat, help="lon,lat: the tile under this point")
    q.add_argument("--image", help="a picture, encoded like the index")
    q.add_argument("--positive", help="comma-separated tile ids to search like")
    q.add_argument("--negative", help="comma-separated tile ids to search unlike (with --positive)")
    s.add_argument("--k", type=int, default=1000)
    opts.add_filters(s)
    s.add_argument("--geojson", help="write hits as a GeoJSON FeatureCollection")
    opts.add_json(s, "write hits as JSON")
    s.add_argument("--show", type=opts.count, default=20, help="rows to print")
    s.add_argument("--no-verify", action="store_true")
    s.add_argument(
        "--method",
        choices=["exact", *ANN_NAMES, "auto"],
        default="auto",
        help="exact scan; hnsw, usearch, ivf, lsh: approximate (the one stored with --ann, "
        "else built in memory); auto: the stored one where it was measured to keep "
        "recall@1000 >= 0.95 faster than the scan, the scan elsewhere",
    )
    s.add_argument(
        "--scheduler",
        help="search shards on a dask cluster: scheduler address or 'local' "
        "(a sharded index without it uses 'local')",
    )
    s.set_defaults(func=cmd_search)


def _eval_parser(sub) -> None:
    e = sub.add_parser("eval", help="measure retrieval quality")
    esub = e.add_subparsers(dest="what", required=True)
    r = esub.add_parser("retrieval", help="mAP@k on a labelled image folder")
    opts.add_labelled_images(r)
    r.add_argument("--archive-split", default="train")
    r.add_argument("--query-split", default="test")
    r.add_argument("--k", type=int, default=64)
    how = r.add_mutually_exclusive_group()
    how.add_argument("--float", action="store_true", help="float backbone features, Euclidean")
    how.add_argument(
        "--hash",
        help="a hash model file, 'default' (the default recipe: the shipped learned "
        "code plus PCA-ITQ bits fitted on the archive) or 'itq'",
    )
    r.add_argument("--bits", type=int, help=opts.BITS_HELP)
    opts.add_image_size(r)
    opts.add_views(r, "average each image's features over this many rotations/flips (default 2)")
    r.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        help=f"feature extractor (default {DEFAULT_BACKBONE}; efficientnet_lite0_multilevel "
        "adds the pooled middle stage: use it with --float or --hash itq, since the default "
        "code reads the default's features)",
    )
    opts.add_json(r)
    r.set_defaults(func=cmd_eval)

    c = esub.add_parser("classify", help="accuracy and abstention of a classifier on a labelled image folder")
    c.add_argument("--model", required=True, help="a classifier file or a shipped model: hirise, msl")
    opts.add_labelled_images(c)
    c.add_argument("--split", default="test")
    c.add_argument("--threshold", type=float, default=0.9, help="abstain below this calibrated posterior")
    opts.add_json(c, "write the metrics here (and the plot beside it as .png)")
    c.add_argument("--plot", help="PNG of accuracy/abstention vs threshold and per-class precision/recall")
    c.add_argument("--curve", action="store_true", help="include the threshold curve in the JSON")
    c.set_defaults(func=cmd_eval_classify)


def _train_hash_parser(sub) -> None:
    t = sub.add_parser("train-hash", help="train a hashing head on cached backbone features")
    t.add_argument("--images", help="image folder (with --labels)")
    t.add_argument("--labels", help="labels CSV (unsupervised methods use only its paths)")
    t.add_argument(
        "--index",
        help="train without labels on this index's own tiles (mirs-ntxent or descartes-autoencoder)",
    )
    t.add_argument("--limit", type=int, help="with --index: sample this many tiles")
    t.add_argument("--split", default="train")
    opts.add_training(t, "report mAP@64 of this split against --split")
    t.add_argument(
        "--method",
        default="mirs-triplet",
        choices=[
            "mirs-triplet",
            "mirs-ntxent",
            "descartes-classifier",
            "descartes-autoencoder",
            "similarity",
        ],
        help="similarity: the default code's recipe, trained on a mix of imagery (--labelled, "
        "--unlabelled, --mosaic; --images/--labels count as one more labelled set)",
    )
    t.add_argument("--bits", type=int, default=128)
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument(
        "--labelled",
        action="append",
        metavar="ROOT=CSV",
        help="similarity: a labelled image folder (classes and neighbourhoods); repeatable",
    )
    t.add_argument(
        "--unlabelled",
        action="append",
        metavar="ROOT=CSV",
        help="similarity: an image folder whose neighbourhoods the code keeps (labels are "
        "read only for --val-split); repeatable",
    )
    t.add_argument(
        "--mosaic",
        action="append",
        help="similarity: every tile of this mosaic (mars_8k, earth_8k); repeatable",
    )
    t.add_argument("--steps", type=int, default=3000, help="similarity: optimiser steps")
    t.add_argument(
        "--label-blend",
        type=float,
        default=0.45,
        help="similarity: labelled pairs match (1 - b) * feature cosine + b * same class",
    )
    t.add_argument(
        "--supervised-weight",
        type=float,
        default=0.0,
        help="similarity: weight of a linear classifier per labelled set reading classes off the code",
    )
    t.add_argument(
        "--unbalanced",
        action="store_true",
        help="similarity: draw labelled items as they come, not class-balanced",
    )
    t.add_argument("--push-weight", type=float, default=0.1)
    t.add_argument("--balance-weight", type=float, default=0.1)
    t.add_argument("--inter-class-weight", type=float, default=0.0)
    t.add_argument(
        "--whiten-group",
        type=int,
        default=0,
        help="domain-specific group whitening with groups of this size (MIRS heads)",
    )
    t.add_argument("--entropy-weight", type=float, default=0.1, help="code entropy on the target domain")
    t.add_argument("--target-images", help="unlabelled target-domain image folder (for whitening)")
    t.add_argument("--target-labels", help="CSV listing the target images (labels are not read)")
    t.add_argument("--target-split", help="only this split of the target CSV")
    opts.add_image_size(t)
    opts.add_json(t)
    t.set_defaults(func=cmd_train_hash)


def _train_classifier_parser(sub) -> None:
    tc = sub.add_parser(
        "train-classifier",
        help="train a calibrated classifier: a probe on frozen backbone features, "
        "or (--finetune) the backbone's last blocks and a linear head",
    )
    opts.add_labelled_images(tc, "labels CSV: path,label[,split][,source_image]")
    tc.add_argument("--split", default="train")
    opts.add_training(tc, "report accuracy of this split (never used for fitting)")
    tc.add_argument(
        "--search",
        action="store_true",
        help="choose the head among a small grid by cross-validated accuracy on --split",
    )
    tc.add_argument("--hidden", type=int, default=256, help="hidden units of the MLP head, 0: linear")
    tc.add_argument(
        "--epochs",
        type=opts.positive_int,
        help="passes over the training images (default 40 for a probe, 12 with --finetune)",
    )
    _add_finetune_options(tc)
    _add_probe_and_fold_options(tc)
    opts.add_image_size(tc)
    tc.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        choices=LITE_BACKBONES,
        help="ImageNet backbone whose features (or last blocks) are trained on",
    )
    opts.add_json(tc)
    tc.set_defaults(func=cmd_train_classifier)


def _add_finetune_options(tc: argparse.ArgumentParser) -> None:
    """``lookalike train-classifier``: --finetune and the options that go with it."""
    tc.add_argument(
        "--finetune",
        action="store_true",
        help="fine-tune the backbone's last blocks on cached activations of the 8 "
        "rotations/flips of each image (CPU-friendly), instead of a probe",
    )
    tc.add_argument(
        "--cut",
        type=int,
        help="with --finetune: first trunk module trained (default: the first block of "
        "stage 6; EfficientNet-Lite0 14, Lite1/Lite2 18)",
    )
    tc.add_argument(
        "--tta",
        type=int,
        default=1,
        choices=opts.VIEW_CHOICES,
        help="with --finetune: the model averages its logits over this many "
        "rotations/flips of each image at test time (each one more backbone pass)",
    )
    tc.add_argument(
        "--calibrate-on",
        metavar="SPLIT",
        help="with --finetune: fit the temperature on this split (e.g. val; never a test "
        "split) and train on the whole --split; the report adds figures cross-fitted "
        "on it. Default: a grouped 10%% of --split held out of training",
    )
    tc.add_argument(
        "--balance",
        type=float,
        default=0.5,
        help="with --finetune: draw images of class c with weight n_c ** -BALANCE "
        "(0: as in the data, 1: class-balanced)",
    )


def _add_probe_and_fold_options(tc: argparse.ArgumentParser) -> None:
    """``lookalike train-classifier``: the probe's extra rows and loss weights; the folds of both."""
    tc.add_argument(
        "--views",
        type=int,
        default=0,
        help="augmented views added as training rows (with --search: the most any setting may use)",
    )
    tc.add_argument(
        "--class-weights",
        type=float,
        default=0.0,
        help="loss weight (n / n_class) ** this; 0: unweighted, 1: balanced",
    )
    tc.add_argument("--folds", type=int, default=5, help="cross-fit folds for calibration/selection")
    tc.add_argument("--group-by", help="labels column to group folds by (default: source_image if present)")
    tc.add_argument(
        "--group-pattern",
        help=r"group folds by the part of each file name matching this "
        r"regular expression, e.g. '^\d{4}' (the sol of MSL images)",
    )


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="what", required=True)
    bs = bsub.add_parser("search", help="exact scan vs faiss IndexBinaryFlat")
    bs.add_argument("--n", type=int, default=1_000_000)
    bs.add_argument("--bits", type=int, default=512)
    bs.add_argument("--k", type=int, default=1000)
    bs.add_argument("--repeat", type=int, default=5)
    bs.add_argument(
        "--queries",
        type=int,
        default=1,
        help="also time a batch of this many queries (one read of the codes) against faiss",
    )
    opts.add_json(bs)
    bs.set_defaults(func=cmd_bench)
    _bench_sublinear_parser(bsub)
    _bench_index_parser(bsub)
    _bench_scale_parser(bsub)
    be = bsub.add_parser("encode", help="tiles/s: eager PyTorch vs every candidate encoder path")
    be.add_argument("--n", type=int, default=256)
    be.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    be.add_argument("--repeat", type=int, default=3)
    be.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    be.add_argument("--no-int8", action="store_true", help="skip ONNX Runtime int8")
    opts.add_json(be)
    be.set_defaults(func=cmd_bench_encode)


def _bench_sublinear_parser(bsub) -> None:
    bl = bsub.add_parser(
        "sublinear", help="faiss / usearch approximate indexes vs the exact scan, realistic codes"
    )
    bl.add_argument("--n", type=int, default=10_000_000)
    bl.add_argument("--bits", type=int, default=128)
    bl.add_argument("--k", type=int, default=1000)
    bl.add_argument(
        "--source-index",
        action="append",
        help="index whose real codes are replicated (repeatable; default: the Mars demo index)",
    )
    bl.add_argument("--queries", type=int, default=100, help="half held-out real codes, half noisy variants")
    bl.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="multiply the per-bit flip rates estimated from neighbouring tiles",
    )
    bl.add_argument("--no-uniform", action="store_true", help="skip the uniform random codes")
    bl.add_argument("--methods", help="comma-separated subset of hnsw,usearch,ivf,lsh (default: all)")
    bl.add_argument(
        "--sweep",
        action="append",
        metavar="METHOD=V,V,...",
        help="values of a method's search option to measure (hnsw/usearch: ef, ivf: nprobe, "
        "lsh: nflip); repeatable",
    )
    bl.add_argument(
        "--param",
        action="append",
        metavar="METHOD.NAME=INT",
        help="a build option, e.g. hnsw.m=16 or ivf.nlist=8192; repeatable",
    )
    bl.add_argument(
        "--filter-share",
        type=float,
        help="also measure every setting under a random filter keeping this share of the rows",
    )
    bl.add_argument("--seed", type=int, default=0)
    opts.add_json(bl)
    bl.set_defaults(func=cmd_bench_sublinear)


def _bench_scale_parser(bsub) -> None:
    bc = bsub.add_parser(
        "scale",
        help="an index of N tiles grown from a real one: open, memory, search with and without filters",
    )
    bc.add_argument("--n", type=int, default=10_000_000)
    bc.add_argument(
        "--source-index", help="index whose codes and tiles are grown (default: the Mars demo index)"
    )
    bc.add_argument("--bits", type=int, default=128)
    bc.add_argument("--k", type=int, default=1000)
    bc.add_argument("--queries", type=int, default=20, help="half held-out real codes, half noisy variants")
    bc.add_argument("--seed", type=int, default=0)
    opts.add_json(bc)
    bc.set_defaults(func=cmd_bench_scale)


def _bench_index_parser(bsub) -> None:
    bx = bsub.add_parser(
        "index", help="a whole index build vs the encoder alone on the same tiles, per stage"
    )
    bx.add_argument("rasters", nargs="*", help=opts.RASTERS_HELP)
    bx.add_argument("--images", help="an image folder instead (with --labels)")
    bx.add_argument("--labels")
    bx.add_argument("--split", help="only this split of the labels CSV")
    opts.add_image_size(bx)
    opts.add_georeference(bx, "CRS for rasters that lack one", time=False)
    opts.add_tiling(bx)
    opts.add_runtime(bx)
    bx.add_argument(
        "--views", type=int, help="rotations/flips averaged per tile (default: as lookalike index)"
    )
    bx.add_argument(
        "--encode-sample",
        type=int,
        default=512,
        help="tiles held for timing the encoder alone (each timing encodes them 4 times)",
    )
    bx.add_argument("--no-serial", action="store_true", help="skip the reference build without the pipeline")
    opts.add_json(bx)
    bx.set_defaults(func=cmd_bench_index)


def _landmarks_parser(sub) -> None:
    lm = sub.add_parser("landmarks", help="find salient landmarks in scenes, crop, classify, catalogue")
    lm.add_argument("scenes", nargs="+", help="GeoTIFF/COG paths or registered mosaics (mars_8k)")
    lm.add_argument("--model", default="hirise", help="a classifier file or a shipped model: hirise, msl")
    lm.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="keep landmarks at or above this calibrated posterior (0 keeps all)",
    )
    lm.add_argument("--out", required=True, help="landmark table (Parquet)")
    lm.add_argument("--geojson", help="also write the landmark boxes as GeoJSON")
    lm.add_argument("--window", type=opts.window, help="x0,y0,x1,y1: only this part of the scene (pixels)")
    lm.add_argument("--border", type=int, default=30, help="pixels added around each region's crop")
    lm.add_argument("--max-regions", type=int, default=500, help="most salient regions per scene")
    lm.add_argument("--band", type=int, help="1-based band to use as grey (rasters of 5+ bands)")
    lm.add_argument(
        "--ground-scale",
        default="auto",
        help="metres per pixel to find landmarks at (finer scenes are averaged to it first); auto: "
        "the scale the shipped model learned from (hirise: 5.7 m, as HiRISE browse images); "
        "native: each scene's own (default: %(default)s)",
    )
    opts.add_georeference(lm, "CRS for rasters that lack one, e.g. IAU_2015:49900")
    opts.add_json(lm, "write the summary here too")
    lm.add_argument(
        "--index", help="also add the landmarks to this index's catalogue, each on the tile under its centre"
    )
    lm.add_argument(
        "--replace", action="store_true", help="with --index: replace the catalogue, not add to it"
    )
    lm.set_defaults(func=cmd_landmarks)


def _serve_parser(sub) -> None:
    v = sub.add_parser("serve", help="serve the explorer on an index")
    v.add_argument("index", nargs="+", help="one or more indexes (the body selector switches)")
    opts.add_server(v, "open a browser")
    v.set_defaults(func=cmd_serve)


def _demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="build the default Mars/Earth indexes if needed, then serve")
    d.add_argument(
        "--bodies",
        type=opts.words,
        default=["mars", "earth"],
        help="the planets to serve, comma-separated (default mars,earth)",
    )
    d.add_argument("--root", help=f"where demo indexes live (default ${INDEXES_ENV} or the cache)")
    opts.add_server(d)
    d.add_argument(
        "--no-hirise-layer", action="store_true", help="do not build or serve the HiRISE landmark crops layer"
    )
    d.set_defaults(func=cmd_demo)


COMMANDS = (
    _fetch_parser,
    _index_parser,
    _info_parser,
    _search_parser,
    _eval_parser,
    _train_hash_parser,
    _train_classifier_parser,
    _bench_parser,
    _serve_parser,
    _landmarks_parser,
    _demo_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``lookalike`` parser: one sub-parser a command, in the order ``--help`` lists them."""
    p = opts.Parser(prog="lookalike", description="Visual search over orbital imagery.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p
