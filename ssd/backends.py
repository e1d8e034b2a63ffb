"""Where the inference graph runs: PyTorch (CPU or GPU; float32 on the CPU, float16 on a GPU, or bfloat16 on
either), or onnxruntime (CPU; the float32 export, or its INT8 quantization: ssd.export.int8). A backend takes a batch
of resized uint8 images (B, S, S, 3) and returns the graph's (boxes, scores) as torch tensors on its device."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import SSDConfig
from .graph import INPUT, OUTPUTS, InferenceGraph

BACKENDS = ("torch", "torch-bf16", "onnxruntime", "onnxruntime-int8", "auto")
ONNXRUNTIME_BACKENDS = ("onnxruntime", "onnxruntime-int8")
# An ONNX file's metadata key that says "int8" in a quantized file (ssd.export.int8), which names its backend.
PRECISION_KEY = "precision"

log = logging.getLogger("ssd")


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _cpuinfo() -> list[str] | None:
    """The lines of Linux's /proc/cpuinfo; None elsewhere."""
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None


def _cpu_flags(lines: list[str] | None = None) -> set[str] | None:
    """The instruction-set flags of this CPU (from /proc/cpuinfo's `lines`, read when not given); None: cannot tell."""
    lines = _cpuinfo() if lines is None else lines
    if lines is None:
        return None
    return next((set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")), set())


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), where a bfloat16 network runs about
    twice as fast as float32 (bench/inference.py); elsewhere bfloat16 is emulated and slower. None: cannot tell
    (not Linux)."""
    flags = _cpu_flags()
    return None if flags is None else bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot_product() -> bool | None:
    """Whether this CPU sums uint8 x int8 products straight into 32 bits (AVX512-VNNI, AVX-VNNI or AMX-INT8), as
    onnxruntime's int8 kernels then do; without it they sum pairs of products into 16 bits first, which saturates
    with 8-bit weights (ssd.export.int8.reduce_range). None: cannot tell (not Linux)."""
    flags = _cpu_flags()
    return None if flags is None else bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


# The instruction sets that decide how fast int8 and float32 convolutions run (VNNI: int8 dot products in one
# instruction; without it onnxruntime's int8 kernels are little faster than float32 ones, or slower).
_SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def cpu_identity() -> str:
    """This CPU in words, model name and the instruction sets that matter for speed: a timing taken on one
    holds there only (the INT8 record's timing, ssd.export.int8). A model name alone does not tell an AVX2 EPYC
    from an AVX-512 one."""
    import platform

    lines = _cpuinfo()
    if lines is None:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())
    flags = _cpu_flags(lines)
    return f"{name} ({' '.join(f for f in _SPEED_FLAGS if f in flags) or 'none of ' + ' '.join(_SPEED_FLAGS)})"


def default_device(device=None) -> torch.device:
    """`device`, or the GPU when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> onnxruntime on the CPU when it is installed (it runs our graphs faster there: bench/inference.py),
    else torch. An explicit choice is checked against the device. 'auto' never picks torch-bf16: bfloat16 changes
    the scores a little (docs/library.md), and is slower than float32 on CPUs without `cpu_has_native_bf16`. Nor
    does it pick onnxruntime-int8 here: that takes a weights file whose INT8 record says it is faster on this CPU
    and accurate enough (`Detector.load`, ssd.export.int8.Int8Record.verdict)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "onnxruntime" if device.type == "cpu" and onnxruntime_available() else "torch"
    if backend in ONNXRUNTIME_BACKENDS:
        if device.type != "cpu":
            raise ValueError(f"the {backend} backend runs on the CPU only, not {device}")
        if not onnxruntime_available():
            raise ImportError("the onnxruntime backend needs the onnxruntime package: pip install onnxruntime")
    return backend


class TorchBackend:
    """The graph in PyTorch eager mode, the network in `dtype`: by default float16 on a GPU (fast there) and
    float32 on the CPU; bfloat16 ('torch-bf16') on either."""

    def __init__(self, network: nn.Module, cfg: SSDConfig, device: torch.device, dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.name = "torch-bf16" if dtype == torch.bfloat16 else "torch"
        if self.name == "torch-bf16" and self.device.type == "cpu" and cpu_has_native_bf16() is False:
            log.warning("this CPU has no native bfloat16 (AVX512-BF16 or AMX): torch-bf16 runs slower than float32 "
                        "here")
        network = network.eval().to(self.device, dtype, memory_format=torch.channels_last)
        self.graph = InferenceGraph(network, cfg, dtype).to(self.device)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = self.graph(torch.from_numpy(images).to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # so that timings include the GPU's work
        return boxes, scores


class OnnxRuntimeBackend:
    """An exported graph (`ssd.export`) in an onnxruntime session on the CPU. `model`: an .onnx path or its bytes.
    threads: onnxruntime's intra-op threads (default: as many as PyTorch uses, so the two compare alike). Its name
    is "onnxruntime-int8" when the file says it is quantized (metadata `precision`: int8, ssd.export.int8), else
    "onnxruntime". optimize=False runs the graph as written, without onnxruntime's fusions: an INT8 file's
    operators then compute in float32 on dequantized int8 values, near what exact integer arithmetic gives and
    apart from this CPU's int8 kernels (bench/int8.py --simulated)."""

    device = torch.device("cpu")

    def __init__(self, model, threads: int | None = None, optimize: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning, as PyTorch's do (ssd/__init__.py): a spinning pool takes
        # the cores that the app's server and its other requests need between two runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.name = "onnxruntime-int8" if self.metadata.get(PRECISION_KEY) == "int8" else "onnxruntime"

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def num_boxes(self):
        """N of the `boxes` output (B, N, 4) as the file declares it."""
        return next(o.shape[1] for o in self.session.get_outputs() if o.name == OUTPUTS[0])

    def __call__(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = self.session.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(images)})
        return torch.from_numpy(boxes), torch.from_numpy(scores)
