"""int8 weights files (ssd.weight_storage, `python -m train.compact`): half the size of float16, read back as float32
by every reader (Detector.load, train.average, --init-weights), and the shipped detector's detections kept."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import ssd
from ssd.weight_storage import FLOAT16_ROW_MAX, SCALE_SUFFIX, read_tensors, stored, tensor_shapes, unpacked
from ssd.weights_files import read_weights

ROOT = Path(__file__).resolve().parents[1]
CFG = ssd.SSD300_VOC.replace(width=0.125)


def _state():
    torch.manual_seed(0)
    return ssd.build_ssd(CFG).state_dict()


def test_int8_rounds_each_output_channel_to_within_half_its_step():
    state = _state()
    packed = stored(state, torch.int8)
    back = unpacked(packed)
    assert back.keys() == state.keys()
    for k, v in state.items():
        if not v.is_floating_point():
            assert torch.equal(back[k], v), k  # BatchNorm's batch counters stay integers
        elif v.dim() >= 2 and v[0].numel() > FLOAT16_ROW_MAX:
            assert packed[k].dtype == torch.int8 and packed[k].shape == v.shape
            scale = packed[k + SCALE_SUFFIX]
            assert scale.shape == (v.shape[0],)
            step = scale.reshape(-1, *([1] * (v.dim() - 1)))
            assert (back[k] - v).abs().le(step / 2 + 1e-7).all(), k
            assert back[k].abs().amax(dim=tuple(range(1, v.dim()))).allclose(v.abs().amax(dim=tuple(range(1, v.dim()))))
        else:
            assert packed[k].dtype == torch.float16 and k + SCALE_SUFFIX not in packed
            assert back[k].dtype == torch.float32


def test_depthwise_and_other_narrow_weights_stay_float16():
    """A weight with few values per output channel (a depthwise convolution's 9) is kept in float16: its outputs
    sum too few rounded products for the rounding errors to average out."""
    wide, depthwise, narrow = torch.randn(8, 64, 1, 1), torch.randn(8, 1, 3, 3), torch.randn(8, FLOAT16_ROW_MAX, 1, 1)
    packed = stored({"wide.weight": wide, "dw.weight": depthwise, "narrow.weight": narrow}, torch.int8)
    assert packed["wide.weight"].dtype == torch.int8 and "wide.weight" + SCALE_SUFFIX in packed
    for k, v in (("dw.weight", depthwise), ("narrow.weight", narrow)):
        assert packed[k].dtype == torch.float16 and k + SCALE_SUFFIX not in packed
        assert torch.equal(unpacked(packed)[k], v.half().float())


def test_the_shipped_file_stores_no_depthwise_convolution_in_int8():
    from safetensors import safe_open

    with safe_open(str(ssd.detector.DEFAULT_WEIGHTS), "pt") as f:
        slices = {k: f.get_slice(k) for k in f.keys()}
        depthwise = [k for k, t in slices.items() if len(s := t.get_shape()) == 4 and s[1] == 1 and s[2] > 1]
        assert depthwise and all(slices[k].get_dtype() != "I8" for k in depthwise)


def test_an_all_zero_channel_stays_zero():
    w = torch.randn(4, 8, 3, 3)
    w[2] = 0
    back = unpacked(stored({"conv.weight": w}, torch.int8))["conv.weight"]
    assert back.isfinite().all() and torch.equal(back[2], torch.zeros(8, 3, 3))


def test_an_int8_file_is_about_half_the_size_and_loads_everywhere(tmp_path):
    torch.manual_seed(0)
    model = ssd.build_ssd(CFG).eval()
    half = ssd.export_weights(model, CFG, ssd.VOC_CLASSES, tmp_path / "half.safetensors")
    small = ssd.export_weights(model, CFG, ssd.VOC_CLASSES, tmp_path / "small.safetensors", dtype=torch.int8)
    assert small.stat().st_size < 0.6 * half.stat().st_size
    tensors, card = read_weights(small)
    assert tensors.keys() == model.state_dict().keys()
    assert all(v.dtype == torch.float32 for v in tensors.values() if v.is_floating_point())
    assert tensor_shapes(small) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert read_tensors(small).keys() == tensors.keys()
    x = torch.rand(1, 3, CFG.image_size, CFG.image_size)
    ref_loc, ref_conf = model(x)
    loaded = ssd.Detector.load(small, device="cpu", backend="torch")
    loc, conf = loaded.model(x)
    assert (loc - ref_loc).abs().max() < 0.05 * ref_loc.abs().max()
    assert (conf - ref_conf).abs().max() < 0.05 * ref_conf.abs().max()


def test_init_weights_read_an_int8_file(tmp_path):
    from train.init_weights import load_init_weights

    torch.manual_seed(0)
    model = ssd.build_ssd(CFG)
    small = ssd.export_weights(model, CFG, ssd.VOC_CLASSES, tmp_path / "small.safetensors", dtype=torch.int8)
    fresh = ssd.build_ssd(CFG)
    load_init_weights(fresh, CFG, small, verbose=False)
    want = read_tensors(small)
    assert all(torch.equal(v, want[k].to(v.dtype)) for k, v in fresh.state_dict().items())


def test_compact_keeps_the_shipped_detectors_detections(tmp_path):
    """`python -m train.compact` on the shipped weights, as a user runs it: the int8 copy finds the same objects in
    a real photograph (scikit-image's), with the card and training log beside it."""
    from skimage import data

    out = tmp_path / "shipped_int8.safetensors"
    run = subprocess.run([sys.executable, "-m", "train.compact", str(ssd.detector.DEFAULT_WEIGHTS), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    shipped = ssd.Detector.load(device="cpu", backend="torch")
    float16_bytes = sum(2 * v.numel() for v in shipped.model.state_dict().values())
    assert out.stat().st_size < 0.6 * float16_bytes
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["storage"]["source"] == ssd.detector.DEFAULT_WEIGHTS.name
    assert card["storage"]["dtype"].startswith("int8") and "train.compact" in card["storage"]["command"]
    # Not measured again: no val measurement of its own, the source's threshold said to be the source's.
    assert "val" not in card and card["score_threshold"] == shipped.card.score_threshold
    assert card["score_threshold_basis"].startswith(f"{ssd.detector.DEFAULT_WEIGHTS.name}'s (before int8 storage)")
    assert card["command"] == shipped.card.command  # the training's, which the Model tab reads
    assert out.with_name(out.stem + ".log.csv").is_file()

    from ui.model_tab import card_markdown

    shown = card_markdown(ssd.Detector.load(out, device="cpu", backend="torch").card, out)
    assert "**Storage:** int8" in shown and "**Measured:**" not in shown

    photo = data.astronaut()
    ref = shipped.detect(photo)
    got = ssd.Detector.load(out, device="cpu", backend="torch").detect(photo)
    assert len(ref) > 0 and [d.label for d in got] == [d.label for d in ref]
    ious = box_iou(torch.tensor([d.box for d in got]), torch.tensor([d.box for d in ref])).diagonal()
    assert ious.min() > 0.95
    assert np.allclose([d.score for d in got], [d.score for d in ref], atol=0.05)  # minival: 55.96 against 55.89


def test_compact_refuses_to_overwrite_its_source(tmp_path):
    weights = ssd.export_weights(ssd.build_ssd(CFG), CFG, ssd.VOC_CLASSES, tmp_path / "w.safetensors")
    before = weights.read_bytes()
    run = subprocess.run([sys.executable, "-m", "train.compact", str(weights), "--out", str(weights)], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode != 0 and "--out is the weights file itself" in run.stderr
    assert weights.read_bytes() == before


def test_compact_measures_the_file_it_writes_on_val_data(tmp_path):
    from tests.shapes import SHAPE_CLASSES, make_shapes_voc

    voc = make_shapes_voc(tmp_path / "data", n_train=2, n_val=4)
    weights = ssd.export_weights(ssd.build_ssd(CFG.replace(num_classes=len(SHAPE_CLASSES))),
                                 CFG.replace(num_classes=len(SHAPE_CLASSES)), SHAPE_CLASSES,
                                 tmp_path / "w.safetensors", score_threshold=0.2,
                                 score_threshold_basis="chosen by hand")
    out = tmp_path / "w8.safetensors"
    run = subprocess.run([sys.executable, "-m", "train.compact", str(weights), "--out", str(out), "--val-data",
                          str(voc), "--val-image-set", "val"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["val"]["images"] == 4 and "score_threshold_basis" not in card


def test_a_damaged_int8_file_is_refused_not_loaded_as_raw_integers():
    packed = stored({"conv.weight": torch.randn(4, 8, 3, 3), "conv.bias": torch.randn(4)}, torch.int8)
    without_scale = {k: v for k, v in packed.items() if not k.endswith(SCALE_SUFFIX)}
    with pytest.raises(ValueError, match="without its scale"):
        unpacked(without_scale)
    with pytest.raises(ValueError, match="without its int8 tensor"):
        unpacked({k: v for k, v in packed.items() if k != "conv.weight"})


def test_the_card_says_how_the_file_stores_its_tensors(tmp_path):
    """export_weights writes `storage` for what it wrote, float16 none, and never another file's: averaging
    int8 files, say, writes float16."""
    from ssd.card import ModelCard

    model = ssd.build_ssd(CFG)
    said = {}
    for dtype in (torch.int8, torch.float32, torch.float16):
        path = ssd.export_weights(model, CFG, ssd.VOC_CLASSES, tmp_path / f"{dtype}.safetensors", dtype=dtype,
                                  card=ModelCard(config=CFG.to_dict(), classes=list(ssd.VOC_CLASSES),
                                                 storage={"dtype": "int8 ...", "source": "a.safetensors"}))
        said[dtype] = json.loads(path.with_suffix(".json").read_text()).get("storage")
    assert said[torch.int8]["dtype"].startswith("int8") and said[torch.int8]["source"] == "a.safetensors"
    assert said[torch.float32]["dtype"] == "float32"
    assert said[torch.float16] is None


def test_empty_weights_store_and_come_back():
    back = unpacked(stored({"empty.weight": torch.zeros(0, 3, 1, 1)}, torch.int8))
    assert back["empty.weight"].shape == (0, 3, 1, 1)
