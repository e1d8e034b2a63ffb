"""Matching strategy (paper §2.2): each ground truth gets its best default box whatever the overlap, then every
default box with Jaccard overlap >= 0.5 with some ground truth is matched to the one it overlaps most.

The hand-drawn cases use boxes that all span y in [0, 0.2], so IoU is the 1-D overlap of the x-intervals."""

import pytest
import torch
from torchvision.ops import box_iou

import ssd
from ssd import match
from ssd.boxes import cxcywh_to_xyxy, encode


def strip_priors(*x_ranges):
    """Default boxes (cx, cy, w, h) spanning the given x-intervals and y in [0, 0.2]."""
    return torch.tensor([[(a + b) / 2, 0.1, b - a, 0.2] for a, b in x_ranges])


def strip_boxes(*x_ranges):
    """Ground-truth boxes (x1, y1, x2, y2) spanning the given x-intervals and y in [0, 0.2]."""
    return torch.tensor([[a, 0.0, b, 0.2] for a, b in x_ranges])


def test_forced_best_prior_beats_threshold():
    priors = strip_priors((0.0, 0.2), (0.1, 0.3), (0.2, 0.4), (0.5, 0.7), (0.8, 1.0))
    # A overlaps P0 0.18/0.2 = 0.9 and P1 0.08/0.3; B overlaps P1 0.17/0.25 = 0.68, P2 0.15/0.27 = 0.556 and
    # P0 0.07/0.35 = 0.2; the small C overlaps only P3, 0.05/0.2 = 0.25 < 0.5, yet P3 becomes its positive.
    gt = strip_boxes((0.0, 0.18), (0.13, 0.35), (0.55, 0.6))
    m = match([gt], [torch.tensor([3, 5, 1])], priors, threshold=0.5)
    assert m.labels.tolist() == [[3, 5, 5, 1, 0]]
    assert m.matched_gt.tolist() == [[0, 1, 1, 2, -1]]
    assert m.forced.tolist() == [[True, True, False, True, False]]
    assert m.positives.tolist() == [[True, True, True, True, False]]
    torch.testing.assert_close(m.iou[0], torch.tensor([0.9, 0.68, 0.15 / 0.27, 0.25, 0.0]))
    # Each positive regresses towards its own ground truth; background boxes have zeros.
    torch.testing.assert_close(m.boxes[0, :4], gt[[0, 1, 1, 2]])
    assert m.boxes[0, 4].abs().sum() == 0
    targets = m.loc_targets(priors, (0.1, 0.2))
    torch.testing.assert_close(targets[0, :4], encode(gt[[0, 1, 1, 2]], priors[:4], (0.1, 0.2)))


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_ground_truths_compete_for_one_default_box(order):
    # R = [0.2, 0.6] overlaps A = [0.15, 0.55] by 0.35/0.45 = 0.78 and B = [0.3, 0.7] by 0.3/0.5 = 0.6:
    # both clear the threshold, R goes to A (the larger overlap) whichever ground truth is listed first.
    priors = strip_priors((0.15, 0.55), (0.2, 0.6), (0.3, 0.7))
    gts = [strip_boxes((0.15, 0.55)), strip_boxes((0.3, 0.7))]
    labels = [torch.tensor([2]), torch.tensor([4])]
    m = match([torch.cat([gts[i] for i in order])], [torch.cat([labels[i] for i in order])], priors, 0.5)
    assert m.labels.tolist() == [[2, 2, 4]]
    torch.testing.assert_close(m.iou[0], torch.tensor([1.0, 0.35 / 0.45, 1.0]))
    a = order.index(0)
    assert m.matched_gt[0, 1] == a


def test_forced_match_overrides_a_better_overlapping_ground_truth():
    # U = [0, 0.4] is the best default box of the small A = [0, 0.1] (0.25, vs 0.15 for V), although U overlaps
    # B = [0.04, 0.4] by 0.9. A keeps U (every object needs a positive); B has V (IoU 1).
    priors = strip_priors((0.0, 0.4), (0.04, 0.4))
    gt = strip_boxes((0.0, 0.1), (0.04, 0.4))
    m = match([gt], [torch.tensor([7, 9])], priors, 0.5)
    assert m.labels.tolist() == [[7, 9]]
    assert m.matched_gt.tolist() == [[0, 1]]
    assert m.forced.tolist() == [[True, True]]
    # The reported IoU is the one with the assigned ground truth, not the best one.
    torch.testing.assert_close(m.iou[0], torch.tensor([0.25, 1.0]))


def test_batch_with_an_empty_image():
    priors = strip_priors((0.0, 0.2), (0.1, 0.3), (0.2, 0.4), (0.5, 0.7), (0.8, 1.0))
    gts = [strip_boxes((0.0, 0.18), (0.13, 0.35)), torch.zeros(0, 4), strip_boxes((0.55, 0.6))]
    labels = [torch.tensor([3, 5]), torch.zeros(0, dtype=torch.long), torch.tensor([1])]
    m = match(gts, labels, priors, 0.5)
    assert m.labels.tolist() == [[3, 5, 5, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]
    assert m.matched_gt.tolist() == [[0, 1, 1, -1, -1], [-1] * 5, [-1, -1, -1, 0, -1]]
    none = match([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2, priors, 0.5)
    assert none.labels.shape == (2, 5) and not none.positives.any()


def naive_match(gt, labels, priors_xyxy, threshold):
    """The paper's rule, one image, written with plain loops (ties to later ground truth, as in Caffe)."""
    assigned = [-1] * priors_xyxy.shape[0]
    if gt.shape[0] == 0:
        return [0] * len(assigned), assigned
    iou = box_iou(gt, priors_xyxy)
    best_iou, best_gt = iou.max(dim=0)
    for n in range(priors_xyxy.shape[0]):
        if best_iou[n] >= threshold:
            assigned[n] = int(best_gt[n])
    for g in range(gt.shape[0]):
        assigned[int(iou[g].argmax())] = g
    return [int(labels[a]) if a >= 0 else 0 for a in assigned], assigned


def test_ssd300_batch_equals_naive_rule():
    priors = ssd.default_boxes(ssd.SSD300_VOC)
    g = torch.Generator().manual_seed(0)
    gts, labels = [], []
    for count in (1, 4, 0, 9):
        xy = torch.rand(count, 2, generator=g) * 0.7
        wh = torch.rand(count, 2, generator=g) * 0.5 + 0.02
        gts.append(torch.cat([xy, (xy + wh).clamp(max=1)], 1))
        labels.append(torch.randint(1, 21, (count,), generator=g))
    m = match(gts, labels, priors, threshold=0.5)
    for b in range(len(gts)):
        want_labels, want_gt = naive_match(gts[b], labels[b], cxcywh_to_xyxy(priors), 0.5)
        assert m.labels[b].tolist() == want_labels
        assert m.matched_gt[b].tolist() == want_gt
        assert int(m.positives[b].sum()) >= len(gts[b])  # every object has at least one positive
