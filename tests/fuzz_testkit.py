"""Property-based fuzzing of every user input: the input families, their hypothesis strategies,
a prepared workspace and the checks. Shared by the fuzz tests (tests/test_fuzz_inputs.py,
tests/explorer/test_fuzz_links.py) and the long run (robustness/fuzz.py).

A check runs one input and says what happened (``Outcome``):

- ``SUCCEEDED``: a result (exit status 0; a share link applied and searched without an error);
- ``MESSAGE``: refused with a clear message: exit status 2 and exactly one stderr line starting
  ``lookalike: error:`` (progress bars aside), no traceback; in the explorer a ``state.error`` of
  one line, at most ``MESSAGE_LIMIT`` characters, naming no folder of the server; from the Python
  API a ``LookalikeError`` with a one-line message;
- ``CRASHED``: anything else: an exception escaping, a traceback on stderr, another exit status,
  a message of several lines, too long or naming a server folder, or a bug caught by a safety net
  (the explorer's "Search failed: ..." for exceptions it did not expect).

Work is kept tiny so the properties can run thousands of times, and no drawn input can start a
long job: option values in the valid range come from small ranges (``VALID`` below: epochs, sizes,
counts; image and tile sizes from a few values, as every new input size exports an ONNX model),
while invalid values (zero, negative, not numbers, NaN, infinities, numbers so huge that the
library refuses them before any work) are drawn freely. Rasters and images have at most a few
hundred pixels a side (except declared-only sizes: headers of decompression bombs). Dataset
names (``mars_8k``) are never drawn, and ``--scheduler`` only takes values that fail at once
(a real address waits 10 s for its connection).

The hypothesis settings come from two profiles: ``fuzz`` (the test suite: few examples, fixed
seed) and ``fuzz-long`` (the benchmark); ``family_settings`` scales them per family by cost.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import traceback
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ profiles
_SUPPRESS = [
    HealthCheck.too_slow,
    HealthCheck.filter_too_much,
    HealthCheck.data_too_large,
    HealthCheck.function_scoped_fixture,
    HealthCheck.large_base_example,
]
settings.register_profile(
    "fuzz",
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=_SUPPRESS,
    print_blob=True,
)
settings.register_profile(
    "fuzz-long",
    max_examples=2000,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=_SUPPRESS,
    print_blob=True,
)
PROFILE_ENV = "LOOKALIKE_FUZZ_PROFILE"


def family_settings(name: str, examples: int | None = None) -> settings:
    """Settings of one family: the profile's example count (or ``examples``) times the family's
    share (expensive families run fewer examples)."""
    profile = settings.get_profile(os.environ.get(PROFILE_ENV, "fuzz"))
    base = examples if examples is not None else profile.max_examples
    family = FAMILIES[name]
    share = family.fast_share if profile.derandomize and examples is None else family.long_share
    return settings(profile, max_examples=max(2, round(base * share)))


# ------------------------------------------------------------------ outcomes
class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    MESSAGE = "message"
    CRASHED = "crashed"


@dataclass
class Result:
    outcome: Outcome
    detail: str = ""  # the message, or why the input counts as a crash

    @property
    def crashed(self) -> bool:
        return self.outcome is Outcome.CRASHED


# a tqdm progress bar: "desc: 40%|####  | 4/10 [00:01<00:02, 3.1it/s]" or "desc: 20tile [00:00, ?tile/s]"
_PROGRESS = re.compile(r"\[\d+:\d+(?::\d+)?(?:<[^\]]*)?,[^\]]*\]\s*$")


def classify_cli(code: int, stderr: str) -> Result:
    """The outcome of a CLI run from its exit status and stderr (see the module docstring)."""
    if "Traceback (most recent call last)" in stderr:
        return Result(Outcome.CRASHED, "traceback on stderr: " + stderr[-600:])
    if code == 0:
        return Result(Outcome.SUCCEEDED)
    lines = [line for line in stderr.splitlines() if line.strip() and not _PROGRESS.search(line)]
    errors = [line for line in lines if line.startswith("lookalike: error:")]
    if code == 2 and len(lines) == 1 and len(errors) == 1:
        return Result(Outcome.MESSAGE, errors[0])
    return Result(Outcome.CRASHED, f"exit status {code}, stderr lines: {lines[:6]!r}")


def classify_error_message(
    message: str, *, limit: int | None = None, forbidden: tuple[str, ...] = ()
) -> Result:
    """A message a user sees: one line (``str.splitlines``), within ``limit`` characters,
    containing none of ``forbidden`` (server folders)."""
    if len(message.splitlines()) > 1:
        return Result(Outcome.CRASHED, f"message of several lines: {message[:400]!r}")
    if limit is not None and len(message) > limit:
        return Result(Outcome.CRASHED, f"message of {len(message)} > {limit} characters: {message[:200]!r}")
    for folder in forbidden:
        if folder and folder in message:
            return Result(Outcome.CRASHED, f"message names the server folder {folder}: {message[:300]!r}")
    return Result(Outcome.MESSAGE, message)


def run_python(fn: Callable[[], object]) -> Result:
    """Call the Python API: a result, a one-line ``LookalikeError``, or a crash."""
    from lookalike.errors import LookalikeError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except LookalikeError as exc:
            return classify_error_message(str(exc))
        except Exception as exc:  # noqa: BLE001 - what the fuzzing is looking for
            return Result(Outcome.CRASHED, _exception(exc))
    return Result(Outcome.SUCCEEDED)


def _exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = next(
        (
            f"{Path(f.filename).name}:{f.lineno}"
            for f in reversed(frames)
            if "/lookalike/" in f.filename or f"{REPO}/" in f.filename
        ),
        "?",
    )
    return f"{type(exc).__name__} at {where}: {str(exc)[:300]}"


# ------------------------------------------------------------------ the workspace
class Workspace:
    """Files the inputs refer to, made once: a synthetic index with a landmark catalogue, a
    small raster and an index of it (with backbone and hash model, for image queries), a folder
    of labelled image chips, a text file, an empty folder, corrupt index folders, and a cache
    folder (``LOOKALIKE_CACHE``) holding the ONNX models already exported on this machine."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache = self.root / "cache"
        self.sandboxes = self.root / "runs"
        self.sandboxes.mkdir(exist_ok=True)
        self._encoder = None
        self._opened: dict = {}
        self._prepare()

    # paths a drawn input may name, by key (``ws_path`` tokens)
    def path(self, key: str) -> Path:
        return self.paths[key]

    def _prepare(self) -> None:
        from explorer_testkit import fixture_landmarks
        from lookalike_testkit import make_index

        from lookalike.indexer.catalogue import attach_to_index

        self._link_onnx_cache()
        idx = make_index(self.root / "idx", n=200, bits=64, seed=5)
        attach_to_index(self.root / "idx", fixture_landmarks(idx.tiles))
        scene = write_raster(
            self.root / "scene.tif", np.random.default_rng(1).integers(1, 255, (1, 256, 256)).astype(np.uint8)
        )
        (self.root / "notes.txt").write_text("not an index, an image or a table\n")
        (self.root / "emptydir").mkdir(exist_ok=True)
        chips = self.root / "chips"
        chips.mkdir(exist_ok=True)
        rng = np.random.default_rng(2)
        rows = ["path,label,split"]
        for i in range(12):
            tone = 40 if i % 2 else 180
            write_png(chips / f"c{i:02d}.png", (rng.integers(0, 60, (32, 32, 3)) + tone).astype(np.uint8))
            rows.append(
                f"c{i:02d}.png,{'crater' if i % 2 else 'dune'},{('train', 'train', 'test', 'val')[i % 4]}"
            )
        (chips / "labels.csv").write_text("\n".join(rows) + "\n")
        with self.environment():
            from lookalike.workflows.indexing import build_index

            build_index(self.root / "ridx", rasters=[str(scene)], tile_size=64, stride=64, progress=False)
        self.paths = {
            "idx": self.root / "idx",
            "ridx": self.root / "ridx",
            "scene": scene,
            "chips": chips,
            "labels": chips / "labels.csv",
            "chip": chips / "c00.png",
            "notes": self.root / "notes.txt",
            "emptydir": self.root / "emptydir",
            "missing": self.root / "no-such-thing",
        }
        for name, manifest in corrupt_manifests(
            json.loads((self.root / "idx" / "manifest.json").read_text())
        ):
            target = self.root / f"corrupt-{name}"
            shutil.copytree(self.root / "idx", target)
            (target / "manifest.json").write_bytes(manifest)
            self.paths[f"corrupt-{name}"] = target

    def _link_onnx_cache(self) -> None:
        """The workspace's cache holds links to the ONNX models this machine exported before,
        so the fuzzing pays no exports for the usual sizes and writes none into the user cache."""
        from lookalike.config import onnx_dir

        own = self.cache / "onnx"
        own.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            user = onnx_dir()
            for model in user.glob("*.onnx") if user.is_dir() else ():
                with contextlib.suppress(FileExistsError):
                    (own / model.name).symlink_to(model)

    @contextlib.contextmanager
    def environment(self):
        from lookalike_testkit import environ

        with environ(LOOKALIKE_CACHE=self.cache):
            yield

    @contextlib.contextmanager
    def sandbox(self):
        """A fresh working folder for one input (relative output paths land there)."""
        path = Path(tempfile.mkdtemp(dir=self.sandboxes))
        old = os.getcwd()
        os.chdir(path)
        try:
            yield path
        finally:
            os.chdir(old)
            shutil.rmtree(path, ignore_errors=True)

    def link_index(self):
        """The synthetic index (with a landmark catalogue) the share links are applied to."""
        if self._opened.get("idx") is None:
            from lookalike.indexer.store import open_index

            self._opened["idx"] = open_index(self.path("idx"))
        return self._opened["idx"]

    def raster_index(self):
        """The index of the workspace's raster: it has a backbone and hash model (image queries)."""
        if self._opened.get("ridx") is None:
            from lookalike.indexer.store import open_index

            self._opened["ridx"] = open_index(self.path("ridx"))
        return self._opened["ridx"]

    def tiles(self):
        return self.link_index().tiles

    def manifest(self) -> dict:
        return json.loads((self.path("idx") / "manifest.json").read_text())

    def encoder(self):
        if self._encoder is None:
            from lookalike.indexer.encoding import Encoder

            with self.environment():
                self._encoder = Encoder(image_size=64)
        return self._encoder

    def resolve(self, value: str, sandbox: Path) -> str:
        """A drawn argument with its workspace tokens replaced by paths (``copy:`` keys are copied
        into the sandbox first, so a command may change them)."""

        def sub(match: re.Match) -> str:
            key = match.group(1)
            if key.startswith("copy:"):
                key = key[5:]
                target = sandbox / f"copy-{key}"
                if not target.exists():
                    shutil.copytree(self.paths[key], target)
                return str(target)
            if key.startswith("under:"):  # a path below an existing file or folder
                return str(self.paths[key[6:]] / "x")
            return str(self.paths[key])

        return _TOKEN.sub(sub, value)


_TOKEN = re.compile("\x00ws:([^\x00]+)\x00")


def ws(key: str) -> str:
    """A token naming a workspace path in a drawn argument."""
    return f"\x00ws:{key}\x00"


# ------------------------------------------------------------------ files
def write_raster(path: Path, data: np.ndarray, crs="EPSG:32633", transform=None, **profile) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    kwargs = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        transform=transform or from_origin(500_000, 5_000_000, 10, 10),
    )
    if crs is not None:
        kwargs["crs"] = crs
    kwargs.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **kwargs) as dst:
            dst.write(data)
    return Path(path)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return Path(path)


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` RGB pixels that holds a few bytes of pixel data
    (a decompression bomb's header when the size is huge, a truncated image otherwise)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def corrupt_manifests(manifest: dict) -> list[tuple[str, bytes]]:
    """Named manifests that are broken in one way each (for the prepared corrupt indexes)."""

    def with_(**changes):
        return json.dumps({**manifest, **changes}).encode()

    files = manifest["files"]
    return [
        ("notjson", b"{ not json"),
        ("list", b"[1, 2]"),
        ("empty", b""),
        ("nonutf8", b"\xff\xfe{"),
        ("version", with_(format_version=99)),
        ("nofiles", with_(files={})),
        ("count", with_(count=manifest["count"] + 1)),
        ("bits", with_(bits=7)),
        ("bitsstr", with_(bits="sixty-four")),
        ("codesname", with_(files={**files, "codes": {**files["codes"], "name": "../../etc/passwd"}})),
        ("tilesascodes", with_(files={**files, "tiles": files["codes"]})),
        ("sha", with_(files={**files, "codes": {**files["codes"], "sha256": "0" * 64}})),
        ("bytes", with_(files={**files, "codes": {**files["codes"], "bytes": -1}})),
        ("nohash", with_(files={k: v for k, v in files.items() if k != "hash"})),
        (
            "backbone",
            with_(backbone={"name": "efficientnet_lite0", "weights_sha256": "x"}, tiling={"size": "huge"}),
        ),
    ]


# ------------------------------------------------------------------ value strategies
# characters a command line can carry: anything but NUL (and lone surrogates, which only arise
# from undecodable bytes); URLs may carry NUL (%00), see LINK_TEXT
ARGV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
LINK_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
NUMBER_WORDS = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "0x10",
    "1_000",
    "",
    " ",
    "١٢",
    "1,5",
    "3.",
    ".5",
    "+7",
    "1e3",
    "9" * 5000,
]


def path_text() -> st.SearchStrategy[str]:
    """Arbitrary text as a path relative to the sandbox (never outside it)."""
    return ARGV_TEXT.map(lambda t: t.lstrip("/").replace("..", "__") or "x")


def not_int() -> st.SearchStrategy[str]:
    """Text that is not a whole number."""
    return st.one_of(
        st.sampled_from(NUMBER_WORDS), st.floats(allow_nan=True, allow_infinity=True).map(repr), ARGV_TEXT
    )


def int_value(lo: int, hi: int, refused: tuple[int, ...] = ()) -> st.SearchStrategy[str]:
    """A whole number valid in ``lo..hi`` (kept small: see VALID), an invalid one below, one of
    the ``refused`` huge values the library must refuse before working, or not a number."""
    valid = st.integers(lo, hi).map(str)
    options = [valid, valid, valid, st.integers(-(10**6), lo - 1).map(str), not_int()]
    if refused:
        options.append(st.sampled_from(refused).map(str))
    return st.one_of(*options)


def float_value(lo: float, hi: float) -> st.SearchStrategy[str]:
    """A number in ``lo..hi``, any float at all (NaN, infinities, huge), or not a number."""
    valid = st.floats(lo, hi).map(repr)
    return st.one_of(valid, valid, valid, st.floats().map(repr), st.sampled_from(NUMBER_WORDS), ARGV_TEXT)


def coords(n: int, lo: float = -200.0, hi: float = 200.0) -> st.SearchStrategy[str]:
    """``n`` comma-separated numbers (or another count, or not numbers)."""
    number = st.one_of(st.floats(lo, hi), st.floats(), st.integers(-(10**20), 10**20))
    return st.one_of(
        st.lists(number, min_size=n, max_size=n).map(lambda v: ",".join(map(repr, v))),
        st.lists(number, max_size=n + 2).map(lambda v: ",".join(map(str, v))),
        st.sampled_from(NUMBER_WORDS),
        ARGV_TEXT,
    )


def dates() -> st.SearchStrategy[str]:
    return st.one_of(
        st.dates().map(str),
        st.datetimes().map(lambda d: d.isoformat()),
        st.sampled_from(
            [
                "2010-13-45",
                "99999-01-01",
                "1e10",
                "now",
                "2010:06:30 12:00:00",
                "0000-00-00",
                "2010-01-01T25:00",
                "-2010-01-01",
                "today",
            ]
        ),
        ARGV_TEXT,
    )


def zones_text() -> st.SearchStrategy[str]:
    token = st.one_of(
        st.sampled_from(
            ["31N", "33N", "7s", " 32N ", "0S", "61N", "99Q", "N", "", "١N", "3.5N", "-3N", "1e1N"]
        ),
        ARGV_TEXT,
    )
    return st.lists(token, max_size=4).map(",".join)


def choice(values: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(values), st.sampled_from(values), ARGV_TEXT)


def in_path(*keys: str) -> st.SearchStrategy[str]:
    """An existing workspace path of ``keys`` (often the right kind), another one, or text."""
    every = ["missing", "notes", "emptydir", "chips", "labels", "chip", "scene", "idx", "ridx"]
    right = [st.sampled_from([ws(k) for k in keys])] * 4 if keys else []
    return st.one_of(*right, st.sampled_from([ws(k) for k in every]), path_text())


def out_path(suffix: str = "") -> st.SearchStrategy[str]:
    """Where a command writes: a new file, under a missing folder, under a file, onto a folder,
    the empty string, or arbitrary (relative) text."""
    return st.one_of(
        st.just("out" + suffix),
        st.just("new/dir/out" + suffix),
        st.sampled_from([ws("under:notes"), ws("emptydir"), ""]),
        path_text(),
    )


# valid ranges of the options that scale the work: small, so that no input starts a long job
VALID = dict(
    k=(1, 300),
    show=(0, 50),
    epochs=(1, 3),
    n=(1, 3000),
    repeat=(1, 2),
    queries=(1, 3),
    limit=(1, 8),
    folds=(2, 4),
    hidden=(0, 32),
    views=(0, 1),
    batch=(1, 128),
    shards=(1, 3),
    stride=(32, 256),
    border=(0, 64),
    max_regions=(1, 20),
    whiten=(0, 1280),
)
IMAGE_SIZES = ["32", "48", "64"]  # models already exported (an ONNX export per new size)
TILE_SIZES = ["32", "64", "128"]
HUGE = (10**12, 2**63, 10**30)  # refused by validation before any work
BITS = st.one_of(
    st.sampled_from(["8", "16", "64", "128", "256"]),
    int_value(-64, 7, refused=(65_544, 10**9, 2**40)),
    st.sampled_from(["7", "12", "100"]),
)
SIZES = st.one_of(st.sampled_from(IMAGE_SIZES), int_value(-5, 0, refused=(4097, 10**6, 10**12)))


@dataclass
class Option:
    flag: str
    value: st.SearchStrategy[str] | None  # None: a switch
    always: bool = False  # drawn for (nearly) every input, so the fuzzing reaches the deeper checks
    valid: st.SearchStrategy[str] | None = None  # for ``always`` options: usable values, drawn 3 in 4
    every: bool = False  # in every input (an option whose default would be a long job)


def command_argv(words: list[str], positional: list[st.SearchStrategy], options: list[Option]):
    """Strategy of argument lists for one command: its positional arguments, its ``always``
    options (nine times in ten) and up to four others, in any order, as ``--flag value`` or
    ``--flag=value``. Few options at a time: each may be invalid, and an input with many of them
    would nearly always stop at the first."""

    @st.composite
    def build(draw):
        argv = list(words)
        for p in positional:  # a value, or a list of values (nargs)
            value = draw(p)
            argv += value if isinstance(value, list) else [value]
        chosen = [o for o in options if o.every or (o.always and draw(st.integers(0, 9)) < 9)]
        chosen += draw(
            st.lists(
                st.sampled_from([o for o in options if not o.always]), max_size=4, unique_by=lambda o: o.flag
            )
        )
        chosen = draw(st.permutations(chosen))
        for o in chosen:
            if o.value is None:
                argv.append(o.flag)
                continue
            value = draw(o.value if o.valid is None else st.one_of(o.valid, o.valid, o.valid, o.value))
            if draw(st.booleans()):
                argv.append(f"{o.flag}={value}")
            else:
                argv += [o.flag, value]
        return argv

    return build()


def must(
    flag: str, value: st.SearchStrategy[str], valid: st.SearchStrategy[str], every: bool = False
) -> Option:
    """An option drawn for nearly every input (``every``: for every one), usually with a usable value."""
    return Option(flag, value, always=True, valid=valid, every=every)


def _cli_families() -> dict[str, st.SearchStrategy]:
    index_path = st.one_of(
        st.sampled_from([ws("idx"), ws("ridx")]),
        st.sampled_from([ws("idx"), ws("ridx")]),
        st.sampled_from([ws(k) for k in ("missing", "notes", "emptydir", "scene")]),
        st.sampled_from([ws(f"corrupt-{name}") for name, _ in corrupt_manifests(_TEMPLATE_MANIFEST)]),
        path_text(),
    )
    tiles = st.one_of(st.sampled_from([f"t{i:05d}" for i in (0, 1, 7, 199)] + ["t99999", ""]), ARGV_TEXT)
    tile_list = st.lists(tiles, max_size=4).map(",".join)
    scheduler = st.sampled_from(["nonsense", "", "tcp://", "tcp://:"])
    k = int_value(*VALID["k"], refused=(10_001, 10**6, *HUGE))
    images, labels = in_path("chips"), in_path("labels")
    usable_images, usable_labels = st.just(ws("chips")), st.just(ws("labels"))
    splits = choice(["train", "test", "val", "nope"])
    sizes = st.sampled_from(IMAGE_SIZES)
    epochs = st.integers(*VALID["epochs"]).map(str)
    raster = st.one_of(st.just(ws("scene")), in_path("scene"))

    search = command_argv(
        ["search"],
        [index_path],
        [
            must("--tile", tiles, st.sampled_from(["t00000", "t00001", "t00007"])),
            Option("--lonlat", coords(2)),
            Option("--image", in_path("chip")),
            Option("--positive", tile_list),
            Option("--negative", tile_list),
            Option("--k", k),
            Option("--zones", zones_text()),
            Option("--sources", ARGV_TEXT),
            Option("--labels", ARGV_TEXT),
            Option("--start", dates()),
            Option("--end", dates()),
            Option("--bbox", coords(4)),
            Option("--region", in_path("notes")),
            Option("--classes", choice(["crater", "dark_dune,streak"])),
            Option("--min-confidence", float_value(0.0, 1.0)),
            Option("--min-landmarks", int_value(1, 5, refused=HUGE)),
            Option("--geojson", out_path(".geojson")),
            Option("--json", out_path(".json")),
            Option("--show", int_value(*VALID["show"])),
            Option("--no-verify", None),
            Option("--method", choice(["exact", "hnsw", "usearch", "ivf", "lsh", "auto"])),
            Option("--scheduler", scheduler),
        ],
    )
    info = command_argv(
        ["info"], [index_path], [Option("--json", out_path(".json")), Option("--no-verify", None)]
    )
    index = command_argv(
        ["index"],
        [st.lists(raster, max_size=2).map(lambda r: r or [ws("scene")])],
        [
            must("--out", out_path(), st.just("out")),
            Option("--images", in_path("chips")),
            Option("--labels", in_path("labels")),
            Option("--split", choice(["train", "test", "nope"])),
            Option("--image-size", SIZES),
            Option("--name", ARGV_TEXT),
            Option(
                "--crs", choice(["EPSG:32633", "EPSG:4326", "IAU_2015:49900", "EPSG:99999", "+proj=ortho"])
            ),
            Option("--bounds", coords(4, -1e6, 1e6)),
            Option("--bands", choice(["1", "1,1,1", "3,2,1", "0", "1,2"])),
            Option("--time", dates()),
            Option(
                "--tile-size", st.one_of(st.sampled_from(TILE_SIZES), int_value(-5, 0, refused=(2049, 10**9)))
            ),
            Option("--stride", int_value(*VALID["stride"])),
            Option("--gsd", float_value(1.0, 80.0)),
            Option("--zones", zones_text()),
            Option("--bbox", coords(4)),
            Option("--min-valid", float_value(0, 1)),
            Option("--hash", choice(["itq", "default", ws("notes"), ws("missing")])),
            Option("--bits", BITS),
            Option("--backbone", choice(["efficientnet_lite0", "resnet50"])),
            Option("--weights", in_path("notes")),
            Option("--batch-size", int_value(*VALID["batch"])),
            Option("--runtime", choice(["auto", "torch", "onnx"])),
            Option("--append", None),
            Option("--scheduler", scheduler),
            Option("--shards", int_value(*VALID["shards"])),
            Option("--footprints", choice(["hirise", ws("notes"), ws("missing")])),
            Option("--classify", choice(["hirise", "msl", ws("notes")])),
            Option("--ann", choice(["hnsw", "ivf", "lsh", "annoy"])),
            Option("--prefetch", choice(["0", "2", "-1", "x"])),
            Option("--ann-param", choice(["m=16", "m=0", "m", "nlist=-3", "colour=1", "key_bits=99"])),
        ],
    )
    retrieval = command_argv(
        ["eval", "retrieval"],
        [],
        [
            must("--images", images, usable_images),
            must("--labels", labels, usable_labels),
            must("--image-size", SIZES, sizes),
            Option("--archive-split", splits),
            Option("--query-split", splits),
            Option("--k", k),
            Option("--float", None),
            Option("--hash", choice(["itq", "default", ws("notes")])),
            Option("--bits", BITS),
            Option("--json", out_path(".json")),
        ],
    )
    classify = command_argv(
        ["eval", "classify"],
        [],
        [
            must(
                "--model",
                choice(["hirise", "msl", ws("notes"), ws("chip")]),
                st.sampled_from(["hirise", "msl"]),
            ),
            must("--images", images, usable_images),
            must("--labels", labels, usable_labels),
            Option("--split", splits),
            Option("--threshold", float_value(0, 1)),
            Option("--json", out_path(".json")),
            Option("--plot", out_path(".png")),
            Option("--curve", None),
        ],
    )
    train_hash = command_argv(
        ["train-hash"],
        [],
        [
            must("--images", images, usable_images),
            must("--labels", labels, usable_labels),
            must("--epochs", int_value(*VALID["epochs"]), epochs),
            must("--image-size", SIZES, sizes),
            must("--out", out_path(".npz"), st.just("out.npz")),
            Option("--index", in_path("ridx", "idx")),
            Option("--limit", int_value(*VALID["limit"])),
            Option("--split", splits),
            Option("--val-split", splits),
            Option(
                "--method",
                choice(["mirs-triplet", "mirs-ntxent", "descartes-classifier", "descartes-autoencoder"]),
            ),
            Option("--bits", BITS),
            Option("--push-weight", float_value(0, 1)),
            Option("--balance-weight", float_value(0, 1)),
            Option("--inter-class-weight", float_value(0, 1)),
            Option("--seed", int_value(0, 2**32 - 1, refused=HUGE)),
            Option("--whiten-group", int_value(*VALID["whiten"])),
            Option("--entropy-weight", float_value(0, 1)),
            Option("--target-images", images),
            Option("--target-labels", labels),
            Option("--target-split", splits),
            Option("--json", out_path(".json")),
        ],
    )
    train_classifier = command_argv(
        ["train-classifier"],
        [],
        [
            must("--images", images, usable_images),
            must("--labels", labels, usable_labels),
            must("--out", out_path(".npz"), st.just("out.npz")),
            must("--epochs", int_value(*VALID["epochs"]), epochs),
            must("--folds", int_value(*VALID["folds"]), st.integers(*VALID["folds"]).map(str)),
            must("--image-size", SIZES, sizes),
            Option("--split", splits),
            Option("--val-split", splits),
            Option("--search", None),
            Option("--hidden", int_value(*VALID["hidden"])),
            Option("--views", int_value(*VALID["views"])),
            Option("--class-weights", float_value(0, 1)),
            Option("--group-by", choice(["label", "split", "path", "nope"])),
            Option("--group-pattern", choice([r"^c\d", "c", "(", r"(a+)+$", "[", ""])),
            Option("--seed", int_value(0, 2**32 - 1, refused=HUGE)),
            Option("--json", out_path(".json")),
        ],
    )
    landmarks = command_argv(
        ["landmarks"],
        [st.lists(raster, min_size=1, max_size=2)],
        [
            must("--out", out_path(".parquet"), st.just("out.parquet")),
            Option("--model", choice(["hirise", "msl", ws("notes")])),
            Option("--threshold", float_value(0, 1)),
            Option("--geojson", out_path(".geojson")),
            Option("--window", coords(4, -10, 300)),
            Option("--border", int_value(*VALID["border"], refused=HUGE)),
            Option("--max-regions", int_value(*VALID["max_regions"])),
            Option("--band", int_value(1, 2)),
            Option("--crs", choice(["EPSG:32633", "EPSG:4326", "nonsense"])),
            Option("--bounds", coords(4, -1e6, 1e6)),
            Option("--time", dates()),
            Option("--json", out_path(".json")),
            Option("--index", st.one_of(st.sampled_from([ws("copy:ridx"), ws("copy:idx")]), in_path())),
            Option("--replace", None),
        ],
    )
    bench = command_argv(
        ["bench", "search"],
        [],
        [
            must("--n", int_value(*VALID["n"], refused=HUGE), st.integers(*VALID["n"]).map(str), every=True),
            must("--repeat", int_value(*VALID["repeat"]), st.integers(*VALID["repeat"]).map(str)),
            must("--queries", int_value(*VALID["queries"]), st.integers(*VALID["queries"]).map(str)),
            Option("--bits", BITS),
            Option("--k", k),
            Option("--json", out_path(".json")),
        ],
    )
    return {
        "cli: search": search,
        "cli: info": info,
        "cli: index": index,
        "cli: eval retrieval": retrieval,
        "cli: eval classify": classify,
        "cli: landmarks": landmarks,
        "cli: train-hash": train_hash,
        "cli: train-classifier": train_classifier,
        "cli: bench search": bench,
    }


_TEMPLATE_MANIFEST = {"files": {"codes": {}, "tiles": {}, "hash": {}}, "count": 0}


def check_cli(workspace: Workspace, argv: list[str]) -> Result:
    """Run ``lookalike ARGV`` in-process in a fresh sandbox folder."""
    from lookalike_testkit import run_main

    with workspace.sandbox() as sandbox, workspace.environment():
        args = [workspace.resolve(a, sandbox) for a in argv]
        try:
            with warnings.catch_warnings():
                code, _, stderr = run_main(args)
        except Exception as exc:  # noqa: BLE001
            return Result(Outcome.CRASHED, _exception(exc))
    return classify_cli(code, stderr)


# ------------------------------------------------------------------ share links
def link_params(tile_ids: list[str], classes: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Query-string parameters of a share link: each key absent, plausible (so searches run) or
    arbitrary text (URL values may hold any character, NUL included)."""
    number = st.one_of(
        st.floats(-400, 400),
        st.floats(),
        st.integers(-(10**20), 10**20),
        st.sampled_from([1e308, -1e308, 5e-324]),
    )
    pair = st.lists(number, min_size=0, max_size=3)
    box = st.one_of(st.lists(number, min_size=4, max_size=4), pair, number, st.text(max_size=4), st.none())
    polygon = st.one_of(
        st.lists(st.one_of(st.lists(number, min_size=2, max_size=2), pair, st.none()), max_size=6),
        number,
        st.none(),
    )
    regions = st.fixed_dictionaries(
        {}, optional={"boxes": st.lists(box, max_size=3), "polygons": st.lists(polygon, max_size=3)}
    )
    json_value = st.recursive(
        st.none() | st.booleans() | number | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=8,
    )
    tiles = st.sampled_from(tile_ids)
    tile_list = st.lists(st.one_of(tiles, LINK_TEXT), max_size=4).map(",".join)

    def mixed(plausible):
        return st.one_of(plausible, plausible, LINK_TEXT)

    def numbers(n):
        return st.one_of(st.lists(number, min_size=n, max_size=n), st.lists(number, max_size=n + 2)).map(
            lambda v: ",".join(map(str, v))
        )

    keys = {
        "body": mixed(st.sampled_from(["Mars", "Earth", "mars", "", "Vulcan"])),
        "index": mixed(st.sampled_from(["mars_small", "mars", ""])),
        "view": mixed(st.sampled_from(["global", "north", "south", "", "sideways", "<b>"])),
        "tile": st.one_of(tiles, tiles, tiles, LINK_TEXT),
        "k": mixed(st.integers(-10, 20_000).map(str)),
        "zones": mixed(zones_text()),
        "from": mixed(dates()),
        "to": mixed(dates()),
        "bbox": mixed(numbers(4)),
        "pos": mixed(tile_list),
        "neg": mixed(tile_list),
        "examples": mixed(st.sampled_from(["1", "0", ""])),
        "regions": st.one_of(
            regions.map(json.dumps),
            regions.map(json.dumps),
            json_value.map(json.dumps),
            st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
            st.just("[" * 100_000),
            LINK_TEXT,
        ),
        "classes": mixed(
            st.lists(st.sampled_from(classes + ["", "nope", "crater\n<b>"]), max_size=3).map(",".join)
        ),
        "conf": mixed(st.one_of(st.floats(0, 1), st.floats()).map(str)),
        "min_n": mixed(st.integers(-3, 10**6).map(str)),
    }
    assert set(keys) == set(LINK_KEYS)
    return st.fixed_dictionaries({}, optional=keys)


# the share-link parameters drawn (tests/test_fuzz_inputs.py checks them against explorer.sessions.URL_KEYS)
LINK_KEYS = (
    "body",
    "index",
    "view",
    "tile",
    "k",
    "zones",
    "from",
    "to",
    "bbox",
    "pos",
    "neg",
    "examples",
    "regions",
    "classes",
    "conf",
    "min_n",
)


class _ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def check_link(index, name: str, params: dict[str, str]) -> Result:
    """Apply a share link's parameters to a fresh explorer session on ``index`` (which runs its
    search), then read what the views read. The session's message must be one clear line."""
    from lookalike.explorer.public_messages import MESSAGE_LIMIT
    from lookalike.explorer.state import ExplorerState

    handler = _ErrorLog()
    state_log = logging.getLogger("lookalike.explorer.state")
    state_log.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = ExplorerState(index=index, index_name=name)
            state.apply_url_params(params)
            state.facet_counts()
            state.visible_landmarks()
            state.describe_filters()
            state.url_query()
            state.page_hits()
            state.geojson()
    except Exception as exc:  # noqa: BLE001
        return Result(Outcome.CRASHED, _exception(exc))
    finally:
        state_log.removeHandler(handler)
    if handler.records:  # the safety net caught a bug ("Search failed: ...")
        return Result(Outcome.CRASHED, f"logged: {handler.records[0].getMessage()}; error: {state.error!r}")
    if not state.error:
        return Result(Outcome.SUCCEEDED)
    # the server's folders (short ones such as /tmp could be the user's own input, quoted back)
    folders = (str(index.path), str(index.path.parent), str(REPO))
    return classify_error_message(state.error, limit=MESSAGE_LIMIT, forbidden=folders)


# ------------------------------------------------------------------ GeoJSON regions
def geojson_values() -> st.SearchStrategy:
    """Region values: valid (multi)polygons, invalid ones (bow ties, open rings, too few points),
    other geometry types, features and collections, huge or non-finite coordinates, empty, and
    random JSON values."""
    number = st.one_of(
        st.floats(-200, 200),
        st.floats(),
        st.integers(-(10**30), 10**30),
        st.sampled_from([0, 180, -180, 90, 1e308, -1e308]),
    )
    xy = st.tuples(st.one_of(st.floats(-180, 180), number), st.one_of(st.floats(-90, 90), number)).map(list)
    point = st.one_of(xy, st.lists(number, max_size=4))
    ring = st.one_of(
        st.lists(xy, min_size=3, max_size=8).map(lambda r: r + [r[0]]), st.lists(point, max_size=6)
    )
    polygon = st.builds(lambda rings: {"type": "Polygon", "coordinates": rings}, st.lists(ring, max_size=3))
    multi = st.builds(
        lambda ps: {"type": "MultiPolygon", "coordinates": [p["coordinates"] for p in ps]},
        st.lists(polygon, max_size=3),
    )
    other = st.builds(
        lambda t, c: {"type": t, "coordinates": c},
        st.sampled_from(["Point", "MultiPoint", "LineString", "MultiLineString", "Bogus", ""]),
        st.one_of(point, ring, st.lists(ring, max_size=2), number, st.none()),
    )
    geometry = st.one_of(polygon, polygon, multi, other)
    collection = st.builds(
        lambda gs: {"type": "GeometryCollection", "geometries": gs}, st.lists(geometry, max_size=3)
    )
    feature = st.builds(
        lambda g: {"type": "Feature", "geometry": g, "properties": {}},
        st.one_of(geometry, collection, st.none()),
    )
    features = st.builds(
        lambda fs: {"type": "FeatureCollection", "features": fs},
        st.lists(st.one_of(feature, feature, st.none(), number), max_size=3),
    )
    json_value = st.recursive(
        st.none() | st.booleans() | number | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(["type", "coordinates", "geometry", "features", "geometries"]), c, max_size=3
            )
        ),
        max_leaves=10,
    )
    return st.one_of(geometry, collection, feature, features, json_value)


def region_files() -> st.SearchStrategy[bytes]:
    """Contents of a ``--region`` file: GeoJSON values, broken JSON, deep nesting, bytes."""
    return st.one_of(
        geojson_values().map(lambda v: json.dumps(v).encode()),
        geojson_values().map(lambda v: json.dumps(v).encode()[:-3]),
        st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
        st.sampled_from([b"", b"null", b"{}", b"\xff\xfe\x00", b"\xef\xbb\xbf{}", b"NaN"]),
        st.binary(max_size=200),
    )


def check_region_api(tiles, region) -> Result:
    from lookalike.indexer.search import Filters, filter_mask

    return run_python(lambda: (filter_mask(tiles, Filters(region=region)), Filters(region=region).describe()))


def check_region_cli(workspace: Workspace, content: bytes, extra: list[str]) -> Result:
    with workspace.sandbox() as sandbox:
        (sandbox / "region.geojson").write_bytes(content)
        return check_cli(
            workspace, ["search", ws("idx"), "--region", str(sandbox / "region.geojson"), *extra]
        )


# ------------------------------------------------------------------ labels CSVs
def labels_csvs() -> st.SearchStrategy[bytes]:
    """Labels CSV contents: well-formed rows over existing, missing and odd paths, missing
    columns, odd splits, quoting, random bytes, non-UTF-8, empty."""
    existing = st.sampled_from([f"c{i:02d}.png" for i in range(12)])
    cell = st.one_of(
        *[existing] * 8,
        st.sampled_from(
            [
                "missing.png",
                "labels.csv",
                "../chips/c00.png",
                "/etc/hostname",
                "",
                " ",
                "sub/",
                "c00.png\n",
                "c00.png ",
            ]
        ),
        st.text(max_size=12),
    )
    label = st.one_of(
        st.sampled_from(["crater", "dune"]), st.sampled_from(["crater", "dune", ""]), st.text(max_size=8)
    )
    split = st.one_of(
        st.sampled_from(["train", "test"]), st.sampled_from(["train", "test", "val", ""]), st.text(max_size=6)
    )
    header = st.one_of(
        st.just(["path", "label", "split"]),
        st.just(["path", "label", "split"]),
        st.just(["path", "label"]),
        st.permutations(["path", "label", "split"]).map(list),
        st.lists(st.sampled_from(["path", "label", "split", "source_image", "", "x", "path"]), max_size=4),
    )
    row = st.tuples(cell, label, split).map(list)

    def csv_text(head, rows, quote):
        import csv

        buf = io.StringIO()
        writer = csv.writer(buf, quoting=csv.QUOTE_ALL if quote else csv.QUOTE_MINIMAL)
        writer.writerow(head)
        writer.writerows(r[: max(len(head), 1)] for r in rows)
        return buf.getvalue().encode()

    structured = st.builds(csv_text, header, st.lists(row, min_size=1, max_size=4), st.booleans())
    return st.one_of(
        structured,
        structured,
        structured,
        structured.map(lambda b: b.replace(b"c0", b"\xff\xfe")),  # not UTF-8
        st.sampled_from(
            [
                b"",
                b"\n",
                b"path,label\n",
                b"path,label\n\x00\x00\n",
                b'"path,label\n',
                b"path;label\nc00.png;crater\n",
                "path,label\nc00.png,cr\u00e4ter\n".encode("latin-1"),
            ]
        ),
        st.binary(max_size=200),
    )


def check_labels_api(workspace: Workspace, content: bytes, split: str | None) -> Result:
    from lookalike.indexer.image_folders import read_labels

    with workspace.sandbox() as sandbox:
        (sandbox / "labels.csv").write_bytes(content)
        return run_python(lambda: read_labels(workspace.path("chips"), sandbox / "labels.csv", split=split))


def check_labels_cli(workspace: Workspace, content: bytes, split: str | None) -> Result:
    with workspace.sandbox() as sandbox:
        (sandbox / "labels.csv").write_bytes(content)
        argv = [
            "index",
            "--images",
            ws("chips"),
            "--labels",
            str(sandbox / "labels.csv"),
            "--out",
            "out",
            "--image-size",
            "32",
        ] + (["--split", split] if split is not None else [])
        return check_cli(workspace, argv)


# ------------------------------------------------------------------ rasters
@dataclass
class RasterCase:
    """A raster file to write: its pixels and profile, then maybe truncated or damaged."""

    kind: str
    width: int = 64
    height: int = 64
    count: int = 1
    dtype: str = "uint8"
    fill: str = "noise"  # noise, nodata, constant, nan, inf
    crs: str | None = "EPSG:32633"
    pixel: float = 10.0
    origin: tuple[float, float] = (500_000.0, 5_000_000.0)
    nodata: float | None = None
    compress: str | None = None
    cut: float = 1.0  # keep this share of the bytes
    flips: int = 0  # bytes overwritten after the header
    seed: int = 0

    def write(self, path: Path) -> Path:
        from rasterio.transform import from_origin

        if self.kind == "zero":
            path.write_bytes(b"")
            return path
        if self.kind == "text":
            path.write_text("GeoTIFF? no.\n")
            return path
        if self.kind == "png":
            return write_png(path, np.zeros((self.height, self.width, 3), np.uint8))
        rng = np.random.default_rng(self.seed)
        shape = (self.count, self.height, self.width)
        if self.fill == "noise":
            data = (
                rng.integers(1, 250, shape).astype(self.dtype)
                if np.dtype(self.dtype).kind in "ui"
                else (rng.random(shape) * 1000).astype(self.dtype)
            )
        elif self.fill == "nodata":
            data = np.full(shape, self.nodata if self.nodata is not None else 0).astype(self.dtype)
        elif self.fill in ("nan", "inf"):
            data = np.full(shape, np.nan if self.fill == "nan" else np.inf, dtype="float32")
        else:
            data = np.full(shape, 7).astype(self.dtype)
        profile = {} if self.nodata is None else dict(nodata=self.nodata)
        if self.compress:
            profile.update(compress=self.compress, tiled=True, blockxsize=16, blockysize=16)
        write_raster(
            path, data, crs=self.crs, transform=from_origin(*self.origin, self.pixel, self.pixel), **profile
        )
        blob = bytearray(path.read_bytes())
        if self.cut < 1.0:
            blob = blob[: int(len(blob) * self.cut)]
        flip = np.random.default_rng(self.seed + 1)
        for _ in range(self.flips if len(blob) > 300 else 0):
            blob[int(flip.integers(200, len(blob)))] = int(flip.integers(0, 256))
        path.write_bytes(bytes(blob))
        return path


def raster_cases() -> st.SearchStrategy[RasterCase]:
    """A usable 64 x 64 GeoTIFF changed in up to three ways (size, bands, data type, fill, CRS,
    pixel size, origin, nodata, compression, truncation, damaged bytes), or not a GeoTIFF."""
    odd = {
        "width": st.sampled_from([1, 2, 17, 200]),
        "height": st.sampled_from([1, 2, 17, 200]),
        "count": st.sampled_from([2, 3, 4]),
        "dtype": st.sampled_from(["uint16", "int16", "float32", "float64", "complex64"]),
        "fill": st.sampled_from(["nodata", "constant", "nan", "inf"]),
        "crs": st.sampled_from(["EPSG:4326", "EPSG:3857", "IAU_2015:49900", None, 'LOCAL_CS["x"]']),
        "pixel": st.sampled_from([0.001, 1e-9, 1e6, 0.25]),
        "origin": st.sampled_from([(10.0, 50.0), (-1e12, 1e12), (179.9, 89.9), (0.0, 0.0)]),
        "nodata": st.sampled_from([0, 255]),
        "compress": st.sampled_from(["deflate", "lzw"]),
        "cut": st.sampled_from([0.99, 0.6, 0.2, 0.01]),
        "flips": st.sampled_from([5, 50]),
    }
    changes = st.lists(st.sampled_from(sorted(odd)), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: odd[name] for name in names})
    )
    usable = st.builds(
        lambda seed, changes: RasterCase("tif", seed=seed, **changes), st.integers(0, 100), changes
    )
    return st.one_of(
        usable, usable, usable, st.builds(RasterCase, kind=st.sampled_from(["zero", "text", "png"]))
    )


def check_raster_api(workspace: Workspace, case: RasterCase, crs: str | None, bands) -> Result:
    """Open a raster and cut its first tiles (at most 50)."""
    from lookalike.indexer.sources import RasterSource
    from lookalike.indexer.tiling import TileGrid

    def cut(path: Path) -> None:
        source = RasterSource(str(path), crs=crs, bands=bands)
        for _ in zip(range(50), source.tiles(TileGrid(32, 32, source.native_gsd))):
            pass

    with workspace.sandbox() as sandbox:
        path = case.write(sandbox / "r.tif")
        return run_python(lambda: cut(path))


def check_raster_cli(workspace: Workspace, case: RasterCase, extra: list[str]) -> Result:
    with workspace.sandbox() as sandbox:
        path = case.write(sandbox / "r.tif")
        return check_cli(
            workspace, ["index", str(path), "--out", "out", "--tile-size", "32", "--stride", "32", *extra]
        )


# ------------------------------------------------------------------ image queries
@dataclass
class ImageCase:
    kind: str  # a Pillow format, "header" (declared size only), "text", "empty"
    mode: str = "RGB"
    width: int = 16
    height: int = 16
    cut: float = 1.0
    flips: int = 0
    seed: int = 0

    def write(self, path: Path) -> Path:
        from PIL import Image

        if self.kind == "empty":
            path.write_bytes(b"")
        elif self.kind == "text":
            path.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
        elif self.kind == "header":
            path.write_bytes(png_header(self.width, self.height))
        else:
            im = Image.new(self.mode, (self.width, self.height))
            buf = io.BytesIO()
            im.save(buf, self.kind)
            blob = bytearray(buf.getvalue())
            blob = blob[: max(1, int(len(blob) * self.cut))]
            flip = np.random.default_rng(self.seed)
            for _ in range(self.flips if len(blob) > 40 else 0):
                blob[int(flip.integers(20, len(blob)))] = int(flip.integers(0, 256))
            path.write_bytes(bytes(blob))
        return path


def image_cases() -> st.SearchStrategy[ImageCase]:
    formats = {
        "PNG": ["RGB", "L", "I;16", "RGBA", "P", "1", "LA"],
        "JPEG": ["RGB", "L", "CMYK"],
        "TIFF": ["RGB", "F", "I;16", "CMYK", "I"],
        "GIF": ["P", "L"],
        "BMP": ["RGB"],
        "WEBP": ["RGB"],
    }
    saved = st.sampled_from(sorted(formats)).flatmap(
        lambda f: st.builds(
            ImageCase,
            kind=st.just(f),
            mode=st.sampled_from(formats[f]),
            width=st.sampled_from([1, 3, 64, 300]),
            height=st.sampled_from([1, 5, 64]),
            cut=st.sampled_from([1.0, 1.0, 0.9, 0.5, 0.1]),
            flips=st.sampled_from([0, 0, 3, 30]),
            seed=st.integers(0, 1000),
        )
    )
    bombs = st.builds(
        ImageCase,
        kind=st.just("header"),
        width=st.sampled_from([100_000, 20_000, 10_000, 1, 0, 2**31 - 1]),
        height=st.sampled_from([100_000, 10_000, 5_000, 1, 0]),
    )
    return st.one_of(saved, saved, bombs, st.builds(ImageCase, kind=st.sampled_from(["text", "empty"])))


def check_image_api(workspace: Workspace, index, case: ImageCase) -> Result:
    from lookalike.indexer.search import Query, search_index

    with workspace.sandbox() as sandbox:
        path = case.write(sandbox / "query.img")
        with workspace.environment():
            return run_python(
                lambda: search_index(index, Query(image=path), k=5, encoder=workspace.encoder())
            )


def check_image_cli(workspace: Workspace, case: ImageCase, extra: list[str]) -> Result:
    with workspace.sandbox() as sandbox:
        path = case.write(sandbox / "query.img")
        return check_cli(workspace, ["search", ws("ridx"), "--image", str(path), "--k", "5", *extra])


# ------------------------------------------------------------------ corrupted manifests
def manifests(template: dict) -> st.SearchStrategy[str]:
    """An index's manifest with keys replaced by random JSON values, removed or added."""
    value = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(["name", "bytes", "sha256", "size", "image_size", "x"]), c, max_size=3
            )
        ),
        max_leaves=6,
    )
    keys = sorted(template) + ["files.codes", "files.tiles", "files.hash", "files.landmarks", "extra"]

    def mutate(changes):
        out = json.loads(json.dumps(template))
        # entries of "files" first: "files" itself may be replaced by something else after
        for key, (drop, new) in sorted(changes.items(), key=lambda kv: not kv[0].startswith("files.")):
            holder, name = (out["files"], key[6:]) if key.startswith("files.") else (out, key)
            if drop:
                holder.pop(name, None)
            else:
                holder[name] = new
        return json.dumps(out)

    return st.dictionaries(
        st.sampled_from(keys), st.tuples(st.booleans(), value), min_size=1, max_size=3
    ).map(mutate)


def check_manifest(workspace: Workspace, manifest: str, command: list[str]) -> Result:
    with workspace.sandbox() as sandbox:
        target = sandbox / "idx"
        shutil.copytree(workspace.path("idx"), target)
        (target / "manifest.json").write_text(manifest)
        return check_cli(workspace, [command[0], str(target), *command[1:]])


# ------------------------------------------------------------------ the families
@dataclass
class Family:
    """One kind of input: a strategy of inputs, the check of one input, how to describe it, and
    its share of the examples in the fast suite and in the long run (costly ones run fewer)."""

    strategy: Callable[[Workspace], st.SearchStrategy]
    check: Callable[[Workspace, object], Result]
    fast_share: float = 1.0
    long_share: float = 1.0


def _cli_family(name, fast, long):
    return Family(lambda w, name=name: _cli_families()[name], lambda w, argv: check_cli(w, argv), fast, long)


FAMILIES: dict[str, Family] = {
    "share links": Family(
        lambda w: link_params([f"t{i:05d}" for i in (0, 1, 2, 50, 199)], ["crater", "dark_dune", "streak"]),
        lambda w, params: check_link(w.link_index(), "mars_small", params),
        2.5,
        1.0,
    ),
    "cli: search": _cli_family("cli: search", 1.5, 1.0),
    "cli: info": _cli_family("cli: info", 0.5, 0.5),
    "cli: index": _cli_family("cli: index", 0.5, 0.1),
    "cli: eval retrieval": _cli_family("cli: eval retrieval", 0.25, 0.1),
    "cli: eval classify": _cli_family("cli: eval classify", 0.25, 0.1),
    "cli: landmarks": _cli_family("cli: landmarks", 0.25, 0.1),
    "cli: train-hash": _cli_family("cli: train-hash", 0.25, 0.1),
    "cli: train-classifier": _cli_family("cli: train-classifier", 0.2, 0.1),
    "cli: bench search": _cli_family("cli: bench search", 0.5, 0.25),
    "index dirs: corrupted manifest": Family(
        lambda w: st.tuples(
            manifests(w.manifest()),
            st.sampled_from(
                [
                    ["info"],
                    ["info", "--no-verify"],
                    ["search", "--tile", "t00001"],
                    ["search", "--lonlat", "0,0", "--no-verify"],
                ]
            ),
        ),
        lambda w, case: check_manifest(w, *case),
        0.75,
        0.5,
    ),
    "GeoJSON regions: Filters": Family(
        lambda w: geojson_values(), lambda w, region: check_region_api(w.tiles(), region), 2.0, 1.0
    ),
    "GeoJSON regions: search --region": Family(
        lambda w: st.tuples(
            region_files(),
            st.sampled_from(
                [
                    ["--tile", "t00001"],
                    ["--lonlat", "0,0", "--json", "o"],
                    ["--tile", "t00002", "--geojson", "o.geojson"],
                ]
            ),
        ),
        lambda w, case: check_region_cli(w, *case),
        1.0,
        0.5,
    ),
    "labels CSVs: read_labels": Family(
        lambda w: st.tuples(labels_csvs(), st.sampled_from([None, None, "train", "test", "nope", ""])),
        lambda w, case: check_labels_api(w, *case),
        2.0,
        1.0,
    ),
    "labels CSVs: index --images --labels": Family(
        lambda w: st.tuples(labels_csvs(), st.sampled_from([None, None, "train", "nope"])),
        lambda w, case: check_labels_cli(w, *case),
        0.4,
        0.1,
    ),
    "rasters: RasterSource": Family(
        lambda w: st.tuples(
            raster_cases(),
            st.sampled_from([None, None, "EPSG:4326", "EPSG:32633", "nonsense"]),
            st.sampled_from([None, None, (1,), (1, 1, 1), (4, 3, 2), (0,), (1, 2)]),
        ),
        lambda w, case: check_raster_api(w, *case),
        1.0,
        0.5,
    ),
    "rasters: index FILE": Family(
        lambda w: st.tuples(
            raster_cases(),
            st.sampled_from(
                [
                    [],
                    [],
                    ["--crs", "EPSG:4326"],
                    ["--bounds", "0,0,1,1"],
                    ["--bands", "1,2,3"],
                    ["--time", "2010-01-01"],
                ]
            ),
        ),
        lambda w, case: check_raster_cli(w, *case),
        0.4,
        0.1,
    ),
    "image queries: Query(image=...)": Family(
        lambda w: image_cases(), lambda w, case: check_image_api(w, w.raster_index(), case), 1.0, 0.5
    ),
    "image queries: search --image": Family(
        lambda w: st.tuples(image_cases(), st.sampled_from([[], ["--json", "o.json"], ["--zones", "33N"]])),
        lambda w, case: check_image_cli(w, *case),
        0.3,
        0.1,
    ),
}
