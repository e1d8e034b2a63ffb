"""The INT8 graph (backend "onnxruntime-int8"): onnxruntime's static quantization of the float32 export.

    python -m ssd.export --cache --int8 [--calibration DIR] [--weights W]   # into the cache, beside the float32 one
    python -m ssd.export --out model.int8.onnx --int8 [--calibration DIR]

How: `onnxruntime.quantization.quantize_static` of the float32 export (`ssd.export`), after onnxruntime's
pre-processing (constant folding, shape inference); QDQ format, int8 weights per output channel (in 8 bits on a CPU
with VNNI or AMX, else 7: `REDUCE_RANGE`), uint8 activations, ranges from MinMax calibration. What stays float32 is
`KEEP_FLOAT32`: the first convolution, and box decoding and softmax (the operators after the heads' concatenation),
so that boxes and scores are computed in float32 from the quantized head outputs. Chosen among `FLOAT32_CHOICES` by
measuring each one's minival mAP and time (bench/int8.py --choices; docs/benchmarks.md, INT8). The first convolution
in float32 ("stem") scored 0.2-0.4 mAP more than "decode" and ran faster: int8 gains nothing on three input
channels, and its input would be the normalized image on a uint8 grid that is not the pixels' own. Quantizing
everything ("nothing") and keeping the heads float32 too ("heads") scored 0.1-0.2 mAP more than "decode", but
"nothing" puts the boxes and scores themselves on an 8-bit grid (box corners in steps of about 1 % of the image),
and "heads" gives up a third of the speed-up; the depthwise convolutions in float32 lost 4 mAP, and quantizing only
the convolutions 9 (the ReLU6 after each is then quantized on the convolution's wide output range instead of 0-6).

Calibration images: `ssd.export.calibration` (300 training photos of a VOC folder when one is named, else
scikit-image's sample photos). The file's metadata and its record say which.

The cache: the INT8 file lies beside the float32 export, named after it (same weights, card, torch and exporter key)
plus the quantizer's own key (this recipe's version, the weights' width, onnxruntime's version), and beside it its
record (`Int8Record`, JSON): the calibration images, what stayed float32, a timing against float32 taken when it was
made, on this CPU, and (once bench/int8.py --record has measured it) the mAP of both on VOC minival. The backend
`auto` runs the INT8 file only when that record says it is faster here and within `MAX_MAP_DROP` of float32
(`Int8Record.verdict`); otherwise INT8 is opt-in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..backends import PRECISION_KEY, OnnxRuntimeBackend, cpu_has_int8_dot_product, cpu_identity
from ..config import SSDConfig
from . import cache_dir, cached_export, export_bytes, export_cache_path
from .calibration import CALIBRATION_ENV, Calibration, calibration_images

log = logging.getLogger("ssd")

# Part of the cache key: bump when the recipe (pre-processing, format, what stays float32, calibration) changes.
RECIPE_VERSION = "2"
# `auto` takes INT8 only within this much area mAP (0-1) of float32 on the recorded evaluation.
MAX_MAP_DROP = 0.005

# What stays float32, each choice measured by bench/int8.py (minival mAP, time); KEEP_FLOAT32 is the shipped one.
FLOAT32_CHOICES = {
    "nothing": "every operator onnxruntime can quantize is quantized (its default list), the outputs too: boxes and "
               "scores on an 8-bit grid",
    "decode": "box decoding and softmax (the operators after the heads' concatenation) stay float32; everything "
              "before them is quantized",
    "after-heads": "everything after the heads' last convolutions stays float32 (their reshapes and concatenation "
                   "too)",
    "convs-only": "only the convolutions are quantized: box decoding and softmax stay float32, and so do the "
                  "activations (ReLU6) and the residual additions",
    "depthwise": "as decode, and the depthwise convolutions (with their ReLU6) stay float32 too",
    "stem": "as decode, and the first convolution (on the normalized image, with its ReLU6) stays float32 too",
    "heads": "the multibox heads (their convolutions with their ReLU6, reshapes and concatenation), box decoding "
             "and softmax stay float32: the base and the extra layers are quantized",
}
KEEP_FLOAT32 = "stem"
# The weights' width. Without VNNI (AVX2, AVX-512 without it), onnxruntime multiplies uint8 activations by int8
# weights with VPMADDUBSW, which sums each pair of products into 16 bits and saturates above 32767 (2 x 255 x 127
# does not fit; 2 x 255 x 64 does), so there the weights take 7 bits (-64..63). With VNNI or AMX-INT8 the products
# are summed in 32 bits and the weights take all 8. On the shipped weights (docs/benchmarks.md, INT8), with the
# first convolution quantized too ("decode"), 8 bits lost 3.2 minival mAP on an AVX2 CPU and 7 bits 1.5; computed
# exactly (bench/int8.py --simulated: what 32-bit sums give), 8 bits lose 0.9 and 7 bits 1.2. With it float32
# ("stem"), 8 bits score on AVX2 as 7 do (the saturation was mostly in it), and lose 0.4 computed exactly.
# None: chosen by this CPU; True / False: 7 / 8 bits wherever.
REDUCE_RANGE: bool | None = None
# quantize_static's calibration arguments: none, MinMax over every image. Neither a moving average of each image's
# range (CalibMovingAverage) nor ranges cut at a percentile of a histogram (99.99 or 99.999 %) scored better.
CALIBRATION: dict = {}


def reduce_range() -> bool:
    """Whether the weights are quantized in 7 bits (REDUCE_RANGE): unless set, where this CPU has no VNNI or AMX."""
    return cpu_has_int8_dot_product() is not True if REDUCE_RANGE is None else REDUCE_RANGE


def float32_nodes(graph, keep: str) -> tuple[list[str] | None, list[str]]:
    """(op_types_to_quantize, nodes_to_exclude) for quantize_static that keep `keep` (FLOAT32_CHOICES) float32."""
    if keep not in FLOAT32_CHOICES:
        raise ValueError(f"unknown float32 choice {keep!r}; choose one of {', '.join(FLOAT32_CHOICES)}")
    if keep == "nothing":
        return None, []
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if keep == "convs-only":
        return ["Conv"], []
    # Walk back from the outputs to the last convolutions ("after-heads", "heads"), or to the heads'
    # concatenation of their reshaped outputs ("decode", "depthwise", "stem"): everything on the way stays float32.
    made_by = {out: node for node in graph.node for out in node.output}

    def heads_concatenation(node) -> bool:
        return node.op_type == "Concat" and all(made_by.get(i) is not None and made_by[i].op_type == "Reshape"
                                                for i in node.input)

    tail, todo = set(), [o.name for o in graph.output]
    while todo:
        node = made_by.get(todo.pop())
        if node is None or node.op_type == "Conv" or node.name in tail or (
                keep not in ("after-heads", "heads") and heads_concatenation(node)):
            continue
        tail.add(node.name)
        todo += list(node.input)
    exclude = sorted(tail)
    if keep in ("depthwise", "heads", "stem"):
        if keep == "depthwise":
            kept = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
        elif keep == "stem":
            kept = convs[:1]  # an ONNX graph lists its nodes in the order they run
        else:
            kept = [n for n in convs if any("_heads." in i for i in n.input)]
        # And the activation (ReLU6) after each: quantized alone, it would be quantized on its input's range,
        # the convolution's output before clipping, much wider than 0-6 (a quantized convolution's output is
        # quantized after its activation, on 0-6).
        outputs = {out for n in kept for out in n.output}
        exclude += [n.name for n in kept]
        exclude += [n.name for n in graph.node if n.op_type in ("Clip", "Relu") and n.input[0] in outputs]
    return None, exclude


class _Reader:
    """onnxruntime's CalibrationDataReader over a Calibration, `batch` images at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int):
        self.batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])
        self.input_name = input_name

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize(float_model: Path | bytes, calibration: Calibration, keep: str = KEEP_FLOAT32, batch: int = 1) -> bytes:
    """The INT8 model (serialised ONNX) of a float32 export (a path or its bytes), calibrated on `calibration`,
    with `keep` (FLOAT32_CHOICES) left float32. Its metadata is the float32 file's plus what was done. `batch`:
    calibration images per run; 1 peaks at 1.2 GB for the shipped model (8: 3.7 GB) and is no slower."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..graph import INPUT

    seven_bits = reduce_range()

    # onnxruntime's quantizer warns on every run about things that do not apply here (e.g. to pre-process first,
    # which this does), some through the root logger's functions, which give the root logger a handler of its
    # own (logging.basicConfig) when it has none: a placeholder handler prevents that, for as long as it runs.
    root = logging.getLogger()
    quiet = [root, logging.getLogger("onnxruntime")]
    levels = [q.level for q in quiet]
    placeholder = logging.NullHandler()
    with tempfile.TemporaryDirectory(prefix="ssd-int8-") as tmp:
        tmp = Path(tmp)
        source = tmp / "float32.onnx"
        if isinstance(float_model, bytes):
            source.write_bytes(float_model)
        else:
            source = Path(float_model)
        float_meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
        prepared, out = tmp / "prepared.onnx", tmp / "int8.onnx"
        try:
            root.addHandler(placeholder)
            for q in quiet:
                q.setLevel(logging.ERROR)
            quant_pre_process(str(source), str(prepared))
            op_types, exclude = float32_nodes(onnx.load(str(prepared)).graph, keep)
            quantize_static(str(prepared), str(out), _Reader(calibration.images, INPUT, batch),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=seven_bits,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=op_types, nodes_to_exclude=exclude, **CALIBRATION)
        finally:
            root.removeHandler(placeholder)
            for q, level in zip(quiet, levels):
                q.setLevel(level)
        proto = onnx.load(str(out))
    meta = {**float_meta, PRECISION_KEY: "int8",
            "int8_quantization": f"onnxruntime {onnxruntime.__version__} quantize_static: QDQ, int8 weights per "
                                 f"output channel in {7 if seven_bits else 8} bits, uint8 "
                                 f"activations, MinMax calibration; recipe {RECIPE_VERSION}",
            "int8_float32": f"{keep}: {FLOAT32_CHOICES[keep]}",
            "int8_calibration": calibration.source}
    onnx.helper.set_model_props(proto, meta)
    return proto.SerializeToString()


@dataclass
class Timing:
    """INT8 against float32 on onnxruntime, one image (the demo's case), taken when the INT8 file was made."""

    cpu: str  # ssd.backends.cpu_identity(): a timing holds for the CPU it was taken on
    threads: int
    float32_ms: float
    int8_ms: float
    runs: int

    @property
    def faster(self) -> bool:
        return self.int8_ms < self.float32_ms


@dataclass
class Accuracy:
    """mAP (0-1) of both graphs on one evaluation set, as bench/int8.py --record measured it, and where: integer
    kernels differ between instruction sets (without VNNI, onnxruntime multiplies uint8 by int8 in pairs summed to
    16 bits, which can saturate), so a figure holds for the CPU it was measured on."""

    dataset: str
    images: int
    float32_map_area: float
    int8_map_area: float
    float32_map_11pt: float
    int8_map_11pt: float
    cpu: str
    command: str = ""

    @property
    def drop(self) -> float:
        return self.float32_map_area - self.int8_map_area


@dataclass
class Int8Record:
    """What is known about one cached INT8 file: how it was made and what it was measured to do."""

    calibration: str  # which images, in words (Calibration.source)
    calibrated_from: str  # Calibration.origin
    calibration_images: list[str]
    float32: str  # what stayed float32 (FLOAT32_CHOICES)
    timing: Timing | None = None
    accuracy: Accuracy | None = None
    version: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Int8Record:
        d = dict(d)
        timing, accuracy = d.pop("timing", None), d.pop("accuracy", None)
        return cls(**d, timing=Timing(**timing) if timing else None,
                   accuracy=Accuracy(**accuracy) if accuracy else None)

    def verdict(self, cpu: str | None = None) -> tuple[bool, str]:
        """(whether `auto` should run the INT8 file, why in words): only when it was timed on this CPU and was
        faster there, and its measured mAP is within MAX_MAP_DROP of float32's."""
        cpu = cpu or cpu_identity()
        t, a = self.timing, self.accuracy
        if t is None:
            return False, "no timing recorded"
        if t.cpu != cpu:
            return False, f"timed on another CPU ({t.cpu}; this one is {cpu})"
        if not t.faster:
            return False, f"slower on this CPU: {t.int8_ms:.1f} ms against float32's {t.float32_ms:.1f} ms"
        if a is None:
            return False, "its mAP has not been measured (bench/int8.py --record)"
        if a.cpu != cpu:
            return False, f"its mAP was measured on another CPU ({a.cpu})"
        if a.drop > MAX_MAP_DROP:
            return False, (f"{100 * a.drop:.2f} mAP below float32 on {a.dataset} ({100 * a.int8_map_area:.2f} against "
                           f"{100 * a.float32_map_area:.2f}); auto allows {100 * MAX_MAP_DROP:.1f}")
        return True, (f"{t.int8_ms:.1f} ms against float32's {t.float32_ms:.1f} ms on this CPU, mAP "
                      f"{100 * a.int8_map_area:.2f} against {100 * a.float32_map_area:.2f} on {a.dataset}")


def int8_cache_path(weights: Path, card: dict) -> Path:
    """Where the INT8 file of these weights lies in the cache (whether or not it does): the float32 export's name
    plus the quantizer's key (recipe, weights' width, onnxruntime version)."""
    import onnxruntime

    recipe = f"{RECIPE_VERSION}/{KEEP_FLOAT32}/{reduce_range()}/{sorted(CALIBRATION.items())}/{onnxruntime.__version__}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    return export_cache_path(weights, card).with_suffix(f".int8-{key}.onnx")


def record_path(int8_path: Path) -> Path:
    return Path(int8_path).with_suffix(".json")


def read_record(int8_path: Path) -> Int8Record | None:
    """The record beside a cached INT8 file; None when there is none or it cannot be read."""
    try:
        return Int8Record.from_dict(json.loads(record_path(int8_path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_record(int8_path: Path, record: Int8Record) -> None:
    _write_atomically(record_path(int8_path), (json.dumps(record.to_dict(), indent=2) + "\n").encode())


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)  # concurrent processes never read half a file


def time_against_float32(float_model: Path | bytes, int8_model: Path | bytes, images: np.ndarray,
                         runs: int = 10, warmup: int = 2) -> Timing:
    """Both graphs on one image at a time, alternating (who goes first too), median of `runs`."""
    sessions = {"float32": OnnxRuntimeBackend(float_model), "int8": OnnxRuntimeBackend(int8_model)}
    times = {name: [] for name in sessions}
    order = list(sessions.items())
    for i in range(warmup + runs):
        image = images[i % len(images)][None]
        for name, session in (order if i % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            session(image)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    threads = sessions["int8"].session.get_session_options().intra_op_num_threads
    return Timing(cpu_identity(), threads, round(1e3 * statistics.median(times["float32"]), 2),
                  round(1e3 * statistics.median(times["int8"]), 2), runs)


def cached_int8(weights: Path, network: nn.Module, cfg: SSDConfig, class_names, card: dict,
                calibration_source=None) -> Path | bytes:
    """The INT8 file of a weights file, from the cache when it was made before (calibrated on whatever it was:
    its record says); else made now from the float32 export (itself cached, `ssd.export.cached_export`),
    calibrated on `calibration_source` (see `calibration_images`), timed against float32, and cached with its
    record. `calibration_source` given and different from the cached file's: made again. Bytes when the cache is
    not writable."""
    path = int8_cache_path(weights, card)
    if path.exists():
        record = read_record(path)
        wanted = calibration_source or os.environ.get(CALIBRATION_ENV)
        if record is not None and (not wanted or str(Path(wanted).resolve()) == record.calibrated_from):
            return path
    calibration = calibration_images(cfg.image_size, calibration_source)
    float_model = cached_export(weights, network, cfg, class_names, card)
    log.info("quantizing %s to INT8 (once; cached in %s), calibrated on %s", Path(weights).name, path.parent,
             calibration.source)
    start = time.perf_counter()
    data = quantize(float_model, calibration)
    log.info("quantized %s in %.1f s", Path(weights).name, time.perf_counter() - start)
    record = Int8Record(calibration.source, calibration.origin, list(calibration.names),
                        f"{KEEP_FLOAT32}: {FLOAT32_CHOICES[KEEP_FLOAT32]}",
                        timing=time_against_float32(float_model, data, calibration.images))
    log.info("INT8 %.1f ms, float32 %.1f ms per image on this CPU", record.timing.int8_ms, record.timing.float32_ms)
    try:
        _write_atomically(path, data)
        write_record(path, record)
        return path
    except OSError:
        return data


def quantized_bytes(network: nn.Module, cfg: SSDConfig, class_names, card: dict | None = None,
                    calibration_source=None) -> bytes:
    """INT8 model of a bare network (no weights file, so nothing cached): `Detector(model, backend=
    "onnxruntime-int8")`."""
    calibration = calibration_images(cfg.image_size, calibration_source)
    return quantize(export_bytes(network, cfg, class_names, card), calibration)


def find_int8(weights: Path, card: dict) -> tuple[Path, Int8Record | None] | None:
    """The cached INT8 file of these weights and its record, or None when there is none."""
    try:
        path = int8_cache_path(weights, card)
    except (OSError, ImportError):
        return None
    return (path, read_record(path)) if path.exists() else None


def record_accuracy(weights: Path, card: dict, accuracy: Accuracy) -> Path:
    """Add a measured mAP to the record of the cached INT8 file of these weights (bench/int8.py --record)."""
    found = find_int8(weights, card)
    if found is None:
        raise FileNotFoundError(f"no cached INT8 file of {weights} in {cache_dir()}: python -m ssd.export --cache "
                                f"--int8 makes one")
    path, record = found
    if record is None:
        raise ValueError(f"{record_path(path)}: missing or unreadable; make the INT8 file again")
    record.accuracy = accuracy
    write_record(path, record)
    return record_path(path)


__all__ = ["Accuracy", "FLOAT32_CHOICES", "Int8Record", "KEEP_FLOAT32", "MAX_MAP_DROP", "Timing", "cached_int8",
           "find_int8", "int8_cache_path", "quantize", "quantized_bytes", "read_record", "record_accuracy"]
