"""INT8 inference (backend "onnxruntime-int8", ssd.export.int8): the quantized graph finds what the float32 one
finds on real photos, is made once per weights file and cached beside the float32 export, and `auto` takes it
only where its record says it is faster on this CPU and within 0.5 mAP of float32.

The tests have no VOC folder, so the INT8 graph here is calibrated on scikit-image's sample photos, the fallback
a hosted demo gets too."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

pytest.importorskip("onnxruntime")
skimage_data = pytest.importorskip("skimage.data")

import ssd.backends  # noqa: E402
from ssd import Detector  # noqa: E402
from ssd.backends import cpu_identity  # noqa: E402
from ssd.cli import export_main, main  # noqa: E402
from ssd.detector import DEFAULT_WEIGHTS  # noqa: E402
from ssd.export import calibration, export_cache_path, int8  # noqa: E402
from ssd.weights_files import card_beside  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea")
# How near INT8 must come to float32 on those photos. Each graph's detections are looked for among the other's
# candidates (score >= 0.01, the evaluation's), so that a score moving across a threshold is not a miss:
# - every detection above the card's score threshold T (0.39) in either graph is one the other makes too: same
#   class, IoU >= 0.5 (VOC's true-positive criterion);
# - a confident one (score >= CONFIDENT in either graph) is one the other makes at the same place, IoU >= 0.8;
# - one that float32 is sure of (>= SURE) keeps its score within SCORE_TOLERANCE.
# Measured (calibrated on scikit-image's photos or on VOC): the real objects (the astronaut, the cat) within IoU
# 0.96 and 0.03 in score. The guesses between T and 0.5 are at things outside VOC's classes (the coffee cup as
# "pottedplant", the flag on the astronaut's suit as "bottle"): their scores move by up to 0.3 (the flag 0.21 ->
# 0.48) and their boxes between neighbouring candidates (the cup at IoU 0.63), which is why the looser bound.
CONFIDENT, CONFIDENT_IOU, IOU, SURE, SCORE_TOLERANCE = 0.5, 0.8, 0.5, 0.7, 0.05


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of this module's own, and no calibration folder: the scikit-image fallback."""
    patch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    patch.setenv("SSD_CACHE_DIR", str(root))
    patch.delenv(calibration.CALIBRATION_ENV, raising=False)
    yield root / "onnx"
    patch.undo()


@pytest.fixture(scope="module")
def quantized(cache):
    return Detector.load(backend="onnxruntime-int8")


@pytest.fixture(scope="module")
def float32(quantized):
    return Detector.load(backend="onnxruntime")  # the export the INT8 graph was made from, cached with it


def photo(name):
    return getattr(skimage_data, name)()


def counterpart(d, others):
    """The detection of `others` of d's class that overlaps d most, and that IoU (None, 0 when there is none)."""
    same = [o for o in others if o.label == d.label]
    if not same:
        return None, 0.0
    ious = box_iou(torch.tensor([d.box]), torch.tensor([o.box for o in same]))[0]
    return same[int(ious.argmax())], float(ious.max())


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
@pytest.mark.parametrize("name", PHOTOS)
def test_int8_finds_what_float32_finds_on_photos(quantized, float32, name):
    assert (quantized.backend_name, float32.backend_name) == ("onnxruntime-int8", "onnxruntime")
    threshold = float32.score_threshold
    assert quantized.score_threshold == threshold  # the same card
    candidates = float32.config.conf_threshold
    f = float32.detect(photo(name), score_threshold=candidates)
    q = quantized.detect(photo(name), score_threshold=candidates)
    assert any(d.score >= SURE for d in f) or name == "coffee"  # the coffee photo has guesses only
    for these, others in ((f, q), (q, f)):
        for d in these:
            if d.score < threshold:
                continue
            other, iou = counterpart(d, others)
            where = f"{d.label} {d.score:.2f} {tuple(round(x) for x in d.box)}: best IoU {iou:.2f} with {other}"
            assert iou >= (CONFIDENT_IOU if max(d.score, other.score if other else 0) >= CONFIDENT else IOU), where
    for d in f:
        if d.score >= SURE:
            other, _ = counterpart(d, q)
            assert abs(other.score - d.score) <= SCORE_TOLERANCE, (d, other)


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_the_int8_file_is_cached_beside_the_float32_export_keyed_like_it_and_says_what_calibrated_it(
        quantized, cache):
    card = quantized.card
    path = int8.int8_cache_path(DEFAULT_WEIGHTS, card)
    float_path = export_cache_path(DEFAULT_WEIGHTS, card)
    assert path.exists() and float_path.exists() and path.parent == float_path.parent == cache
    assert path.name.startswith(float_path.stem + ".int8-")  # the float32 export's key, and the quantizer's
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["precision"] == "int8" and "scikit-image" in meta["int8_calibration"]
    assert json.loads(meta["ssd_model_card"])["classes"] == list(quantized.class_names)
    record = int8.read_record(path)
    assert record.calibrated_from == "scikit-image" and "astronaut (whole)" in record.calibration_images
    assert record.float32.startswith(int8.KEEP_FLOAT32 + ":")
    assert record.timing.cpu == cpu_identity() and record.timing.int8_ms > 0 and record.timing.float32_ms > 0
    assert record.accuracy is None  # nothing measured its mAP here


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_a_second_load_reuses_the_cached_int8_file(quantized, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("quantized again")

    monkeypatch.setattr(int8, "quantize", fail)
    again = Detector.load(backend="onnxruntime-int8")
    assert again.backend_name == "onnxruntime-int8"
    image = quantized.preprocess([Image.fromarray(photo("coffee"))])
    for a, b in zip(quantized.backend(image), again.backend(image)):
        assert torch.equal(a, b)


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_other_weights_a_changed_card_or_recipe_have_another_key(quantized, tmp_path, monkeypatch):
    card = quantized.card
    path = int8.int8_cache_path(DEFAULT_WEIGHTS, card)
    assert int8.int8_cache_path(DEFAULT_WEIGHTS, replace(card, score_threshold=0.5)) != path
    other = tmp_path / DEFAULT_WEIGHTS.name
    other.write_bytes(DEFAULT_WEIGHTS.read_bytes() + b"\0")
    assert int8.int8_cache_path(other, card) != path
    monkeypatch.setattr(int8, "RECIPE_VERSION", int8.RECIPE_VERSION + "-next")
    assert int8.int8_cache_path(DEFAULT_WEIGHTS, card) != path


@pytest.fixture
def record(quantized):
    """The cached INT8 file's record, which a test may rewrite; put back afterwards."""
    path = int8.int8_cache_path(DEFAULT_WEIGHTS, quantized.card)
    saved = int8.record_path(path).read_bytes()
    yield path, int8.read_record(path)
    int8.record_path(path).write_bytes(saved)


def measured(float32_ms, int8_ms, drop, cpu=None):
    timing = int8.Timing(cpu or cpu_identity(), 2, float32_ms, int8_ms, 10)
    accuracy = int8.Accuracy("VOC2007 minival", 500, 0.559, 0.559 - drop, 0.555, 0.555 - drop, cpu or cpu_identity())
    return timing, accuracy


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
@pytest.mark.parametrize("backend", ["auto", None])
def test_auto_and_the_default_run_int8_only_where_it_was_measured_faster_here_and_accurate(record, backend):
    path, rec = record

    def chosen(timing, accuracy):
        int8.write_record(path, replace(rec, timing=timing, accuracy=accuracy))
        return Detector.load(device="cpu", backend=backend).backend_name

    assert chosen(*measured(30.0, 20.0, 0.002)) == "onnxruntime-int8"
    assert chosen(*measured(30.0, 33.0, 0.002)) == "onnxruntime"  # slower here
    assert chosen(*measured(30.0, 20.0, 0.008)) == "onnxruntime"  # more than 0.5 mAP lost
    assert chosen(measured(30.0, 20.0, 0.0)[0], None) == "onnxruntime"  # its mAP never measured
    assert chosen(*measured(30.0, 20.0, 0.0, cpu="Another CPU (avx512f avx512_vnni)")) == "onnxruntime"
    timing, accuracy = measured(30.0, 20.0, 0.0)  # timed here, its mAP measured elsewhere
    assert chosen(timing, replace(accuracy, cpu="Another CPU (avx512f avx512_vnni)")) == "onnxruntime"
    # An explicit choice runs it whatever the record says.
    int8.write_record(path, replace(rec, timing=measured(30.0, 33.0, 0.0)[0]))
    assert Detector.load(backend="onnxruntime-int8").backend_name == "onnxruntime-int8"


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_the_records_own_timing_decides_for_auto(quantized, record):
    """With the timing taken when the file was made (and a measured mAP within the bound), `auto` follows it:
    INT8 where it was the faster here, float32 where it was the slower."""
    path, rec = record
    int8.write_record(path, replace(rec, accuracy=measured(0, 0, 0.0)[1]))
    expected = "onnxruntime-int8" if rec.timing.int8_ms < rec.timing.float32_ms else "onnxruntime"
    assert Detector.load(device="cpu", backend="auto").backend_name == expected


@pytest.mark.parametrize("flags, seven_bits", [({"avx2", "avx512f"}, True), ({"avx2", "avx512_vnni"}, False),
                                               ({"avx_vnni"}, False), ({"amx_int8"}, False), (None, True)])
def test_weights_take_8_bits_only_where_the_cpu_sums_int8_products_in_32_bits(monkeypatch, flags, seven_bits):
    monkeypatch.setattr(ssd.backends, "_cpu_flags", lambda: flags)
    assert int8.reduce_range() is seven_bits
    monkeypatch.setattr(int8, "REDUCE_RANGE", not seven_bits)  # set by hand, it holds on any CPU
    assert int8.reduce_range() is (not seven_bits)


def test_the_weights_width_is_part_of_the_cache_key(monkeypatch):
    card = card_beside(DEFAULT_WEIGHTS)
    keys = set()
    for seven_bits in (True, False):
        monkeypatch.setattr(int8, "REDUCE_RANGE", seven_bits)
        keys.add(int8.int8_cache_path(DEFAULT_WEIGHTS, card))
    assert len(keys) == 2


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_the_file_holds_weights_of_the_width_this_cpu_takes(quantized):
    graph = onnx.load(str(int8.int8_cache_path(DEFAULT_WEIGHTS, quantized.card))).graph
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    made_by = {out: node for node in graph.node for out in node.output}
    largest = max(int(np.abs(weights[made_by[n.input[1]].input[0]].astype(np.int32)).max())
                  for n in graph.node if n.op_type == "Conv" and n.input[1] in made_by)
    if int8.reduce_range():
        assert largest <= 64
    else:
        assert largest > 64


def test_verdicts_say_why():
    assert int8.Int8Record("x", "x", [], "decode", *measured(30.0, 20.0, 0.002)).verdict()[0]
    good, why = int8.Int8Record("x", "x", [], "decode", *measured(30.0, 36.5, 0.0)).verdict()
    assert not good and "slower on this CPU: 36.5 ms against float32's 30.0 ms" in why
    good, why = int8.Int8Record("x", "x", [], "decode", *measured(30.0, 20.0, 0.012)).verdict()
    assert not good and "1.20 mAP below float32" in why


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_the_command_line_names_the_backend_it_ran(quantized, tmp_path, capsys):
    file = tmp_path / "chelsea.png"
    Image.fromarray(photo("chelsea")).save(file)
    assert main([str(file), "--backend", "onnxruntime-int8", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["backend"] == "onnxruntime-int8" and result["device"] == "cpu"
    assert [d["label"] for d in result["detections"]] == ["cat"]


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_the_export_command_reports_the_cached_int8_file_and_what_auto_does_with_it(quantized, capsys):
    assert export_main(["--cache", "--int8"]) == 0
    out = capsys.readouterr().out
    assert ".int8-" in out and "onnxruntime-int8 vs PyTorch" in out and "scikit-image" in out
    assert "auto does not run it: its mAP has not been measured" in out or "auto does not run it: slower" in out


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_an_int8_onnx_file_runs_as_int8_and_a_float32_one_is_not_taken_for_int8(quantized, float32):
    card = quantized.card
    loaded = Detector.load(int8.int8_cache_path(DEFAULT_WEIGHTS, card))
    assert loaded.backend_name == "onnxruntime-int8" and loaded.config == quantized.config
    with pytest.raises(ValueError, match="float32 export"):
        Detector.load(export_cache_path(DEFAULT_WEIGHTS, card), backend="onnxruntime-int8")


def test_calibration_images_from_a_voc_folder_a_photo_folder_or_scikit_image(tmp_path, monkeypatch):
    voc = tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{i:06d}.jpg")
    (voc / "ImageSets" / "Main" / "trainval_minus_minival.txt").write_text("000004\n000000\n000002\n000001\n")
    (voc / "ImageSets" / "Main" / "minival.txt").write_text("000003\n000005\n")
    c = calibration.calibration_images(32, voc, count=2)
    assert c.images.shape == (2, 32, 32, 3) and c.images.dtype == np.uint8
    assert c.names == ("000000.jpg", "000002.jpg")  # evenly through the sorted training ids, never minival's
    assert c.source.startswith("VOC2007 trainval_minus_minival: 2 of 4 images") and c.origin == str(voc.resolve())
    monkeypatch.setenv(calibration.CALIBRATION_ENV, str(voc / "JPEGImages"))  # a plain folder of photos
    c = calibration.calibration_images(32, count=3)
    assert c.names == ("000000.jpg", "000002.jpg", "000004.jpg") and "3 of its 6 images" in c.source
    monkeypatch.delenv(calibration.CALIBRATION_ENV)
    c = calibration.calibration_images(32)
    assert c.origin == "scikit-image" and len(c.images) == len(c.names) == 12 * len(calibration.SCIKIT_IMAGE_PHOTOS)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        calibration.calibration_images(32, tmp_path / "missing")


@pytest.mark.slow  # quantizes the shipped graph (about a minute, once for the module)
def test_the_first_convolution_box_decoding_and_softmax_stay_float32(quantized, cache):
    """KEEP_FLOAT32 ("stem"): every convolution but the first has int8 weights; the first computes in float32 on
    the normalized image, and its activation's output is quantized for the next one. Box decoding and softmax
    compute in float32 from the dequantized head outputs, so neither output lies on an 8-bit grid."""
    path = int8.int8_cache_path(DEFAULT_WEIGHTS, quantized.card)
    graph = onnx.load(str(path)).graph
    made_by = {out: node for node in graph.node for out in node.output}
    used_by = {i: node for node in graph.node for i in node.input}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    network = Detector.load(DEFAULT_WEIGHTS, device="cpu", backend="torch").model
    assert len(convs) == sum(isinstance(m, torch.nn.Conv2d) for m in network.modules())  # every one, BatchNorm folded
    assert all(made_by[n.input[1]].op_type == "DequantizeLinear" for n in convs[1:])
    first = convs[0]
    assert first.input[1] not in made_by and made_by[first.input[0]].op_type != "DequantizeLinear"
    activation = used_by[first.output[0]]
    assert activation.op_type == "Clip" and used_by[activation.output[0]].op_type == "QuantizeLinear"
    float_ops, todo, seen = [], ["boxes", "scores"], set()
    while todo:  # back from the outputs to the last dequantization
        node = made_by.get(todo.pop())
        if node is None or node.name in seen or node.op_type == "DequantizeLinear":
            continue
        seen.add(node.name)
        float_ops.append(node.op_type)
        todo += list(node.input)
    assert {"Softmax", "Exp", "Mul", "Add"} <= set(float_ops) and "QuantizeLinear" not in float_ops
    assert made_by["boxes"].op_type == "Concat" and made_by["scores"].op_type == "Softmax"
    # int8 weights: about a quarter of the float32 file's bytes.
    assert path.stat().st_size < 0.4 * export_cache_path(DEFAULT_WEIGHTS, quantized.card).stat().st_size
