"""Inference (paper §3 "Inference"): decode, per-class confidence threshold and NMS, top k per image.
The batched implementation must give exactly what a plain per-image, per-class loop over
`torchvision.ops.nms` gives."""

import pytest
import torch
from torchvision.ops import nms

import ssd
from ssd.postprocess import PRE_NMS_TOP_K, InferenceSettings, postprocess, select_detections

CFG = ssd.SSD300_VOC  # its variances are the paper's (0.1, 0.2), as decode_by_hand's
PAPER = InferenceSettings.of_config(CFG)  # the paper's 0.01, 0.45, top 200; 400 per class
S = InferenceSettings


def decode_by_hand(loc, priors, v=(0.1, 0.2)):
    cx = priors[:, 0] + loc[:, 0] * v[0] * priors[:, 2]
    cy = priors[:, 1] + loc[:, 1] * v[0] * priors[:, 3]
    w = priors[:, 2] * torch.exp(loc[:, 2] * v[1])
    h = priors[:, 3] * torch.exp(loc[:, 3] * v[1])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def naive(loc, conf, priors, score_threshold, nms_threshold, top_k, pre_nms_top_k):
    """(score, label, prior, box) per image, best first, the slow obvious way."""
    results = []
    for b in range(loc.shape[0]):
        probs = conf[b].softmax(dim=-1)
        boxes = decode_by_hand(loc[b], priors)
        found = []
        for c in range(1, conf.shape[-1]):
            s = probs[:, c]
            idx = s.argsort(descending=True)[:pre_nms_top_k]
            idx = idx[s[idx] > score_threshold]
            for k in nms(boxes[idx], s[idx], nms_threshold).tolist():
                n = int(idx[k])
                found.append((float(s[n]), c, n, boxes[n]))
        found.sort(key=lambda t: -t[0])
        results.append(found[:top_k])
    return results


def assert_same(dets, expected):
    assert len(dets) == len(expected)
    for d, want in zip(dets, expected):
        assert d.labels.tolist() == [c for _, c, _, _ in want]
        assert d.prior.tolist() == [n for _, _, n, _ in want]
        torch.testing.assert_close(d.scores, torch.tensor([s for s, _, _, _ in want]))
        if want:
            torch.testing.assert_close(d.boxes, torch.stack([box for _, _, _, box in want]))
        else:
            assert d.boxes.shape == (0, 4)


def random_case(B, N, C, seed, background=0.0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(N, 2, generator=g)
    priors = torch.cat([centre, torch.rand(N, 2, generator=g) * 0.4 + 0.05], 1)
    loc = torch.randn(B, N, 4, generator=g) * 0.5
    conf = torch.randn(B, N, C + 1, generator=g) * spread
    conf[..., 0] += background
    return loc, conf, priors


@pytest.mark.parametrize("seed, score, nms_t, top_k", [(0, 0.05, 0.45, 200), (1, 0.3, 0.3, 7), (2, 0.01, 0.7, 1000)])
def test_equals_per_class_nms_loop(seed, score, nms_t, top_k):
    loc, conf, priors = random_case(B=3, N=300, C=5, seed=seed)
    dets = postprocess(loc, conf, priors, CFG, S(score, nms_t, top_k, pre_nms_top_k=300))
    assert_same(dets, naive(loc, conf, priors, score, nms_t, top_k, pre_nms_top_k=300))
    for d in dets:
        assert len(d.scores) <= top_k
        assert (d.scores[1:] <= d.scores[:-1]).all()  # best first


def test_equals_loop_with_pre_nms_cap_on_ssd300_default_boxes():
    priors = ssd.default_boxes(ssd.SSD300_VOC)
    loc, conf, _ = random_case(B=2, N=priors.shape[0], C=20, seed=3, background=5.0, spread=2.0)
    dets = postprocess(loc, conf, priors, CFG, PAPER)
    expected = naive(loc, conf, priors, 0.01, 0.45, 200, pre_nms_top_k=400)
    assert all(len(e) == 200 for e in expected)  # the case exercises the top-k cut
    assert_same(dets, expected)


@pytest.mark.parametrize("top_k", [5, 40, 200])
def test_equals_loop_under_heavy_suppression(top_k, monkeypatch):
    # 600 default boxes that are copies of only 25 distinct boxes: NMS keeps at most 25 per class, so the best
    # few hundred candidates rarely hold top_k survivors and lower-scoring ones must be looked at too.
    loc, conf, priors = random_case(B=2, N=600, C=4, seed=6)
    priors = priors[torch.randint(0, 25, (600,), generator=torch.Generator().manual_seed(7))]
    loc = torch.zeros_like(loc)
    real_nms, calls = ssd.postprocess.batched_nms, []

    def counting_nms(*args):
        calls.append(1)
        return real_nms(*args)

    monkeypatch.setattr("ssd.postprocess.batched_nms", counting_nms)
    dets = postprocess(loc, conf, priors, CFG, S(0.05, 0.45, top_k, pre_nms_top_k=600))
    assert_same(dets, naive(loc, conf, priors, 0.05, 0.45, top_k, pre_nms_top_k=600))
    if top_k == 200:
        assert len(calls) > 1  # the case does exercise looking beyond the first candidates


def test_per_class_cap_before_nms():
    # No suppression (IoU threshold 1): what comes out is exactly each class's 10 best scores.
    loc, conf, priors = random_case(B=2, N=300, C=3, seed=8)
    dets = postprocess(loc, conf, priors, CFG, S(0.01, 1.0, top_k=100, pre_nms_top_k=10))
    assert [len(d.scores) for d in dets] == [30, 30]
    assert_same(dets, naive(loc, conf, priors, 0.01, 1.0, 100, pre_nms_top_k=10))


def test_images_do_not_suppress_each_other():
    loc, conf, priors = random_case(B=1, N=200, C=3, seed=4)
    single = postprocess(loc, conf, priors, CFG, PAPER)[0]
    for d in postprocess(loc.repeat(3, 1, 1), conf.repeat(3, 1, 1), priors, CFG, PAPER):
        assert d.prior.tolist() == single.prior.tolist()
        assert d.labels.tolist() == single.labels.tolist()


def test_nothing_above_threshold():
    loc, conf, priors = random_case(B=2, N=100, C=4, seed=5, background=50.0, spread=1.0)
    for d in postprocess(loc, conf, priors, CFG, PAPER.with_overrides(score_threshold=0.5)):
        assert d.boxes.shape == (0, 4) and d.scores.shape == (0,) and d.labels.shape == (0,)


def test_counts_the_candidates_that_went_into_nms():
    # Each class contributes its scores above the threshold, at most pre_nms_top_k of them.
    loc, conf, priors = random_case(B=2, N=300, C=3, seed=9)
    dets = postprocess(loc, conf, priors, CFG, S(0.2, 0.45, 200, pre_nms_top_k=40))
    probs = conf.softmax(dim=-1)[..., 1:]
    for b, d in enumerate(dets):
        want = sum(min(40, int((probs[b, :, c] > 0.2).sum())) for c in range(3))
        assert d.candidates == want
        assert 0 < len(d.scores) <= d.candidates


@pytest.mark.parametrize("top_k", [3, 200])
def test_class_filter_comes_before_the_top_k_cut(top_k):
    # Asking for classes 1 and 3 equals running on a network that never scores class 2: same detections,
    # and the top k are the best of those two classes, not what is left of the overall top k.
    loc, conf, priors = random_case(B=2, N=300, C=3, seed=10)
    dets = postprocess(loc, conf, priors, CFG, S(0.05, 0.45, top_k), classes=[1, 3])
    expected = naive(loc, conf, priors, 0.05, 0.45, 10_000, pre_nms_top_k=400)
    expected = [[t for t in e if t[1] != 2][:top_k] for e in expected]
    assert_same(dets, expected)
    probs = conf.softmax(dim=-1)[..., 1:]
    for b, d in enumerate(dets):
        assert d.candidates == sum(int((probs[b, :, c] > 0.05).sum()) for c in (0, 2))


def test_the_settings_have_no_defaults():
    # Post-processing is always told its thresholds: a Detector passes its own, evaluation the config's.
    loc, conf, priors = random_case(B=1, N=50, C=2, seed=11)
    with pytest.raises(TypeError):
        postprocess(loc, conf, priors, CFG)
    with pytest.raises(TypeError):
        select_detections(decode_by_hand(loc[0], priors)[None], conf.softmax(dim=-1))
    with pytest.raises(TypeError):
        InferenceSettings(0.5)


def test_settings_overrides_keep_what_is_left_as_none():
    assert PAPER == InferenceSettings(CFG.conf_threshold, CFG.nms_threshold, CFG.top_k, PRE_NMS_TOP_K)
    assert (PAPER.score_threshold, PAPER.nms_threshold, PAPER.top_k, PAPER.pre_nms_top_k) == (0.01, 0.45, 200, 400)
    assert PAPER.with_overrides() is PAPER and PAPER.with_overrides(None, None, None) == PAPER
    assert PAPER.with_overrides(score_threshold=0.3, top_k=7) == InferenceSettings(0.3, 0.45, 7)
    assert PAPER.with_overrides(0.0, 0.0, 0) == InferenceSettings(0.0, 0.0, 0)  # zero is a value, not None
