"""Detector: any image a user might hand us gives detections in that image's (upright) pixels; weights round-trip
through the shipped format; missing weights say how to get them. Small random models (width 0.125)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import ssd
import ssd.detector
from ssd import Detector, export_weights
from ssd.image import normalise

CFG = ssd.SSD300_VOC.replace(width=0.125)


def small_model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return ssd.build_ssd(cfg)


@pytest.fixture(scope="module")
def detector():
    return Detector(small_model(), CFG, ssd.VOC_CLASSES, device="cpu")


def rgb_noise(w, h, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def exif_rotated_jpeg(path):
    # Stored 60 wide x 20 tall; EXIF orientation 6 says "rotate 90° clockwise to display": 20 x 60 upright.
    im = Image.fromarray(rgb_noise(60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path / "rotated.jpg", exif=exif)
    return path / "rotated.jpg"


def palette_png(path):
    im = Image.fromarray(rgb_noise(50, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.info["transparency"] = 0
    im.save(path / "palette.png", transparency=0)
    return path / "palette.png"


def sixteen_bit_png(path):
    a = np.linspace(0, 65535, 45 * 70).reshape(45, 70).astype(np.uint16)
    Image.fromarray(a).save(path / "deep.png")
    return path / "deep.png"


def cmyk_jpeg(path):
    Image.fromarray(rgb_noise(33, 77)).convert("CMYK").save(path / "cmyk.jpg")
    return path / "cmyk.jpg"


ODD_IMAGES = {
    # name: (make(tmp_path) -> what the user passes, upright (width, height))
    "grayscale": (lambda p: Image.fromarray(rgb_noise(64, 48)).convert("L"), (64, 48)),
    "grayscale array": (lambda p: rgb_noise(64, 48)[..., 0].copy(), (64, 48)),
    "rgba": (lambda p: Image.fromarray(np.dstack([rgb_noise(80, 60), np.full((60, 80), 100, np.uint8)])), (80, 60)),
    "rgba array": (lambda p: np.dstack([rgb_noise(80, 60), np.zeros((60, 80), np.uint8)]), (80, 60)),
    "palette file": (palette_png, (50, 40)),
    "cmyk": (lambda p: Image.fromarray(rgb_noise(33, 77)).convert("CMYK"), (33, 77)),
    "cmyk file": (cmyk_jpeg, (33, 77)),
    "16-bit file": (sixteen_bit_png, (70, 45)),
    "rotated exif file": (exif_rotated_jpeg, (20, 60)),
    "1x1": (lambda p: Image.new("RGB", (1, 1), (200, 10, 10)), (1, 1)),
    "very wide": (lambda p: Image.fromarray(rgb_noise(3000, 10)), (3000, 10)),
    "bilevel": (lambda p: Image.fromarray(rgb_noise(40, 30)).convert("1"), (40, 30)),
    "path as str": (lambda p: str(cmyk_jpeg(p)), (33, 77)),
}


@pytest.mark.parametrize("name", list(ODD_IMAGES))
def test_odd_images_give_boxes_inside_the_image(detector, tmp_path, name):
    make, (W, H) = ODD_IMAGES[name]
    raw = detector.predict(make(tmp_path))
    assert (raw.width, raw.height) == (W, H)
    dets = detector.postprocess(raw, score_threshold=0.01)
    assert dets, "a random model scores ~1/21 per class: there must be detections above 0.01"
    layout = ssd.prior_layout(CFG)
    for d in dets:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H, d
        assert 0.01 < d.score <= 1
        assert d.label == ssd.VOC_CLASSES[d.class_id - 1]
        assert d.layer == layout.describe(d.prior_index)["layer"]
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_boxes_are_decoded_into_input_pixels(detector):
    W, H = 500, 375
    image = Image.fromarray(rgb_noise(W, H, seed=3))
    dets = detector.detect(image, score_threshold=0.01, top_k=20)
    assert len(dets) == 20
    # The network's own outputs, from the same resized input: the graph must decode them with eq. (2).
    with torch.no_grad():
        x = torch.from_numpy(detector.preprocess([image])).permute(0, 3, 1, 2)
        loc, conf = detector.model(normalise(x, CFG))
    priors = ssd.default_boxes(CFG)
    for d in dets:
        p = d.prior_index
        dx, dy, dw, dh = loc[0, p].tolist()
        pcx, pcy, pw, ph = priors[p].tolist()
        cx, cy = pcx + dx * 0.1 * pw, pcy + dy * 0.1 * ph
        w, h = pw * math.exp(dw * 0.2), ph * math.exp(dh * 0.2)
        want = [min(max(v, 0.0), 1.0) * s for v, s in
                zip((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), (W, H, W, H))]
        assert d.box == pytest.approx(want, abs=1e-3)
        assert d.score == pytest.approx(float(conf[0, p].softmax(0)[d.class_id]), abs=1e-6)


def test_array_and_pil_inputs_agree(detector):
    a = rgb_noise(120, 90, seed=4)
    from_array = detector.detect(a, score_threshold=0.02)
    from_pil = detector.detect(Image.fromarray(a), score_threshold=0.02)
    assert [(d.prior_index, d.class_id) for d in from_array] == [(d.prior_index, d.class_id) for d in from_pil]


def test_unreadable_inputs_name_the_problem(detector, tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not_an_image.jpg"):
        detector.detect(bad)
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((10, 10, 3), np.float64))


def randomise_batch_norm(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_export_then_load_gives_the_same_detections(tmp_path):
    cfg = CFG.replace(batch_norm=True)
    model = small_model(cfg, seed=1)
    randomise_batch_norm(model, 2)
    with torch.no_grad():  # make the weights exactly representable in fp16, so the round trip is lossless
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    path = export_weights(model, cfg, ssd.VOC_CLASSES, tmp_path / "w.safetensors", note="test")
    loaded = Detector.load(path, device="cpu", backend="torch")
    assert loaded.config == cfg and loaded.class_names == ssd.VOC_CLASSES and loaded.card.note == "test"
    reference = Detector(model, cfg, ssd.VOC_CLASSES, device="cpu")
    image = Image.fromarray(rgb_noise(300, 200, seed=5))
    want, got = reference.detect(image, score_threshold=0.01), loaded.detect(image, score_threshold=0.01)
    assert len(got) == len(want) > 0
    assert [(d.prior_index, d.class_id) for d in got] == [(d.prior_index, d.class_id) for d in want]
    for g, w in zip(got, want):
        assert g.box == pytest.approx(w.box, abs=1e-3)
        assert g.score == pytest.approx(w.score, abs=1e-5)


def test_fp16_export_stays_within_half_precision(tmp_path):
    model = small_model(CFG, seed=3)
    path = export_weights(model, CFG, ssd.VOC_CLASSES, tmp_path / "w.safetensors")
    reference = Detector(model, CFG, ssd.VOC_CLASSES, device="cpu")
    loaded = Detector.load(path, device="cpu", backend="torch")
    image = rgb_noise(200, 300, seed=6)
    a, b = reference.predict(image), loaded.predict(image)
    assert (a.boxes - b.boxes).abs().max() < 5e-3
    assert (a.scores - b.scores).abs().max() < 5e-3


def test_missing_default_weights_say_how_to_train_them(tmp_path, monkeypatch):
    missing = tmp_path / "ssd300_demo.safetensors"
    monkeypatch.setattr(ssd.detector, "DEFAULT_WEIGHTS", missing)
    with pytest.raises(FileNotFoundError) as err:
        Detector.load()
    message = str(err.value)
    assert str(missing) in message and "python -m train" in message


def test_missing_weights_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="elsewhere.safetensors"):
        Detector.load(tmp_path / "elsewhere.safetensors")
    path = export_weights(small_model(), CFG, ssd.VOC_CLASSES, tmp_path / "w.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"w\.json"):
        Detector.load(path)


def test_class_names_must_match_the_config():
    with pytest.raises(ValueError, match="20-class"):
        Detector(small_model(), CFG, ("cat", "dog"), device="cpu")


def test_the_model_cards_score_threshold_is_the_default(tmp_path):
    """Training writes a recommended score threshold into the card; detect() uses it unless told otherwise,
    and a card without one falls back to 0.5."""
    model = small_model(CFG, seed=4)
    image = rgb_noise(240, 180, seed=7)
    recommended = Detector.load(export_weights(model, CFG, ssd.VOC_CLASSES, tmp_path / "a.safetensors",
                                               score_threshold=0.06), device="cpu")
    plain = Detector.load(export_weights(model, CFG, ssd.VOC_CLASSES, tmp_path / "b.safetensors"), device="cpu",
                           backend="torch")
    assert (recommended.score_threshold, plain.score_threshold) == (0.06, 0.5)
    everything = 8732  # no top-k cut, so that the score threshold alone decides
    low = recommended.detect(image, top_k=everything)
    assert min(d.score for d in low) >= 0.06 and any(d.score < 0.5 for d in low)
    assert low == recommended.detect(image, score_threshold=0.06, top_k=everything)
    high = plain.detect(image, top_k=everything)
    assert min(d.score for d in high) >= 0.5 and len(high) < len(low)
    assert high == plain.detect(image, score_threshold=0.5, top_k=everything)


def test_detect_batch_has_the_defaults_of_detect(detector):
    # One owner of the defaults: the card's score threshold, the config's NMS IoU and top-k, for one image or many.
    # (Evaluation asks for the paper's 0.01 itself: ssd.evaluation.collect_detections.)
    images = [Image.fromarray(rgb_noise(120, 90, seed=s)) for s in (4, 5)]
    for image, dets in zip(images, detector.detect_batch(images)):
        want = detector.detect(image)
        assert [(d.class_id, d.prior_index) for d in dets] == [(d.class_id, d.prior_index) for d in want]
    batch = detector.detect_batch(images, score_threshold=0.01)
    for image, dets in zip(images, batch):
        want = detector.detect(image, score_threshold=0.01, nms_threshold=0.45, top_k=200)
        assert len(dets) == len(want) == 200
        assert [(d.class_id, d.prior_index) for d in dets] == [(d.class_id, d.prior_index) for d in want]
        assert [d.score for d in dets] == pytest.approx([d.score for d in want], abs=1e-5)


def test_none_is_the_detectors_setting_in_detect_detect_batch_and_postprocess():
    """One owner of the defaults, resolved once at load (`Detector.settings`: the card's score threshold, the
    config's NMS IoU and top-k): a threshold left as None means that setting in every entry point (before,
    None in ssd.postprocess meant the config's 0.01)."""
    detector = Detector(small_model(CFG, seed=4), CFG, ssd.VOC_CLASSES, device="cpu", card={"score_threshold": 0.06})
    assert detector.settings == ssd.InferenceSettings(0.06, CFG.nms_threshold, CFG.top_k)
    assert detector.score_threshold == 0.06
    with pytest.raises(AttributeError):
        detector.score_threshold = 0.2  # read-only: the settings are the one value
    image = Image.fromarray(rgb_noise(240, 180, seed=7))
    s = detector.settings
    explicit = detector.detect(image, s.score_threshold, s.nms_threshold, s.top_k)
    assert explicit and min(d.score for d in explicit) >= 0.06
    raw = detector.predict(image)
    assert detector.detect(image) == detector.detect(image, None, None, None) == explicit
    assert detector.postprocess(raw) == detector.postprocess(raw, None, None, None) == explicit
    (batched,) = detector.detect_batch([image])
    assert [(d.class_id, d.prior_index) for d in batched] == [(d.class_id, d.prior_index) for d in explicit]
    # One override leaves the others at the detector's settings.
    assert detector.postprocess(raw, top_k=3) == explicit[:3]
    assert detector.postprocess(raw, score_threshold=0.01) == detector.postprocess(raw, 0.01, CFG.nms_threshold,
                                                                                   CFG.top_k)


def test_class_filter_and_candidate_count(detector):
    raw = detector.predict(Image.fromarray(rgb_noise(200, 150, seed=6)))
    everything = detector.postprocess(raw, score_threshold=0.01, top_k=10_000)
    cats = detector.postprocess(raw, score_threshold=0.01, top_k=5, classes=["cat", "dog"])
    assert [d.label for d in cats] and {d.label for d in cats} <= {"cat", "dog"}
    assert [(d.label, d.prior_index) for d in cats] == [(d.label, d.prior_index) for d in everything
                                                        if d.label in ("cat", "dog")][:5]
    probs = raw.scores[0]
    want = sum(min(400, int((probs[:, ssd.VOC_CLASSES.index(c) + 1] > 0.01).sum())) for c in ("cat", "dog"))
    assert cats.candidates == want
    with pytest.raises(ValueError, match="unknown class"):
        detector.postprocess(raw, classes=["unicorn"])


def test_a_model_card_that_does_not_fit_its_weights_fails_at_load(tmp_path):
    path = export_weights(small_model(), CFG, ssd.VOC_CLASSES, tmp_path / "w.safetensors")
    card = ssd.detector.card_path(path)
    meta = json.loads(card.read_text())
    meta["config"]["image_size"] = 512  # the SSD300 feature maps stay: the network now predicts 24564 boxes
    card.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"w\.json: the model card does not fit its network: .*512x512 .*"
                                         r"feature maps \(64, 32, 16, 8, 6, 4\)"):
        Detector.load(path, device="cpu")
