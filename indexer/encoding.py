"""Images -> float features with a backbone, in batches, with a choice of runtime.

Runtimes (``Encoder(runtime=...)``, ``lookalike index --runtime``):

- ``torch``: PyTorch with BatchNorm folded into the convolutions, channels_last, inference_mode.
  Used automatically on a GPU (``cuda``, fp32).
- ``onnx``: the same folded network exported once to ONNX and run by ONNX Runtime (fp32, all graph
  optimisations, one intra-op thread per torch thread). About twice as fast as eager PyTorch on
  a small CPU; features agree with PyTorch to ~1e-5, so codes agree (``lookalike bench encode``
  reports the bit error rate). The default on a CPU.
- ``onnx-int8``: that model statically quantized (QDQ, per-channel weights: 8 bits with VNNI, 7
  without, see ``int8_weight_bits``), calibrated on real Mars tiles. Opt-in only: faster, but its
  features differ and code bits flip.

``auto`` (the default) picks ``torch`` on a GPU, else ``onnx`` when ONNX Runtime is installed and
the backbone exports, else ``torch``. Exported models are cached in ``$LOOKALIKE_CACHE/onnx``
(default: the user cache), keyed by the weights and the input shape, written atomically, and
checked against PyTorch on a probe batch whenever they are loaded; an unreadable or wrong file
is exported again.

Views (``Encoder(views=...)``, ``lookalike index --views``): orbital imagery has no up, so a
tile's feature is the mean of the backbone's features over ``views`` rotations/flips of it
(``ORIENTATIONS``): 1 (as is), 2 (as is and mirrored across a diagonal, the default: twice the
cost, and on EuroSAT and HiRISE most of what all eight give), 4 (the four rotations) or 8 (those
and their mirror images: exactly invariant to the dihedral group). Views beyond 1 need square
inputs (tiles and resized images are).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lookalike.config import onnx_dir
from lookalike.data.registry import DATASETS, fetch
from lookalike.errors import LookalikeError, OptionError
from lookalike.indexer.defaults import BATCH_SIZE, DEFAULT_RUNTIME, DEFAULT_VIEWS, ORIENTATIONS, RUNTIMES
from lookalike.indexer.sources import RasterSource
from lookalike.indexer.tiling import TileGrid
from lookalike.models.backbones import Backbone, create_backbone
from lookalike.models.classifier import ProbeClassifier
from lookalike.models.defaults import DEFAULT_BACKBONE
from lookalike.models.finetune import load_tail

# part of the int8 model's cache key: a model quantized another way is made again
INT8_RECIPE = "qdq-per-channel-{bits}bit-weights"


def int8_weight_bits() -> int:
    """Bits of the int8 model's weights on this processor: 8 with VNNI; 7 without, where ONNX
    Runtime's u8 x s8 kernels (VPMADDUBSW) saturate their 16-bit sums with 8-bit weights (on
    Mars tiles, an AMD EPYC with AVX2 flipped 12.5 % of the default code's bits with 8-bit
    weights, 9.3 % with 7-bit ones)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return 7  # unknown: the choice that cannot saturate
    return 8 if ("avx512_vnni" in flags or "avx_vnni" in flags) else 7


MAX_IMAGE_SIZE = 2048  # pixels a side fed to the backbone (tiles and chips are 128-224)
ONNX_OPSET = 17
# ONNX Runtime fp32 vs PyTorch fp32: summation order differs, nothing else
_PROBE_TOLERANCE = 1e-3
_SESSIONS: dict[str, object] = {}  # one ONNX Runtime session per model file and thread count


def images_to_tensor(
    images: np.ndarray, image_size: int | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, h, w) float in [0, 1], resized to ``image_size`` (bilinear,
    antialiased) when given."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if image_size and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


def dihedral_copy(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    """(N, C, H, W) turned by ``turns`` quarter turns, then mirrored left-right if asked."""
    view = torch.rot90(x, turns, dims=(2, 3)) if turns else x
    return torch.flip(view, dims=(3,)) if mirror else view


class RuntimeUnavailable(LookalikeError):
    """The requested encoder runtime cannot run here (package missing, export failed, GPU)."""


def fuse_batchnorm(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` with every BatchNorm folded into the convolution before it
    (inference only): one pass less over each feature map, same outputs up to rounding."""
    from torch.fx.experimental.optimization import fuse

    try:
        return Backbone(fuse(backbone.body, inplace=False), backbone.spec).eval()
    except Exception:  # a body torch.fx cannot trace runs unfused, just slower
        return backbone


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the parameters and buffers actually in ``model`` (after folding)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except Exception:
        return False
    return True


def export_onnx(model: Backbone, path: Path, height: int, width: int) -> None:
    """Export ``model`` for (batch, 3, height, width) float inputs, batch dynamic; atomic write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    cpu = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # the TorchScript exporter: the dynamo one needs onnxscript, which is not a dependency
            torch.onnx.export(
                cpu,
                (torch.rand(2, 3, height, width),),
                str(tmp),
                dynamo=False,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def quantize_onnx(src: Path, path: Path, calibration: np.ndarray, batch: int = 32) -> None:
    """Static int8 quantization of ``src`` (QDQ, per-channel weights, MinMax activations from
    ``calibration``: (N, 3, H, W) float inputs); atomic write."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(calibration), batch))

        def get_next(self):
            start = next(self.batches, None)
            return None if start is None else {"images": calibration[start : start + batch]}

    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    pre = path.with_name(f".{path.name}.{tag}.pre.tmp")
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    try:
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=int8_weight_bits() == 7,
        )
        os.replace(tmp, path)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def mars_tiles(n: int, size: int = 128) -> np.ndarray:
    """The first ``n`` valid tiles of the mars_8k mosaic in the data cache (no download)."""

    ds = DATASETS["mars_8k"]
    source = RasterSource(fetch("mars_8k", download=False), name="mars_8k", crs=ds.crs, bounds=ds.bounds)
    tiles = []
    for _, pixels in source.tiles(TileGrid(size, size // 2, source.native_gsd)):
        tiles.append(pixels)
        if len(tiles) == n:
            break
    return np.stack(tiles)


def _probe(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).random((2, 3, height, width), dtype=np.float32)


class Encoder:
    """Batched feature extraction for uint8 RGB images of any size.

    ``image_size`` resizes inputs (bilinear, antialiased) before the backbone; ``None`` feeds them
    at their own size (tiles are fed at 128 px). ``runtime`` is one of ``RUNTIMES`` (see the
    module docstring); ``calibration`` (N, H, W, 3) uint8 replaces the Mars tiles that calibrate
    ``onnx-int8``. ``views``: how many rotations/flips of each image its feature averages over
    (``ORIENTATIONS``).
    """

    def __init__(
        self,
        backbone: str | Backbone = DEFAULT_BACKBONE,
        weights: str | None = None,
        image_size: int | None = None,
        batch_size: int = BATCH_SIZE,
        device: str | None = None,
        optimize: bool = True,
        runtime: str = DEFAULT_RUNTIME,
        calibration: np.ndarray | None = None,
        views: int = DEFAULT_VIEWS,
    ):
        if runtime not in RUNTIMES:
            raise LookalikeError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
            raise OptionError(f"image size must be between 1 and {MAX_IMAGE_SIZE} pixels, got {image_size}")
        if batch_size < 1:
            raise OptionError(f"batch size must be at least 1, got {batch_size}")
        if views not in ORIENTATIONS:
            raise OptionError(f"views must be one of {', '.join(map(str, ORIENTATIONS))}, got {views}")
        self.views = views
        self.model = create_backbone(backbone, weights) if isinstance(backbone, str) else backbone
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = self.model.eval()
        if optimize:
            self.model = fuse_batchnorm(self.model)
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.optimize = optimize
        self.image_size = image_size
        self.batch_size = batch_size
        self.calibration = calibration
        self.requested_runtime = runtime
        if runtime == "auto":
            runtime = "onnx" if self.device.type == "cpu" and _onnx_available() else "torch"
        elif runtime.startswith("onnx"):
            if self.device.type != "cpu":
                raise RuntimeUnavailable(
                    f"runtime {runtime!r} runs on the CPU; use --runtime torch on {self.device.type}"
                )
            if not _onnx_available():
                raise RuntimeUnavailable(f"runtime {runtime!r} needs the onnxruntime package")
        self.runtime = runtime

    @property
    def name(self) -> str:
        return self.model.spec.name

    @property
    def dim(self) -> int:
        return self.model.spec.num_features

    def describe(self) -> dict:
        spec = self.model.spec
        return dict(
            name=spec.name,
            features=spec.num_features,
            weights_sha256=spec.weights_sha256,
            image_size=self.image_size,
            runtime=self.runtime,
            views=self.views,
        )

    # ------------------------------------------------------------ ONNX Runtime
    def _session(self, height: int, width: int):
        """The ONNX Runtime session for inputs of this size: from the process, the disk cache,
        or a fresh export. Falls back to torch (``auto``) or raises when that fails."""
        sessions = self.__dict__.setdefault("_sessions", {})
        if (height, width) in sessions:
            return sessions[height, width]
        try:
            sessions[height, width] = self._load_session(height, width)
            return sessions[height, width]
        except Exception as exc:
            if self.requested_runtime != "auto":
                if isinstance(exc, LookalikeError):
                    raise
                raise RuntimeUnavailable(f"runtime {self.runtime!r} failed for {self.name}: {exc}") from exc
            warnings.warn(
                f"ONNX Runtime unavailable for {self.name} ({exc}); encoding with torch",
                RuntimeWarning,
                stacklevel=3,
            )
            self.runtime = "torch"
            return None

    def _model_path(self, height: int, width: int, kind: str, extra: str = "") -> Path:
        key = json.dumps(
            dict(
                name=self.name,
                weights_sha256=self.model.spec.weights_sha256,
                digest=self._digest,
                height=height,
                width=width,
                batch="dynamic",
                opset=ONNX_OPSET,
                kind=kind,
                extra=extra,
            ),
            sort_keys=True,
        )
        tag = hashlib.sha256(key.encode()).hexdigest()[:20]
        return onnx_dir() / f"{self.name}-{height}x{width}-{kind}-{tag}.onnx"

    def _load_session(self, height: int, width: int):
        if not hasattr(self, "_digest"):
            self._digest = weights_digest(self.model)
        fp32 = self._model_path(height, width, "fp32")
        if self.runtime == "onnx":
            path, make = fp32, lambda: export_onnx(self.model, fp32, height, width)
            probe = _probe(height, width)
        else:
            calib = self._calibration_inputs(height, width)
            probe = calib[:2]
            recipe = INT8_RECIPE.format(bits=int8_weight_bits())
            extra = f"{recipe}-{hashlib.sha256(calib.tobytes()).hexdigest()}"
            path = self._model_path(height, width, "int8", extra)

            def make():
                self._fp32_model(fp32, height, width)
                quantize_onnx(fp32, path, calib)

        threads = torch.get_num_threads()
        memo = f"{path}|{threads}"
        if memo in _SESSIONS:
            return _SESSIONS[memo]
        if not path.exists():
            make()
        try:
            session = self._checked_session(path, probe, threads)
        except Exception:  # unreadable, truncated or wrong: export once more, from scratch
            path.unlink(missing_ok=True)
            if self.runtime == "onnx-int8":
                fp32.unlink(missing_ok=True)
            make()
            session = self._checked_session(path, probe, threads)
        _SESSIONS[memo] = session
        return session

    def _fp32_model(self, path: Path, height: int, width: int) -> None:
        """Make sure a checked fp32 export is at ``path`` (the source of the int8 model)."""
        if path.exists():
            try:
                self._checked_session(path, _probe(height, width), 1, runtime="onnx")
                return
            except Exception:
                path.unlink(missing_ok=True)
        export_onnx(self.model, path, height, width)

    def _checked_session(self, path: Path, probe: np.ndarray, threads: int, runtime: str | None = None):
        """A session on ``path`` whose outputs on ``probe`` (N, 3, H, W) match PyTorch's."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # idle workers sleep instead of spinning: a build cuts tiles on the same cores between
        # batches, and a server answers requests there
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": probe})[0]
        with torch.inference_mode():
            x = torch.from_numpy(probe).to(self.device).contiguous(memory_format=torch.channels_last)
            want = self.model(x).float().cpu().numpy()
        scale = max(1.0, float(np.abs(want).max()))
        if (runtime or self.runtime) == "onnx":
            if got.shape != want.shape or np.abs(got - want).max() > _PROBE_TOLERANCE * scale:
                raise ValueError(f"{path.name} does not reproduce the PyTorch features")
        else:  # int8 is approximate by design; a wrong or damaged file is far off
            cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12)
            if got.shape != want.shape or cos.min() < 0.5:
                raise ValueError(f"{path.name} is not a quantization of this backbone")
        return session

    def _calibration_inputs(self, height: int, width: int) -> np.ndarray:
        images = self.calibration
        if images is None:
            try:
                images = mars_tiles(128, 128)
            except Exception as exc:
                raise RuntimeUnavailable(
                    "runtime 'onnx-int8' is calibrated on mars_8k tiles: "
                    f"fetch them first (lookalike fetch mars_8k) ({exc})"
                ) from exc
        x = self._prepare(np.asarray(images)).cpu()
        if tuple(x.shape[-2:]) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        return x.contiguous().numpy()

    # ------------------------------------------------------------ features
    def _input_size(self, images: np.ndarray) -> tuple[int, int]:
        if self.image_size:
            return self.image_size, self.image_size
        return int(images.shape[1]), int(images.shape[2])

    def _prepare(self, images: np.ndarray) -> torch.Tensor:
        return images_to_tensor(images, self.image_size, self.device)

    @torch.inference_mode()
    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, D) float32, in batches of ``batch_size``."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) images, got {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        height, width = self._input_size(images)
        if self.views > 1 and height != width:
            raise OptionError(
                f"{self.views} views turn images by 90 degrees, which needs square "
                f"inputs, got {height}x{width}; use --views 1"
            )
        session = self._session(height, width) if self.runtime != "torch" and len(images) else None
        for start in range(0, len(images), self.batch_size):
            x = self._prepare(images[start : start + self.batch_size])
            total = None
            for turns, mirror in ORIENTATIONS[self.views]:
                view = dihedral_copy(x, turns, mirror)
                if session is not None:
                    f = torch.from_numpy(session.run(None, {"images": view.contiguous().numpy()})[0])
                else:
                    f = self.model(view.contiguous(memory_format=torch.channels_last)).float().cpu()
                total = f if total is None else total + f
            out[start : start + len(x)] = (total / self.views).numpy()
        return out

    def features_stream(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Features for a stream of single images, computed ``batch_size`` at a time."""
        batch: list[np.ndarray] = []
        for image in images:
            batch.append(image)
            if len(batch) == self.batch_size:
                yield from self.features(np.stack(batch))
                batch = []
        if batch:
            yield from self.features(np.stack(batch))


def classifier_backbone(model: ProbeClassifier) -> Backbone:
    """The backbone a classifier's features come from: ImageNet weights, with the model's
    fine-tuned tail put in when it has one (its spec then names the tail too, so feature caches
    and exported runtimes never mix the two)."""
    backbone = create_backbone(model.backbone)
    if not model.tail:
        return backbone
    load_tail(backbone, model.tail, model.cut)
    tagged = hashlib.sha256(f"{backbone.spec.weights_sha256}+{model.features_id()}".encode()).hexdigest()
    backbone.spec = dataclasses.replace(backbone.spec, weights_sha256=tagged)
    return backbone


def classifier_encoder(model: ProbeClassifier, batch_size: int = 64, runtime: str = "auto") -> Encoder:
    """The encoder whose features ``model`` classifies: its backbone (and fine-tuned tail),
    image size and test-time views."""
    encoder = Encoder(
        classifier_backbone(model),
        image_size=model.image_size,
        batch_size=batch_size,
        runtime=runtime,
        views=model.views,
    )
    encoder.features_id = model.features_id()
    return encoder


def encoder_fits(encoder: Encoder, model: ProbeClassifier) -> bool:
    """Whether ``encoder`` gives the features ``model`` classifies."""
    if getattr(encoder, "features_id", None) == model.features_id():
        return True
    return (
        not model.tail
        and encoder.name == model.backbone
        and encoder.image_size == model.image_size
        and encoder.views == model.views
    )
