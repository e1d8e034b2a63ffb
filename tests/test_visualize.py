"""The pictures of `visualize/`: boxes land where they should (and nowhere else), default boxes have the paper's
sizes, matching pictures agree with an independent IoU computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert, box_iou

import ssd
from visualize import draw, examples
from visualize.matching import (
    GroundTruth,
    draw_matches,
    draw_offsets,
    hard_negatives_from_scores,
    iou_heatmaps,
    iou_with_priors,
    match_ground_truth,
    offsets_example,
    offsets_markdown,
    positive_choices,
    positives_per_layer,
)
from visualize.priors import cell_at, cell_default_boxes, draw_cell_default_boxes, layer_summary, summary_formula


def changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    """(H, W) bool: pixels that differ."""
    a, b = np.asarray(before.convert("RGB"), dtype=np.int16), np.asarray(after.convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape
    return np.abs(a - b).sum(axis=2) > 0


def extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) inclusive of the True pixels."""
    ys, xs = np.nonzero(mask)
    assert len(xs), "nothing was drawn"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def det(box, label="person", class_id=15, score=0.9) -> ssd.Detection:
    return ssd.Detection(label, score, tuple(float(v) for v in box), class_id, 0, "conv4_3")


# ------------------------------------------------------------------------------------------ draw_detections
def test_draw_detections_draws_the_box_outline_and_nothing_far_from_it():
    image = Image.new("RGB", (320, 240), (90, 90, 90))
    box = (60, 80, 220, 200)
    out = draw.draw_detections(image, [det(box)])
    assert out.size == image.size and image.getpixel((0, 0)) == (90, 90, 90), "the input must not be modified"
    diff = changed(image, out)
    x1, y1, x2, y2 = box
    # All four edges are drawn...
    for x, y in [((x1 + x2) // 2, y1), ((x1 + x2) // 2, y2), (x1, (y1 + y2) // 2), (x2, (y1 + y2) // 2)]:
        assert diff[y, x], f"edge pixel ({x}, {y}) unchanged"
    # ...the inside of the box stays the photo...
    assert not diff[y1 + 10:y2 - 10, x1 + 10:x2 - 10].any()
    # ...and nothing is drawn away from the box, except the label tag sitting on its top edge.
    allowed = np.zeros_like(diff)
    allowed[y1 - 30:y2 + 4, x1 - 4:x2 + 4] = True
    assert not (diff & ~allowed).any()
    # The label tag exists: pixels just above the top-left corner changed.
    assert diff[y1 - 8, x1 + 2:x1 + 30].any()


def test_draw_detections_colours_by_class_and_scales_boxes():
    image = Image.new("RGB", (200, 200), (0, 0, 0))
    a, b, c = det((20, 40, 80, 100)), det((120, 40, 180, 100)), det((20, 130, 80, 190), "cat", 8)
    out = np.asarray(draw.draw_detections(image, [a, b, c], show_scores=False))
    # Left edges, away from the label tags: same class -> same colour, other class -> another colour.
    assert tuple(out[80, 20]) == tuple(out[80, 120]) == draw.class_colour(15)
    assert tuple(out[170, 20]) == draw.class_colour(8) != draw.class_colour(15)
    # Drawing on a half-size copy with scale=0.5 puts the box at half the coordinates.
    small = Image.new("RGB", (100, 100), (0, 0, 0))
    diff = changed(small, draw.draw_detections(small, [det((40, 60, 80, 90))], scale=0.5))
    assert diff[38, 20] and diff[45, 40] and not diff[60:, :].any()


def test_draw_detections_accepts_class_names_and_non_rgb_images():
    image = Image.new("L", (120, 90), 128)
    out = draw.draw_detections(image, [det((10, 30, 100, 80), "x", 2)], class_names=["first", "second"])
    assert out.mode == "RGB" and changed(image, out)[55, 10]
    assert draw.draw_detections(image, []).getpixel((5, 5)) == (128, 128, 128)


# ------------------------------------------------------------------------------------------ default boxes
# The paper's SSD300 scales (pixels of the 300×300 input): s_k and s_{k+1} per source layer.
PAPER_SSD300 = {0: (30, 60, 38), 1: (60, 111, 19), 2: (111, 162, 10), 3: (162, 213, 5)}


def drawn_box(cfg, layer, row, col, shape, canvas):
    black = Image.new("RGB", (50, 50), (0, 0, 0))
    out = draw_cell_default_boxes(black, cfg, layer, row, col, [shape], show_grid=False, highlight_cell=False,
                                     legend=False, canvas_size=canvas, dim=0)
    assert out.size == (canvas, canvas)
    x1, y1, x2, y2 = extent(np.asarray(out).any(axis=2))
    return x2 - x1 + 1, y2 - y1 + 1, (x1 + x2 + 1) / 2, (y1 + y2 + 1) / 2


@pytest.mark.parametrize("layer", sorted(PAPER_SSD300))
def test_default_box_overlay_has_the_papers_sizes(layer):
    s_k, s_next, f = PAPER_SSD300[layer]
    row, col = f // 2, f // 2  # a central cell: even the largest boxes stay inside the canvas
    cx, cy = (col + 0.5) / f * 300, (row + 0.5) / f * 300
    expected = {"1": (s_k, s_k), "1'": (math.sqrt(s_k * s_next),) * 2,
                "2": (s_k * math.sqrt(2), s_k / math.sqrt(2)), "1/2": (s_k / math.sqrt(2), s_k * math.sqrt(2))}
    if layer in (1, 2, 3):
        expected |= {"3": (s_k * math.sqrt(3), s_k / math.sqrt(3)), "1/3": (s_k / math.sqrt(3), s_k * math.sqrt(3))}
    for shape, (w, h) in expected.items():
        dw, dh, dcx, dcy = drawn_box(ssd.SSD300_VOC, layer, row, col, shape, canvas=300)
        assert abs(dw - w) <= 1.5 and abs(dh - h) <= 1.5, f"layer {layer} shape {shape}: {dw}x{dh}, paper {w}x{h}"
        assert abs(dcx - cx) <= 1.0 and abs(dcy - cy) <= 1.0


def test_default_box_overlay_scales_with_the_canvas_and_ssd512():
    # 2x canvas: the 30 px conv4_3 box is 60 canvas pixels.
    dw, dh, _, _ = drawn_box(ssd.SSD300_VOC, 0, 10, 10, "1", canvas=600)
    assert abs(dw - 60) <= 2 and abs(dh - 60) <= 2
    # SSD512's conv4_3 box is 0.07 * 512 = 35.84 px.
    dw, dh, _, _ = drawn_box(ssd.SSD512_VOC, 0, 32, 32, "1", canvas=512)
    assert abs(dw - 35.84) <= 1.5 and abs(dh - 35.84) <= 1.5


def test_default_box_toggles_grid_and_shapes():
    photo = Image.new("RGB", (400, 300), (60, 60, 60))
    base = draw_cell_default_boxes(photo, ssd.SSD300_VOC, 4, 1, 1, [], show_grid=False, highlight_cell=False,
                                      legend=False, canvas_size=300)
    with_grid = draw_cell_default_boxes(photo, ssd.SSD300_VOC, 4, 1, 1, [], show_grid=True,
                                           highlight_cell=False, legend=False, canvas_size=300)
    # conv10_2 is 3×3: cell centres at 50, 150, 250.
    grid = changed(base, with_grid)
    for y in (50, 150, 250):
        for x in (50, 150, 250):
            assert grid[y, x]
    assert not grid[100, 100]
    # Turning on one shape draws just that box; all four shapes draw more.
    one = changed(base, draw_cell_default_boxes(photo, ssd.SSD300_VOC, 4, 1, 1, ["1"], show_grid=False,
                                                   highlight_cell=False, legend=False, canvas_size=300))
    four = changed(base, draw_cell_default_boxes(photo, ssd.SSD300_VOC, 4, 1, 1, None, show_grid=False,
                                                    highlight_cell=False, legend=False, canvas_size=300))
    assert one.sum() < four.sum() and not (one & ~four).any()
    with_legend = draw_cell_default_boxes(photo, ssd.SSD300_VOC, 4, 1, 1, canvas_size=300)
    assert with_legend.width == 300 and with_legend.height > 300


def test_layer_summary_counts_8732_and_24564():
    _, rows = layer_summary(ssd.SSD300_VOC)
    assert [r[-1] for r in rows] == [5776, 2166, 600, 150, 36, 4, 8732]
    assert [r[2] for r in rows[:-1]] == [4, 6, 6, 6, 4, 4]
    assert summary_formula(ssd.SSD300_VOC) == "5776 + 2166 + 600 + 150 + 36 + 4 = 8732"
    _, rows = layer_summary(ssd.SSD512_VOC)
    assert [r[1] for r in rows[:-1]] == ["64×64", "32×32", "16×16", "8×8", "4×4", "2×2", "1×1"]
    assert rows[-1][-1] == 24564


def test_cell_at_inverts_cell_centres():
    cfg = ssd.SSD300_VOC
    for layer, f in enumerate(cfg.feature_maps):
        for row, col in [(0, 0), (f - 1, f - 1), (f // 2, f // 3)]:
            x, y = (col + 0.5) / f * 600, (row + 0.5) / f * 600
            assert cell_at(cfg, layer, x, y, 600, 600) == (row, col)
    assert cell_at(cfg, 0, 10_000, -5, 600, 600) == (0, 37)


def test_cell_default_boxes_lists_the_cell():
    boxes = cell_default_boxes(ssd.SSD300_VOC, 1, 3, 4)
    assert [b["shape"] for b in boxes] == ["1", "1'", "2", "1/2", "3", "1/3"]
    assert boxes[0]["w_px"] == pytest.approx(60, abs=1e-3)
    assert boxes[1]["w_px"] == pytest.approx(math.sqrt(60 * 111), abs=1e-3)
    assert boxes[0]["index"] == 5776 + (3 * 19 + 4) * 6


# ------------------------------------------------------------------------------------------ matching
CFG = ssd.SSD300_VOC


def gt_of(boxes, labels=None, size=(300, 300)):
    labels = labels or ["person"] * len(boxes)
    return GroundTruth(list(labels), [tuple(b) for b in boxes], *size)


def test_matching_picture_and_counts_agree_with_torchvision_iou():
    gt = gt_of([(40, 60, 160, 250), (200, 30, 260, 90)], ["person", "dog"], size=(400, 300))
    m = match_ground_truth(CFG, gt, ssd.VOC_CLASSES, 0.5)
    # Independent: IoU of every default box with each GT box.
    priors = box_convert(ssd.default_boxes(CFG), "cxcywh", "xyxy")
    iou = box_iou(gt.normalised(), priors)  # (2, N)
    expected = (iou.max(dim=0).values >= 0.5)
    expected[iou.argmax(dim=1)] = True
    assert torch.equal(m.positives[0], expected)
    headers, rows = positives_per_layer(CFG, m)
    layer = ssd.prior_layout(CFG).layer
    assert [r[3] for r in rows[:-1]] == [int((expected & (layer == k)).sum()) for k in range(6)]
    assert rows[-1][3] == int(expected.sum()) and rows[-1][4] == 2
    # The picture: GT edges drawn in white, nothing drawn far outside the positives and GT boxes.
    photo = Image.new("RGB", (400, 300), (70, 70, 70))
    out = draw_matches(photo, CFG, m, gt)
    assert out.width == 400 and out.height > 300  # legend strip below
    diff = changed(photo, out.crop((0, 0, 400, 300)))
    assert tuple(out.getpixel((100, 250))) == (255, 255, 255)
    union = torch.cat([priors[expected] * torch.tensor([400, 300, 400, 300]), torch.tensor(gt.boxes)])
    x1, y1 = union[:, :2].min(dim=0).values.tolist()
    x2, y2 = union[:, 2:].max(dim=0).values.tolist()
    allowed = np.zeros_like(diff)
    allowed[max(0, int(y1) - 30):int(y2) + 5, max(0, int(x1) - 5):int(x2) + 5] = True
    assert not (diff & ~allowed).any()


def test_iou_heatmap_is_a_picture_with_one_panel_per_feature_map():
    box = torch.tensor([0.2, 0.3, 0.6, 0.9])
    img = iou_heatmaps(CFG, box)
    assert img.mode == "RGB" and img.width > 600
    # The threshold left out is the config's match threshold, not a 0.5 of its own.
    other = CFG.replace(match_threshold=0.3)
    assert iou_heatmaps(other, box).tobytes() == iou_heatmaps(other, box, 0.3).tobytes() != img.tobytes()
    # The heat map's numbers: the best default box has the largest torchvision IoU.
    iou = iou_with_priors(CFG, box)
    ref = box_iou(box[None], box_convert(ssd.default_boxes(CFG), "cxcywh", "xyxy"))[0]
    assert torch.allclose(iou, ref)


def test_hard_negatives_are_the_highest_background_loss_three_per_positive():
    gt = gt_of([(100, 100, 190, 200)])
    m = match_ground_truth(CFG, gt, ssd.VOC_CLASSES)
    P = int(m.positives.sum())
    N = len(ssd.default_boxes(CFG))
    conf = torch.zeros(1, N, 21)
    # Background logit decreasing with index: the highest background loss sits at the largest indices.
    conf[0, :, 0] = torch.linspace(5, -5, N)
    neg = hard_negatives_from_scores(CFG, conf.softmax(-1)[..., 0], m)
    assert int(neg.sum()) == 3 * P and not (neg & m.positives[0]).any()
    negatives_by_loss = [i for i in range(N - 1, -1, -1) if not bool(m.positives[0, i])][: 3 * P]
    assert sorted(neg.nonzero().flatten().tolist()) == sorted(negatives_by_loss)
    photo = Image.new("RGB", (300, 300), (0, 0, 0))
    out = draw_matches(photo, CFG, m, gt, negatives=neg, show_positives=False)
    assert changed(photo, out.crop((0, 0, 300, 300))).any()


def test_hard_negatives_from_a_real_forward_pass():
    torch.manual_seed(0)
    cfg = CFG.replace(batch_norm=True, width=0.125)
    detector = ssd.Detector(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, device="cpu")
    gt = gt_of([(30, 40, 200, 280)])
    m = match_ground_truth(cfg, gt, ssd.VOC_CLASSES)
    raw = detector.predict(Image.new("RGB", (300, 300), (120, 80, 40)))
    neg = hard_negatives_from_scores(cfg, raw.scores[..., 0], m)
    assert neg.shape == (cfg.num_default_boxes,)
    assert int(neg.sum()) == 3 * int(m.positives.sum())


def test_encoded_offsets_match_eq2_and_decode_back():
    gt = gt_of([(50, 80, 170, 260)])
    m = match_ground_truth(CFG, gt, ssd.VOC_CLASSES)
    index = positive_choices(CFG, m)[0][1]
    e = offsets_example(CFG, m, index)
    dcx, dcy, dw, dh = e["default_box_cxcywh"]
    gcx, gcy, gw, gh = (50 + 170) / 600, (80 + 260) / 600, 120 / 300, 180 / 300
    hand = [(gcx - dcx) / (0.1 * dw), (gcy - dcy) / (0.1 * dh), math.log(gw / dw) / 0.2, math.log(gh / dh) / 0.2]
    assert e["offsets"] == pytest.approx(hand, abs=1e-4)
    assert e["decoded_xyxy"] == pytest.approx([50 / 300, 80 / 300, 170 / 300, 260 / 300], abs=1e-5)
    assert "0.1" in offsets_markdown(CFG, m, index) and "0.2" in offsets_markdown(CFG, m, index)
    photo = Image.new("RGB", (300, 300), (0, 0, 0))
    assert changed(photo, draw_offsets(photo, CFG, m, gt, index).crop((0, 0, 300, 300)))[80, 110]
    with pytest.raises(ValueError, match="not a positive"):
        offsets_example(CFG, m, int((~m.positives[0]).nonzero()[0]))


def test_ground_truth_rejects_unknown_classes_by_name():
    with pytest.raises(ValueError, match="unknown class 'cup'"):
        gt_of([(0, 0, 10, 10)], ["cup"]).class_ids(ssd.VOC_CLASSES)


# ------------------------------------------------------------------------------------------ examples
@pytest.mark.parametrize("name", examples.example_names())
def test_example_photos_and_annotations(name):
    image = examples.example_image(name)
    assert image.mode == "RGB" and min(image.size) >= 200
    objects = examples.example_annotations(name)
    assert objects
    for label, (x1, y1, x2, y2) in objects:
        assert label in ssd.VOC_CLASSES
        assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height


def test_offsets_text_never_shows_minus_zero():
    # A ground truth exactly on a default box: every offset is 0 up to float rounding, which for this corner box
    # of conv4_3 comes out as tiny negative numbers in the size offsets.
    cfg = CFG
    layout = ssd.prior_layout(cfg)
    index = layout.index(0, 0, 0, 0)
    cx, cy, w, h = layout.boxes[index].tolist()
    S = cfg.image_size
    gt = GroundTruth(["cat"], [((cx - w / 2) * S, (cy - h / 2) * S, (cx + w / 2) * S, (cy + h / 2) * S)], S, S)
    m = match_ground_truth(cfg, gt, ssd.VOC_CLASSES)
    text = offsets_markdown(cfg, m, index)
    assert "**0.000**" in text and "-0.000" not in text and "−0.000" not in text


def test_each_meaning_in_the_matching_picture_has_its_own_colour():
    # Hard negatives were drawn in conv4_3's red, and the legend showed "forced best prior" in GT white.
    assert draw.NEGATIVE_COLOUR not in draw.LAYER_PALETTE and draw.GT_COLOUR not in draw.LAYER_PALETTE
    assert len({draw.NEGATIVE_COLOUR, draw.GT_COLOUR, draw.FORCED_SWATCH}) == 3
    gt = gt_of([(100, 100, 190, 200)])
    m = match_ground_truth(CFG, gt, ssd.VOC_CLASSES)
    negatives = torch.zeros(CFG.num_default_boxes, dtype=torch.bool)
    negatives[-4:] = True  # conv11_2's four 1x1 boxes, large: their dashed outlines show
    out = np.asarray(draw_matches(Image.new("RGB", (300, 300)), CFG, m, gt, negatives=negatives))
    has = lambda colour: bool((out.reshape(-1, 3) == colour).all(axis=1).any())  # noqa: E731
    assert has(draw.NEGATIVE_COLOUR) and has(draw.FORCED_SWATCH)


def test_only_the_best_detections_get_a_tag(monkeypatch):
    tagged = []
    real = draw.draw_box

    def recording(d, box, colour, width, label=None, *args, **kwargs):
        if label:
            tagged.append(label)
        return real(d, box, colour, width, label, *args, **kwargs)

    monkeypatch.setattr(draw, "draw_box", recording)
    rng = np.random.default_rng(0)
    dets = [ssd.Detection("cat", float(s), (float(x), float(y), float(x) + 40, float(y) + 30), 8, 0, "fc7")
            for s, x, y in zip(rng.random(200), rng.integers(0, 250, 200), rng.integers(0, 260, 200))]
    draw.draw_detections(Image.new("RGB", (300, 300)), dets, max_labels=10)
    best = sorted((d.score for d in dets), reverse=True)[:10]
    assert sorted(tagged) == sorted(f"cat {s:.2f}" for s in best)
