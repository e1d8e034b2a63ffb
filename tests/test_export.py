"""ONNX export (ssd.export) and the onnxruntime backend: the exported graph computes what PyTorch computes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import ssd
import ssd.backends
import ssd.export
from ssd import Detector
from ssd.cli import export_main
from visualize.examples import EXAMPLES, example_image

SMALL_VGG = ssd.SSD300_VOC.replace(width=0.125, batch_norm=True)


def random_images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def photos(size):
    """The app's example photos, resized to the network input as the detector does."""
    return np.stack([np.asarray(example_image(name).resize((size, size), Image.BILINEAR)) for name in EXAMPLES])


@pytest.fixture(scope="module")
def shipped():
    return Detector.load(device="cpu", backend="torch")


@pytest.fixture(scope="module")
def shipped_onnx(shipped, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "lite0.onnx"
    ssd.export_onnx(shipped, path)
    return path, Detector.load(path)


def assert_outputs_match(a: Detector, b: Detector, images, atol=1e-4):
    (boxes_a, scores_a), (boxes_b, scores_b) = a.backend(images), b.backend(images)
    assert boxes_a.shape == boxes_b.shape == (len(images), a.config.num_default_boxes, 4)
    assert scores_a.shape == scores_b.shape == (len(images), a.config.num_default_boxes, a.config.num_classes + 1)
    assert boxes_b.dtype == scores_b.dtype == torch.float32
    assert float((boxes_a - boxes_b).abs().max()) < atol
    assert float((scores_a - scores_b).abs().max()) < atol


@pytest.mark.slow
def test_shipped_model_outputs_match_pytorch_on_random_and_real_images(shipped, shipped_onnx):
    _, exported = shipped_onnx
    assert exported.backend_name == "onnxruntime" and shipped.backend_name == "torch"
    size = shipped.config.image_size
    assert_outputs_match(shipped, exported, random_images(3, size))  # a batch of 3: the batch is dynamic
    assert_outputs_match(shipped, exported, photos(size))
    assert_outputs_match(shipped, exported, random_images(1, size, seed=1))


@pytest.mark.slow
def test_shipped_model_detections_after_nms_are_identical_on_the_example_photos(shipped, shipped_onnx):
    _, exported = shipped_onnx
    for name in EXAMPLES:
        photo = example_image(name)
        for score in (shipped.score_threshold, 0.05):
            want, got = shipped.detect(photo, score), exported.detect(photo, score)
            # The same detections (class and default box); two whose scores differ by less than the backends'
            # rounding may come out in either order, so they are matched by identity, not position.
            by_id = {(d.label, d.prior_index): d for d in want}
            assert sorted(by_id) == sorted((d.label, d.prior_index) for d in got), name
            for g in got:
                w = by_id[(g.label, g.prior_index)]
                assert g.box == pytest.approx(w.box, abs=1e-2)  # pixels
                assert g.score == pytest.approx(w.score, abs=1e-4)
            order = [(d.label, d.prior_index) for d in want]
            for i, g in enumerate(got):  # any place that differs is a near-tie
                assert order[i] == (g.label, g.prior_index) or abs(by_id[order[i]].score - g.score) < 1e-4, name
    # The shipped model is a real detector: the cat is found as a cat on both backends.
    assert exported.detect(example_image("cat"))[0].label == "cat"


@pytest.mark.slow
def test_the_file_says_what_it_is(shipped, shipped_onnx):
    path, exported = shipped_onnx
    model = onnx.load(str(path))
    (image,) = model.graph.input
    assert image.name == "images" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    size = shipped.config.image_size
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [size, size, 3]  # dynamic batch, NHWC
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["config_name"] == shipped.config.name == "SSD384_LITE0_VOC"
    assert json.loads(props["classes"]) == list(ssd.VOC_CLASSES)
    assert float(props["score_threshold"]) == shipped.score_threshold
    assert "not in the graph" in props["nms"]
    # The file alone is enough for a Detector: same config, classes, threshold and card.
    assert exported.config == shipped.config and exported.class_names == shipped.class_names
    assert exported.score_threshold == shipped.score_threshold
    assert exported.card.val == shipped.card.val


@pytest.fixture(scope="module")
def small_vgg():
    torch.manual_seed(0)
    return Detector(ssd.build_ssd(SMALL_VGG), SMALL_VGG, ssd.VOC_CLASSES, device="cpu")


@pytest.mark.slow
def test_the_papers_vgg16_model_exports_too(small_vgg, tmp_path):
    # Randomised batch-norm statistics, so that folding or dropping them in the export would show.
    g = torch.Generator().manual_seed(1)
    for m in small_vgg.model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    exported = Detector.load(ssd.export_onnx(small_vgg, tmp_path / "vgg.onnx"))
    assert exported.config == SMALL_VGG
    assert_outputs_match(small_vgg, exported, random_images(2, 300, seed=2))
    image = photos(300)[0]
    want = small_vgg.detect(image, score_threshold=0.05)
    assert [(d.label, d.prior_index) for d in exported.detect(image, score_threshold=0.05)] == \
        [(d.label, d.prior_index) for d in want]


@pytest.mark.slow
def test_load_weights_with_the_onnxruntime_backend_caches_the_export(shipped, tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    first = Detector.load(backend="onnxruntime")
    assert first.backend_name == "onnxruntime" and first.model is None
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this export")

    monkeypatch.setattr(ssd.export, "export_bytes", no_export)
    again = Detector.load(backend="auto", device="cpu")  # auto on the CPU with onnxruntime installed
    assert again.backend_name == "onnxruntime"
    photo = example_image("motorcycle")
    assert [(d.label, d.prior_index) for d in again.detect(photo)] == \
        [(d.label, d.prior_index) for d in shipped.detect(photo)]


def test_without_onnxruntime_auto_falls_back_to_torch_and_an_explicit_choice_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(ssd.backends, "onnxruntime_available", lambda: False)
    assert Detector.load(backend="auto", device="cpu").backend_name == "torch"
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        Detector.load(backend="onnxruntime", device="cpu")


def test_auto_falls_back_to_torch_when_the_export_fails(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(ssd.export, "export_bytes", broken)
    assert Detector.load(backend="auto", device="cpu").backend_name == "torch"
    assert "exporter broke" in caplog.text
    with pytest.raises(RuntimeError, match="exporter broke"):
        Detector.load(backend="onnxruntime")


@pytest.mark.slow
def test_backend_choices_are_checked(shipped_onnx):
    path, _ = shipped_onnx
    with pytest.raises(ValueError, match="unknown backend"):
        Detector.load(backend="tensorrt")
    with pytest.raises(ValueError, match="onnxruntime on the CPU"):
        Detector.load(path, backend="torch")


def test_an_onnx_file_that_is_not_an_ssd_export_is_refused(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="not an SSD export"):
        Detector.load(path)


@pytest.mark.slow
def test_command_line_export(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert export_main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.exists() and "SSD384_LITE0_VOC, 13792 default" in printed and "max |diff|" in printed
    diffs = [float(v.split(",")[0]) for v in printed.split("boxes ")[1].split("scores ")]
    assert max(diffs) < 1e-4
