"""Detector: the trained network plus everything around it — load weights and model card, take any image,
return detections in the input's pixels."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .backends import OnnxRuntimeBackend, TorchBackend, default_device, resolve_backend
from .card import ModelCard
from .config import SSDConfig
from .image import network_input, to_rgb
from .model import build_ssd
from .postprocess import ImageDetections, InferenceSettings, select_detections
from .priors import prior_layout
from .weight_storage import described, finite_in, stored
from .weights_files import CARD_SUFFIX, beside, read_weights

log = logging.getLogger("ssd")

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "ssd384_lite0_voc07.safetensors"
# Used when a model card recommends no score threshold of its own.
FALLBACK_SCORE_THRESHOLD = 0.5


@dataclass(frozen=True)
class Detection:
    """One detected object. box: (x1, y1, x2, y2) in pixels of the (EXIF-upright) input image."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    class_id: int
    prior_index: int  # the default box this detection was regressed from
    layer: str  # the source layer of that default box, e.g. "conv4_3"

    def to_dict(self) -> dict:
        return asdict(self)


class Detections(list):
    """list[Detection], best first, that also knows how many candidates (class scores above the score
    threshold, at most `PRE_NMS_TOP_K` per class) went into NMS."""

    def __init__(self, detections=(), candidates: int = 0):
        super().__init__(detections)
        self.candidates = candidates


@dataclass
class RawPrediction:
    """The inference graph's outputs for one image (`ssd.graph`), kept so thresholds can change without
    re-running the network."""

    boxes: torch.Tensor  # (1, N, 4) decoded, normalised xyxy
    scores: torch.Tensor  # (1, N, C+1) softmax, background at 0
    width: int
    height: int
    seconds: float  # network time, preprocessing included


def card_path(weights: Path) -> Path:
    return beside(weights, CARD_SUFFIX)


class NonFiniteWeights(ValueError):
    """The weights hold NaN or infinity in the export's precision: the model diverged (or overflows float16)."""


def export_weights(model: torch.nn.Module, cfg: SSDConfig, class_names, path, dtype=torch.float16,
                   card: ModelCard | None = None, **fields) -> Path:
    """Write the shipped format: fp16 safetensors (or `dtype`: float32 for training's snapshots, int8 for a file
    half the size, `ssd.weight_storage`) + a JSON model card: `card`'s fields, then `fields` (`ssd.card.ModelCard`'s),
    with the config and classes of this network. ValueError, and nothing written, when the card is not one (a
    misspelt field, a value of the wrong type); NonFiniteWeights when a tensor is not finite in `dtype` (float16
    for int8, whose small tensors are float16: a diverged model, or values beyond float16's range): such weights
    detect nothing."""
    from safetensors.torch import save

    path = Path(path)
    # The card says how this file stores its tensors where not float16 (keeping what else `card` says of it, e.g.
    # train.compact's source), and nothing of another file's storage (train.average of int8 files writes float16).
    kept = {**((card.storage if card else None) or {}), **(fields.get("storage") or {})}
    storage = None if dtype is torch.float16 else {**kept, "dtype": described(dtype)}
    meta = ModelCard.from_dict({**(card.to_dict() if card else {}), **fields, "storage": storage,
                                "config": cfg.to_dict(), "classes": list(class_names)},
                               where=f"the model card of {path}")
    state = model.state_dict()
    checked = finite_in(dtype)
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.detach().to(checked).isfinite().all()]
    if bad:
        largest = max(float(v.detach().abs().max()) for k, v in state.items() if k in bad)
        raise NonFiniteWeights(f"refusing to write {path}: {len(bad)} of {len(state)} tensors are not finite as "
                               f"{checked} (e.g. {bad[0]}; the largest magnitude among them {largest:.3g}); the model "
                               "diverged")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, save(stored(state, dtype)))
    _write_atomically(card_path(path), meta.to_json().encode())
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """`data` into `path` through a temporary file and a rename, so that a reader never sees half a file; created
    with open()'s mode, as the user's umask has it (safetensors' own writer makes its files 0600)."""
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_fits(model: torch.nn.Module, cfg: SSDConfig, where) -> None:
    """ValueError unless the network, fed the config's input size, predicts one box per default box: a model
    card whose image size, feature maps or aspect ratios do not describe its network fails here, at load, and
    says what does not fit, rather than at every detection."""
    problem = f"{where}: the model card does not fit its network"
    try:
        with torch.inference_mode():
            loc, conf = model.eval()(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
    except (ValueError, RuntimeError) as e:  # e.g. the input size gives other feature map sizes
        raise ValueError(f"{problem}: {e}") from None
    if loc.shape[1] != cfg.num_default_boxes or conf.shape[-1] != cfg.num_classes + 1:
        raise ValueError(
            f"{problem}: with {cfg.image_size}x{cfg.image_size} inputs the network predicts {loc.shape[1]} boxes "
            f"with {conf.shape[-1]} scores each, but the card's config has {cfg.num_default_boxes} default boxes "
            f"and {cfg.num_classes} classes + background")


# Weights files whose missing export `Detector.load` has mentioned (once per process each).
_TOLD_NO_EXPORT: set[Path] = set()


class Detector:
    """model: the PyTorch network, run by `backend` ("torch"; "torch-bf16": the network in bfloat16, for CPUs that
    multiply bfloat16 in hardware, a little less accurate (docs/benchmarks.md); "onnxruntime": its ONNX export;
    "onnxruntime-int8": that export quantized to INT8, `ssd.export.int8`; or "auto": onnxruntime on the CPU when
    installed, else torch), or a ready backend object (`ssd.backends`)."""

    def __init__(self, model, config: SSDConfig, class_names, device=None, card: ModelCard | dict | None = None,
                 backend: str = "torch"):
        if len(class_names) != config.num_classes:
            raise ValueError(f"{len(class_names)} class names for a {config.num_classes}-class config")
        self.config = config
        self.class_names = tuple(class_names)
        # A dict: some of a card's fields (e.g. {"score_threshold": 0.3}), completed with this network's config
        # and classes.
        self.card = card if isinstance(card, ModelCard) else ModelCard.from_dict(
            {**(card or {}), "config": config.to_dict(), "classes": list(self.class_names)})
        # This detector's inference settings, resolved once: the card's recommended score threshold (best F1 on
        # held-out images, written by training; else FALLBACK_SCORE_THRESHOLD), the config's NMS IoU and top-k.
        # What a threshold left as None means in detect(), detect_batch() and postprocess(), the app's sliders
        # and the CLI's --score.
        self.settings = InferenceSettings(
            float(FALLBACK_SCORE_THRESHOLD if self.card.score_threshold is None else self.card.score_threshold),
            config.nms_threshold, config.top_k)
        if isinstance(model, torch.nn.Module):
            device = default_device(device)
            chosen = resolve_backend(backend, device)
            if chosen == "onnxruntime":
                from .export import export_bytes

                self.backend = OnnxRuntimeBackend(export_bytes(model, config, self.class_names, self.card))
            elif chosen == "onnxruntime-int8":  # no weights file, so no cache: calibrated and quantized now
                from .export.int8 import quantized_bytes

                self.backend = OnnxRuntimeBackend(quantized_bytes(model, config, self.class_names, self.card))
            else:
                self.backend = TorchBackend(model, config, device,
                                            torch.bfloat16 if chosen == "torch-bf16" else None)
        else:
            self.backend = model
        # The PyTorch network (None when the backend runs an ONNX file): what `ssd.export` exports.
        self.model = self.backend.graph.network if isinstance(self.backend, TorchBackend) else None
        self.device = self.backend.device
        self._prior_layer = prior_layout(config).layer.tolist()

    @classmethod
    def load(cls, path=None, device=None, backend: str | None = None) -> Detector:
        """Shipped demo weights (path=None), any weights file written by `export_weights`, or an ONNX file
        written by `ssd.export` (always run by onnxruntime). backend: see `Detector`; by default onnxruntime on the
        CPU when the weights' export is cached already, else PyTorch (`_default_backend`). onnxruntime exports the
        weights once and keeps the file in a cache (`ssd.export.cached_export`); onnxruntime-int8 quantizes that
        export once and keeps it beside it (`ssd.export.int8.cached_int8`). By default and with "auto", a cached
        INT8 file runs instead of the float32 one only where its record says it is faster on this CPU and within
        0.5 mAP of float32 (`_int8_if_better`)."""
        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        if path.suffix == ".onnx":
            return cls._load_onnx(path, device, backend)
        model, cfg, card = cls._load_weights(path)
        device = default_device(device)
        choosing = backend in (None, "auto")
        if backend is None:
            backend = cls._default_backend(path, device)
        chosen = resolve_backend(backend, device)
        if chosen == "onnxruntime" and choosing:
            chosen = cls._int8_if_better(path, card)
        if chosen == "onnxruntime-int8":
            from .export.int8 import cached_int8

            try:
                runner = OnnxRuntimeBackend(cached_int8(path, model, cfg, card.classes, card))
                return cls(runner, cfg, card.classes, card=card)
            except Exception as e:  # chosen, not asked for: the float32 graph still serves
                if not choosing:
                    raise
                log.warning("the INT8 graph failed (%s: %s); running the float32 one", type(e).__name__, e)
                chosen = "onnxruntime"
        if chosen == "onnxruntime":
            from .export import cached_export

            try:
                runner = OnnxRuntimeBackend(cached_export(path, model, cfg, card.classes, card))
                return cls(runner, cfg, card.classes, card=card)
            except Exception as e:  # "auto" promises a working detector, not the fastest one
                if backend != "auto":
                    raise
                log.warning("onnxruntime backend failed (%s: %s); running on torch", type(e).__name__, e)
        return cls(model, cfg, card.classes, device=device, card=card,
                   backend="torch-bf16" if chosen == "torch-bf16" else "torch")

    @staticmethod
    def export_missing(path, device=None) -> bool:
        """Whether `auto` would run these weights on onnxruntime here but their export is not cached yet (so
        loading them on onnxruntime would export first, tens of seconds on 2 cores)."""
        from .export import is_cached

        return resolve_backend("auto", default_device(device)) == "onnxruntime" and not is_cached(path)

    @staticmethod
    def _int8_if_better(path: Path, card: ModelCard) -> str:
        """"onnxruntime-int8" when these weights' INT8 file is cached and its record says it runs faster on this
        CPU and within 0.5 mAP of float32 (`ssd.export.int8.Int8Record.verdict`), else "onnxruntime". Says why
        when an INT8 file is there but not taken."""
        from .export.int8 import find_int8

        found = find_int8(path, card)
        if found is None:
            return "onnxruntime"
        int8_path, record = found
        good, why = record.verdict() if record else (False, "it has no record")
        if good:
            log.info("%s: running the cached INT8 graph: %s", path.name, why)
            return "onnxruntime-int8"
        if int8_path not in _TOLD_NO_EXPORT:
            _TOLD_NO_EXPORT.add(int8_path)
            log.info("%s: not running the cached INT8 graph (%s); --backend onnxruntime-int8 runs it", path.name, why)
        return "onnxruntime"

    @staticmethod
    def _default_backend(path: Path, device: torch.device) -> str:
        """`load`'s default: the fastest exact backend that is ready now. On the CPU that is onnxruntime once the
        weights' export is in the cache; until then PyTorch, since exporting takes tens of seconds that a
        one-shot command should not pay (`python -m ssd.export --cache` or the app writes the export)."""
        if resolve_backend("auto", device) != "onnxruntime":
            return "torch"
        if not Detector.export_missing(path, device):
            return "onnxruntime"
        if path not in _TOLD_NO_EXPORT:
            _TOLD_NO_EXPORT.add(path)
            log.info("%s: running on PyTorch, as no ONNX export of these weights is cached yet; `python -m "
                     "ssd.export --cache%s` writes one, and later loads run on onnxruntime, about twice as fast",
                     path.name, "" if path == DEFAULT_WEIGHTS else f" --weights {path}")
        return "torch"

    @staticmethod
    def _load_weights(path: Path):
        hint = ("No demo weights are shipped yet. Train them with `python -m train` (README, 'Train on your own "
                "photos') or pass Detector.load(path) a weights file.") if path == DEFAULT_WEIGHTS else None
        state, card = read_weights(path, hint)
        cfg = card.ssd_config()
        model = build_ssd(cfg)
        model.load_state_dict(state)
        check_fits(model, cfg, card_path(path))
        return model, cfg, card

    @classmethod
    def _load_onnx(cls, path: Path, device, backend: str | None) -> Detector:
        from .export import card_from_metadata

        if backend in ("torch", "torch-bf16") or (device is not None and torch.device(device).type != "cpu"):
            raise ValueError(f"{path}: an ONNX file runs on onnxruntime on the CPU (backend='onnxruntime' or "
                             f"'auto', device 'cpu')")
        resolve_backend("onnxruntime", torch.device("cpu"))  # says so if onnxruntime is missing
        if not path.exists():
            raise FileNotFoundError(f"ONNX file not found: {path}")
        runner = OnnxRuntimeBackend(path)
        if backend == "onnxruntime-int8" and runner.name != backend:
            raise ValueError(f"{path} is a float32 export; for INT8 quantize it (python -m ssd.export --int8 --out "
                             f"FILE) or pass its weights file")
        card = card_from_metadata(runner.metadata, path)
        cfg = card.ssd_config()
        if runner.num_boxes != cfg.num_default_boxes:
            raise ValueError(f"{path}: the graph predicts {runner.num_boxes} boxes, its config "
                             f"{cfg.num_default_boxes} default boxes")
        return cls(runner, cfg, card.classes, card=card)

    @property
    def score_threshold(self) -> float:
        """The default score threshold (`settings`): the model card's recommended one."""
        return self.settings.score_threshold

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return (f"Detector({self.config.name}, {len(self.class_names)} classes, device {self.device.type}, "
                f"backend {self.backend_name})")

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """Warp to the network's square input (SSD ignores aspect ratio): uint8 (B, S, S, 3), the graph's input."""
        return network_input(images, self.config.image_size)

    def predict(self, image) -> RawPrediction:
        start = time.perf_counter()
        image = to_rgb(image)
        boxes, scores = self.backend(self.preprocess([image]))
        return RawPrediction(boxes, scores, image.width, image.height, time.perf_counter() - start)

    @torch.inference_mode()
    def postprocess(self, raw: RawPrediction, score_threshold=None, nms_threshold=None, top_k=None,
                    classes=None) -> Detections:
        """Detections of cached graph outputs, best first. Thresholds left as None are this detector's
        (`settings`: the model card's recommended score threshold, the config's NMS IoU and top-k). `classes`: the
        class names to keep (None: all), chosen before the top-k cut."""
        settings = self.settings.with_overrides(score_threshold, nms_threshold, top_k)
        (det,) = select_detections(raw.boxes, raw.scores, settings, classes=self.class_ids(classes))
        return self._to_detections(det, raw.width, raw.height)

    def detect(self, image, score_threshold=None, nms_threshold=None, top_k=None, classes=None) -> Detections:
        """Detections (best first) of one image: PIL image, HxWx3 uint8 array, or a path (see `postprocess`)."""
        return self.postprocess(self.predict(image), score_threshold, nms_threshold, top_k, classes)

    @torch.inference_mode()
    def detect_batch(self, images, score_threshold=None, nms_threshold=None, top_k=None, batch_size=16):
        """detect() for many images, `batch_size` at a time, with the same defaults (`settings`). Evaluation asks
        for the paper's inference settings itself (`InferenceSettings.of_config`)."""
        settings = self.settings.with_overrides(score_threshold, nms_threshold, top_k)
        out = []
        for i in range(0, len(images), batch_size):
            chunk = [to_rgb(im) for im in images[i:i + batch_size]]
            boxes, scores = self.backend(self.preprocess(chunk))
            dets = select_detections(boxes, scores, settings)
            out += [self._to_detections(d, im.width, im.height) for d, im in zip(dets, chunk)]
        return out

    def class_ids(self, names):
        """The class ids (1 = the first class; 0 is background) of class names; None stays None."""
        if names is None:
            return None
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise ValueError(f"unknown class names {unknown}; this model detects {list(self.class_names)}")
        return [self.class_names.index(n) + 1 for n in names]

    def _to_detections(self, det: ImageDetections, width: int, height: int) -> Detections:
        scale = torch.tensor([width, height, width, height], device=det.boxes.device, dtype=torch.float32)
        boxes = (det.boxes.float().clamp(0, 1) * scale).tolist()
        layers = self.config.source_layers
        return Detections(
            (Detection(self.class_names[c - 1], s, tuple(b), c, p, layers[self._prior_layer[p]])
             for b, s, c, p in zip(boxes, det.scores.tolist(), det.labels.tolist(), det.prior.tolist())),
            candidates=det.candidates)
