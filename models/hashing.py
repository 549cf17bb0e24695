"""Binary codes from float features, and the model files that hold how they were made.

The unsupervised baseline is PCA + ITQ (Gong & Lazebnik, "Iterative Quantization", CVPR 2011):
centre the features, project on the top principal components, then learn the orthogonal
rotation that minimises the quantisation error to the hypercube corners; a bit is 1 where the
rotated value is positive. When a code asks for more bits than the data have principal
directions (few samples), the remaining bits are signs of random Gaussian projections of the
centred features, i.e. classic random-hyperplane LSH.

The default code is a recipe, not one file (``fit_default``): the shipped learned code
(``hash_default.npz``: similarity-preserving, shaped by the Mars classes) followed by PCA-ITQ
bits fitted on the archive's own features, without labels (``ConcatHash``). The learned bits
carry what labels taught; the fitted bits keep what the archive's imagery varies by, which
holds on imagery and classes the learned code never saw.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lookalike.data.shipped import default_hash_path
from lookalike.errors import CodeLengthError, LookalikeError
from lookalike.fileio import atomic_write_bytes, sha256_file

HASH_FORMAT = 1
MAX_BITS = 65_536  # longest code: 8 KiB a tile (the shipped code has 128 bits, ITQ 512 by default)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, B) booleans -> (N, B/8) uint8, first bit in the most significant position."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2 or bits.shape[1] % 8:
        raise CodeLengthError(f"codes must be (N, B) with B a multiple of 8, got {bits.shape}")
    return np.packbits(bits, axis=1)


def unpack_bits(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """(N, B/8) uint8 -> (N, B) booleans."""
    out = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1).astype(bool)
    return out if bits is None else out[:, :bits]


class _HashFile:
    """What every hash model shares: a method, the backbone it reads, free-form ``meta``; its
    file (``to_bytes``, a JSON header beside the arrays) and ``save``."""

    bits: int
    in_features: int

    def __init__(self, method: str, backbone: str, meta: dict | None):
        self.method = method
        self.backbone = backbone
        self.meta = dict(meta or {})

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    def _file(
        self,
        arrays: dict[str, np.ndarray],
        header_first: bool = True,
        compressed: bool = False,
        **header: object,
    ) -> bytes:
        """The model file: ``arrays`` and the header (format, method, backbone, bits, in_features,
        then ``header``, then meta) as a JSON array named ``header``."""
        fields = dict(
            format=HASH_FORMAT,
            method=self.method,
            backbone=self.backbone,
            bits=self.bits,
            in_features=self.in_features,
            **header,
            meta=self.meta,
        )
        encoded = {"header": np.frombuffer(json.dumps(fields).encode(), dtype=np.uint8)}
        ordered = {**encoded, **arrays} if header_first else {**arrays, **encoded}
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, **ordered)
        return buf.getvalue()

    def save(self, path: str | Path) -> str:
        """Write atomically; returns the file's sha256."""
        return atomic_write_bytes(Path(path), self.to_bytes())


class LinearHash(_HashFile):
    """``code = pack(((x - mean) @ projection) > 0)``: the shape of PCA-ITQ and of LSH."""

    def __init__(
        self, mean: np.ndarray, projection: np.ndarray, method: str, backbone: str, meta: dict | None = None
    ):
        super().__init__(method, backbone, meta)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.projection = np.asarray(projection, dtype=np.float32)

    @property
    def bits(self) -> int:
        return int(self.projection.shape[1])

    @property
    def in_features(self) -> int:
        return int(self.projection.shape[0])

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Float features (N, D) -> packed codes (N, bits/8) uint8."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise LookalikeError(
                f"hash model expects {self.in_features}-d features, got shape {features.shape}"
            )
        return pack_bits((features - self.mean) @ self.projection > 0)

    # -------------------------------------------------------------- persistence
    def to_bytes(self) -> bytes:
        return self._file(dict(mean=self.mean, projection=self.projection), header_first=False)

    @classmethod
    def load(cls, path: str | Path) -> LinearHash:
        model = load_hash_model(path)
        if not isinstance(model, cls):
            raise LookalikeError(f"hash model {path} is a {model.method} network, not a linear hash")
        return model


def fit_itq(
    features: np.ndarray, bits: int = 512, n_iter: int = 50, seed: int = 0, backbone: str = ""
) -> LinearHash:
    """PCA + ITQ on features (N, D); random projections top up bits beyond the data's rank."""
    if bits <= 0 or bits % 8 or bits > MAX_BITS:
        raise CodeLengthError(f"code length must be a positive multiple of 8 up to {MAX_BITS}, got {bits}")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise LookalikeError(f"need at least 2 feature vectors to fit a hash, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    xc = (x - mean).astype(np.float32)
    # principal directions from the D x D covariance: cheaper than an SVD of N x D when N >> D
    eigval, eigvec = np.linalg.eigh((xc.T.astype(np.float64) @ xc.astype(np.float64)) / len(x))
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    rank = int((eigval > max(eigval[0], 0.0) * 1e-9).sum()) if eigval[0] > 0 else 0
    n_pca = int(min(bits, x.shape[1], len(x) - 1, rank))
    pca = eigvec[:, :n_pca].astype(np.float32)  # (D, n_pca)
    rotation = _itq_rotation(xc @ pca, n_iter, rng) if n_pca else np.zeros((0, 0), np.float32)
    projection = pca @ rotation
    if n_pca < bits:
        extra = rng.standard_normal((x.shape[1], bits - n_pca))
        projection = np.concatenate([projection, extra], axis=1)
    return LinearHash(
        mean,
        projection,
        "pca-itq",
        backbone,
        dict(n_train=len(x), itq_bits=n_pca, random_bits=bits - n_pca, seed=seed),
    )


def _itq_rotation(v: np.ndarray, n_iter: int, rng: np.random.Generator) -> np.ndarray:
    """Orthogonal R minimising ||sign(VR) - VR||_F (Gong & Lazebnik, Alg. 1)."""
    r = np.linalg.qr(rng.standard_normal((v.shape[1], v.shape[1])))[0].astype(np.float32)
    for _ in range(n_iter):
        b = np.where(v @ r >= 0, 1.0, -1.0).astype(np.float32)
        u, _, wt = np.linalg.svd((b.T @ v).astype(np.float64))
        r = (u @ wt).T.astype(np.float32)
    return r


class NetworkHash(_HashFile):
    """A trained hashing head as plain arrays: Linear layers with LeakyReLU between them.

    ``code = pack(last pre-activation > 0)``, which is the sigmoid output thresholded at 0.5.
    Input standardisation is folded into the first layer, so features go in as they come.
    """

    def __init__(
        self,
        weights: list[np.ndarray],
        biases: list[np.ndarray],
        slope: float,
        method: str,
        backbone: str,
        meta: dict | None = None,
    ):
        super().__init__(method, backbone, meta)
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.slope = float(slope)

    @property
    def bits(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weights[0].shape[1])

    def logits(self, features: np.ndarray) -> np.ndarray:
        h = np.asarray(features, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.in_features:
            raise LookalikeError(f"hash model expects {self.in_features}-d features, got shape {h.shape}")
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.where(h > 0, h, self.slope * h)
        return h

    def encode(self, features: np.ndarray) -> np.ndarray:
        return pack_bits(self.logits(features) > 0)

    def to_bytes(self) -> bytes:
        arrays = {f"w{i}": w.astype(np.float32) for i, w in enumerate(self.weights)}  # float16 flips bits
        arrays.update({f"b{i}": b for i, b in enumerate(self.biases)})
        return self._file(arrays, compressed=True, layers=len(self.weights), slope=self.slope)


class ConcatHash(_HashFile):
    """Several hash models' codes side by side: ``bits`` is the sum of theirs, and the Hamming
    distance of two codes the sum of the parts' distances. Every part's length is a multiple of
    8, so packed codes join byte by byte."""

    def __init__(self, parts: list, method: str, backbone: str = "", meta: dict | None = None):
        if not parts:
            raise LookalikeError("a joined hash needs at least one part")
        widths = {p.in_features for p in parts}
        if len(widths) != 1:
            raise LookalikeError(
                f"the parts of a joined hash read features of different widths: {sorted(widths)}"
            )
        super().__init__(method, backbone, meta)
        self.parts = list(parts)

    @property
    def bits(self) -> int:
        return sum(p.bits for p in self.parts)

    @property
    def in_features(self) -> int:
        return self.parts[0].in_features

    def encode(self, features: np.ndarray) -> np.ndarray:
        return np.concatenate([p.encode(features) for p in self.parts], axis=1)

    def to_bytes(self) -> bytes:
        arrays = {f"part{i}": np.frombuffer(p.to_bytes(), dtype=np.uint8) for i, p in enumerate(self.parts)}
        return self._file(arrays, parts=len(self.parts))


HashModel = LinearHash | NetworkHash | ConcatHash


def _read_model(source: str | Path | BinaryIO) -> HashModel:
    with np.load(source, allow_pickle=False) as z:
        header = json.loads(bytes(z["header"]).decode())
        if header.get("format") != HASH_FORMAT:
            raise LookalikeError(f"format {header.get('format')}, this version reads {HASH_FORMAT}")
        if "parts" in header:
            parts = [_read_model(io.BytesIO(z[f"part{i}"].tobytes())) for i in range(int(header["parts"]))]
            model = ConcatHash(parts, header["method"], header["backbone"], header.get("meta"))
        elif "layers" not in header:
            model = LinearHash(
                z["mean"], z["projection"], header["method"], header["backbone"], header.get("meta")
            )
        else:
            n = int(header["layers"])
            model = NetworkHash(
                [z[f"w{i}"] for i in range(n)],
                [z[f"b{i}"] for i in range(n)],
                header["slope"],
                header["method"],
                header["backbone"],
                header.get("meta"),
            )
        if model.bits != header["bits"] or model.in_features != header["in_features"]:
            raise LookalikeError(
                f"its arrays make {model.bits}-bit codes of {model.in_features}-d features, "
                f"its header says {header['bits']} and {header['in_features']}"
            )
        return model


def load_hash_model(path: str | Path) -> HashModel:
    """Read any hash model file (PCA-ITQ / LSH, a trained network, or parts joined)."""
    try:
        return _read_model(path)
    except FileNotFoundError:
        raise LookalikeError(f"hash model {path} does not exist") from None
    except LookalikeError as exc:
        raise LookalikeError(f"hash model {path} is not usable: {exc}") from None
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
    ) as exc:  # TypeError: a plain .npy array, not an .npz
        raise LookalikeError(f"hash model {path} is not a readable hash model file: {exc}") from None


ITQ = "itq"
DEFAULT = "default"
DEFAULT_BITS = 128  # the default recipe's code length: the learned code's bits + fitted PCA-ITQ bits
DEFAULT_METHOD = "similarity+pca-itq"


def fit_default(features: np.ndarray, backbone: str = "") -> ConcatHash:
    """The default code for an archive: the shipped learned code, then PCA-ITQ bits fitted on
    ``features`` (the archive's own, no labels) up to ``DEFAULT_BITS``."""
    path = default_hash_path()
    learned = load_hash_model(path)
    if backbone and backbone != learned.backbone:
        raise LookalikeError(
            f"the default code reads {learned.backbone} features, not {backbone}; "
            "use --hash itq (fitted on these features) or a model file trained on them"
        )
    n_bits = DEFAULT_BITS - learned.bits
    x = np.asarray(features, dtype=np.float32)
    if len(x) >= 2:
        fitted = fit_itq(x, n_bits, backbone=learned.backbone)
    else:  # one vector has no principal directions: random hyperplanes through it (LSH)
        fitted = LinearHash(
            x.reshape(-1, learned.in_features).mean(axis=0),
            np.random.default_rng(0).standard_normal((learned.in_features, n_bits)),
            "lsh",
            learned.backbone,
            dict(n_train=len(x), seed=0),
        )
    return ConcatHash(
        [learned, fitted],
        DEFAULT_METHOD,
        learned.backbone,
        dict(
            recipe=DEFAULT,
            learned=path.name,
            learned_sha256=sha256_file(path),
            learned_bits=learned.bits,
            fitted_bits=fitted.bits,
            fitted_on=len(features),
        ),
    )


def is_current_default(model: HashModel) -> bool:
    """Whether ``model`` was made by this version's default recipe (with the shipped learned code)."""
    return (
        isinstance(model, ConcatHash)
        and model.meta.get("recipe") == DEFAULT
        and model.meta.get("learned_sha256") == sha256_file(default_hash_path())
    )


def resolve_hash(
    spec: str | None, features: np.ndarray, bits: int | None = None, backbone: str = ""
) -> HashModel:
    """The hash model a command asked for.

    ``spec`` is a model file, ``"default"`` (the default recipe, ``fit_default``, fitted on
    ``features``) or ``"itq"`` (the PCA-ITQ baseline fitted on ``features``, ``bits`` long, 512
    by default). With no ``spec``, giving ``bits`` means the baseline at that length (the
    default recipe has a fixed length), else the default.
    """
    if spec is None:
        spec = ITQ if bits is not None else DEFAULT
    if spec == ITQ:
        return fit_itq(features, bits or 512, backbone=backbone)
    if spec == DEFAULT:
        if bits is not None and bits != DEFAULT_BITS:
            raise CodeLengthError(
                f"the default code has {DEFAULT_BITS} bits, not {bits}; "
                "use --hash itq for a PCA-ITQ code of another length"
            )
        return fit_default(features, backbone)
    return named_hash(spec, bits)


def fitted_on_features(spec: str | None) -> bool:
    """Whether ``resolve_hash(spec, ...)`` fits a model on the features (the default recipe and
    PCA-ITQ do; a model file does not)."""
    return spec in (ITQ, DEFAULT, None)


def named_hash(spec: str, bits: int | None = None) -> HashModel:
    """A hash model file; ``bits``, when given, must be its length."""
    if spec in (ITQ, DEFAULT, None):
        raise LookalikeError(
            f"--hash {spec or DEFAULT} is fitted on an archive's features, not read from a file"
        )
    model = load_hash_model(spec)
    if bits is not None and bits != model.bits:
        raise CodeLengthError(
            f"hash model {spec} makes {model.bits}-bit codes, not {bits}; "
            "use --hash itq for a PCA-ITQ code of another length"
        )
    return model
