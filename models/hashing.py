"""Binary codes from float features, and the model files that hold how they were made.

The unsupervised baseline is PCA + ITQ (Gong & Lazebnik, "Iterative Quantization", CVPR 2011):
centre the features, project on the top principal components, then learn the orthogonal
rotation that minimises the quantisation error to the hypercube corners; a bit is 1 where the
rotated value is positive. When a code asks for more bits than the data have principal
directions (few samples), the remaining bits are signs of random Gaussian projections of the
centred features, i.e. classic random-hyperplane LSH.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from lookalike.data.shipped import default_hash_path
from lookalike.errors import CodeLengthError, LookalikeError
from lookalike.fileio import atomic_write_bytes

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


class LinearHash:
    """``code = pack(((x - mean) @ projection) > 0)``: the shape of PCA-ITQ and of LSH."""

    def __init__(self, mean: np.ndarray, projection: np.ndarray, method: str, backbone: str,
                 meta: dict | None = None):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.projection = np.asarray(projection, dtype=np.float32)
        self.method = method
        self.backbone = backbone
        self.meta = dict(meta or {})

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
            raise LookalikeError(f"hash model expects {self.in_features}-d features, "
                                 f"got shape {features.shape}")
        return pack_bits((features - self.mean) @ self.projection > 0)

    # -------------------------------------------------------------- persistence
    def to_bytes(self) -> bytes:
        header = dict(format=HASH_FORMAT, method=self.method, backbone=self.backbone,
                      bits=self.bits, in_features=self.in_features, meta=self.meta)
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, projection=self.projection,
                 header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        return buf.getvalue()

    def save(self, path: str | Path) -> str:
        """Write atomically; returns the file's sha256."""

        return atomic_write_bytes(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "LinearHash":
        model = load_hash_model(path)
        if not isinstance(model, cls):
            raise LookalikeError(f"hash model {path} is a {model.method} network, not a linear hash")
        return model


def fit_itq(features: np.ndarray, bits: int = 512, n_iter: int = 50, seed: int = 0,
            backbone: str = "") -> LinearHash:
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
    return LinearHash(mean, projection, "pca-itq", backbone,
                      dict(n_train=len(x), itq_bits=n_pca, random_bits=bits - n_pca, seed=seed))


def _itq_rotation(v: np.ndarray, n_iter: int, rng: np.random.Generator) -> np.ndarray:
    """Orthogonal R minimising ||sign(VR) - VR||_F (Gong & Lazebnik, Alg. 1)."""
    r = np.linalg.qr(rng.standard_normal((v.shape[1], v.shape[1])))[0].astype(np.float32)
    for _ in range(n_iter):
        b = np.where(v @ r >= 0, 1.0, -1.0).astype(np.float32)
        u, _, wt = np.linalg.svd((b.T @ v).astype(np.float64))
        r = (u @ wt).T.astype(np.float32)
    return r


class NetworkHash:
    """A trained hashing head as plain arrays: Linear layers with LeakyReLU between them.

    ``code = pack(last pre-activation > 0)``, which is the sigmoid output thresholded at 0.5.
    Input standardisation is folded into the first layer, so features go in as they come.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], slope: float,
                 method: str, backbone: str, meta: dict | None = None):
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.slope = float(slope)
        self.method = method
        self.backbone = backbone
        self.meta = dict(meta or {})

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
        header = dict(format=HASH_FORMAT, method=self.method, backbone=self.backbone, bits=self.bits,
                      in_features=self.in_features, layers=len(self.weights), slope=self.slope,
                      meta=self.meta)
        arrays = {f"w{i}": w.astype(np.float32) for i, w in enumerate(self.weights)}  # float16 flips bits
        arrays.update({f"b{i}": b for i, b in enumerate(self.biases)})
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    def save(self, path: str | Path) -> str:

        return atomic_write_bytes(Path(path), self.to_bytes())


def load_hash_model(path: str | Path) -> LinearHash | NetworkHash:
    """Read any hash model file (PCA-ITQ / LSH or a trained network)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("format") != HASH_FORMAT:
                raise LookalikeError(f"hash model {path} has format {header.get('format')}, "
                                     f"this version reads {HASH_FORMAT}")
            if "layers" not in header:
                return LinearHash(z["mean"], z["projection"], header["method"], header["backbone"],
                                  header.get("meta"))
            n = int(header["layers"])
            return NetworkHash([z[f"w{i}"] for i in range(n)], [z[f"b{i}"] for i in range(n)],
                               header["slope"], header["method"], header["backbone"], header.get("meta"))
    except FileNotFoundError:
        raise LookalikeError(f"hash model {path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:  # TypeError: a plain .npy array, not an .npz
        raise LookalikeError(f"hash model {path} is not a readable hash model file: {exc}") from None


ITQ = "itq"
DEFAULT = "default"


def resolve_hash(spec: str | None, features: np.ndarray, bits: int | None = None,
                 backbone: str = "") -> LinearHash | NetworkHash:
    """The hash model a command asked for.

    ``spec`` is a model file, ``"default"`` (the shipped model) or ``"itq"`` (fit the PCA-ITQ
    baseline on ``features``, ``bits`` long, 512 by default). With no ``spec``, giving ``bits``
    means the baseline at that length (the shipped model has a fixed length), else the default.
    """
    if spec is None:
        spec = ITQ if bits is not None else DEFAULT
    if spec == ITQ:
        return fit_itq(features, bits or 512, backbone=backbone)
    return named_hash(spec, bits)


def fitted_on_features(spec: str | None, bits: int | None = None) -> bool:
    """Whether ``resolve_hash(spec, ..., bits)`` fits a model on the features (PCA-ITQ)."""
    return spec == ITQ or (spec is None and bits is not None)


def named_hash(spec: str | None, bits: int | None = None) -> LinearHash | NetworkHash:
    """A hash model that exists before any features: ``"default"`` (or None) or a model file;
    ``bits``, when given, must be its length."""
    spec = spec or DEFAULT
    model = load_hash_model(default_hash_path() if spec == DEFAULT else spec)
    if bits is not None and bits != model.bits:
        raise CodeLengthError(f"hash model {spec} makes {model.bits}-bit codes, not {bits}; "
                              "use --hash itq for a PCA-ITQ code of another length")
    return model
