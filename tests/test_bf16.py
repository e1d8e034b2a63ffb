"""The torch-bf16 backend: the network in bfloat16 (about twice as fast on CPUs with native bfloat16), with the
detections of float32 up to bfloat16's rounding."""

from __future__ import annotations

import logging

import pytest
import torch
from torchvision.ops import box_iou

import ssd
import ssd.backends
from ssd import Detector
from visualize.examples import EXAMPLES, example_image


@pytest.fixture(scope="module")
def float32():
    return Detector.load(device="cpu", backend="torch")


@pytest.fixture(scope="module")
def bf16():
    return Detector.load(device="cpu", backend="torch-bf16")


def iou(a, b) -> torch.Tensor:
    return box_iou(torch.tensor([a.box]), torch.tensor([b.box]))


def test_the_network_runs_in_bfloat16_and_the_outputs_are_float32(bf16):
    assert bf16.backend_name == "torch-bf16"
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    boxes, scores = bf16.backend(bf16.preprocess([example_image("cat")]))
    assert boxes.dtype == scores.dtype == torch.float32
    assert torch.allclose(scores.sum(-1), torch.ones(1), atol=1e-5)  # softmax in float32


@pytest.mark.slow
def test_the_shipped_model_finds_the_same_objects_in_bfloat16(float32, bf16):
    """Confident detections (well above the threshold, so rounding cannot move them across it) are the same
    objects, with the same labels, nearly the same scores and boxes."""
    for name in EXAMPLES:
        photo = example_image(name)
        want = [d for d in float32.detect(photo) if d.score > float32.score_threshold + 0.1]
        got = bf16.detect(photo, score_threshold=float32.score_threshold - 0.1)
        for w in want:
            same = [g for g in got if g.label == w.label and float(iou(g, w)) > 0.9]
            assert same, (name, w)
            # Half the 0.1 margin above: the shipped model's true objects move by under 0.01, its one confident
            # wrong box (a pottedplant on the coffee photo, 0.60) by 0.03.
            assert same[0].score == pytest.approx(w.score, abs=0.05), (name, w)
    assert bf16.detect(example_image("cat"))[0].label == "cat"


def test_auto_never_picks_bfloat16():
    assert ssd.backends.resolve_backend("auto", torch.device("cpu")) in ("torch", "onnxruntime")
    assert ssd.backends.resolve_backend("torch-bf16", torch.device("cpu")) == "torch-bf16"


def test_a_cpu_without_native_bfloat16_is_warned_about(monkeypatch, caplog):
    monkeypatch.setattr(ssd.backends, "cpu_has_native_bf16", lambda: False)
    cfg = ssd.SSD300_VOC.replace(width=0.125)
    with caplog.at_level(logging.WARNING, logger="ssd"):
        Detector(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, device="cpu", backend="torch-bf16")
    assert "no native bfloat16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(ssd.backends, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level(logging.WARNING, logger="ssd"):
        Detector(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, device="cpu", backend="torch-bf16")
    assert "bfloat16" not in caplog.text


@pytest.mark.slow
def test_an_exported_bfloat16_detector_is_a_float32_onnx_file(tmp_path):
    cfg = ssd.SSD300_VOC.replace(width=0.125, batch_norm=True)
    torch.manual_seed(0)
    detector = Detector(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, device="cpu", backend="torch-bf16")
    exported = Detector.load(ssd.export_onnx(detector, tmp_path / "bf16.onnx"))
    images = detector.preprocess([example_image("cat")])
    # The export is the same (bfloat16-rounded) weights in float32: it agrees with the bfloat16 network up to
    # bfloat16's activation rounding.
    (_, want), (_, got) = detector.backend(images), exported.backend(images)
    assert got.dtype == torch.float32 and float((want - got).abs().max()) < 0.05

