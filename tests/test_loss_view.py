"""visualize.loss: the MultiBox loss of one photo, term by term, read from the inference outputs the app has,
equals ssd.MultiBoxLoss on the network's raw outputs."""

from __future__ import annotations

import pytest
import torch

import ssd
from ssd.graph import InferenceGraph, normalise
from visualize.loss import ALPHA, loss_markdown, loss_terms, negative_table, positive_table
from visualize.matching import GroundTruth, match_ground_truth


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = ssd.SSD300_VOC.replace(batch_norm=True, width=0.25)
    network = ssd.build_ssd(cfg).eval()
    images = torch.randint(0, 256, (1, 300, 300, 3), dtype=torch.uint8)
    gt = GroundTruth(boxes=[[30.0, 40.0, 200.0, 260.0], [150.0, 20.0, 290.0, 120.0]], labels=["dog", "person"],
                     width=300, height=300)
    with torch.no_grad():
        boxes, scores = InferenceGraph(network, cfg)(images)
        loc, conf = network(normalise(images.permute(0, 3, 1, 2), cfg, torch.float32))
    raw = ssd.RawPrediction(boxes, scores, 300, 300, 0.0)
    return cfg, raw, loc, conf, gt


def test_the_terms_add_up_to_multibox_loss(setup):
    cfg, raw, loc, conf, gt = setup
    m = match_ground_truth(cfg, gt, ssd.VOC_CLASSES)
    terms = loss_terms(cfg, raw, m, ssd.VOC_CLASSES)
    loc_loss, conf_loss = ssd.MultiBoxLoss(cfg)(loc, conf, [gt.normalised()], [gt.class_ids(ssd.VOC_CLASSES)])
    n = int(m.positives.sum())
    assert terms.n == n > 2
    assert terms.loc / n == pytest.approx(float(loc_loss), rel=1e-4)
    assert terms.conf / n == pytest.approx(float(conf_loss), rel=1e-4)
    assert terms.total == pytest.approx(float(conf_loss + ALPHA * loc_loss), rel=1e-4)
    # Each row's terms are the sum's parts; hard negatives are neg_pos_ratio per positive, listed by loss.
    assert sum(r["loc"] for r in terms.positives) == pytest.approx(terms.loc, rel=1e-5)
    assert sum(r["ce"] for r in terms.positives + terms.negatives) == pytest.approx(terms.conf, rel=1e-5)
    assert len(terms.negatives) == cfg.neg_pos_ratio * n
    ce = [r["ce"] for r in terms.negatives]
    assert ce == sorted(ce, reverse=True)
    assert {r["class"] for r in terms.positives} <= {"dog", "person", "dog (forced)"}
    assert len(positive_table(terms)) == n and len(negative_table(terms)) == 3 * n
    text = loss_markdown(terms)
    assert f"/ {n} = {terms.total:.4f}" in text


def test_no_ground_truth_means_no_loss(setup):
    cfg, raw, *_ = setup
    empty = GroundTruth(boxes=[], labels=[], width=300, height=300)
    terms = loss_terms(cfg, raw, match_ground_truth(cfg, empty, ssd.VOC_CLASSES), ssd.VOC_CLASSES)
    assert terms.n == 0 and terms.total == 0.0 and terms.negatives == []
    assert "N = 0" in loss_markdown(terms)
