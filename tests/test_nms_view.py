"""visualize.nms: the step-by-step NMS of one class keeps exactly what the library's post-processing keeps."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from ssd.postprocess import InferenceSettings, select_detections
from tests.outputs import CFG, random_outputs
from visualize.nms import nms_summary, nms_table, nms_trace


@pytest.fixture(scope="module")
def raw():
    return CFG, random_outputs(1)


@pytest.mark.parametrize("nms_threshold", [0.3, 0.45, 0.7])
def test_the_trace_keeps_what_select_detections_keeps(raw, nms_threshold):
    cfg, r = raw
    score = float(r.scores[0, :, 1:].max()) * 0.5  # an untrained model: many overlapping candidates
    dets = select_detections(r.boxes, r.scores, InferenceSettings(score, nms_threshold, top_k=100_000))[0]
    for label in range(1, cfg.num_classes + 1):
        trace = nms_trace(r, label, score, nms_threshold)
        assert {c.prior for c in trace if c.kept} == set(dets.prior[dets.labels == label].tolist()), label
        assert [c.score for c in trace] == sorted((c.score for c in trace), reverse=True)
        for c in trace:
            if not c.kept:  # suppressed by a better, kept box of its class that overlaps it enough
                by = trace[c.by - 1]
                assert by.kept and by.rank < c.rank and c.iou > nms_threshold
                assert c.iou == pytest.approx(float(box_iou(torch.tensor([by.box]), torch.tensor([c.box]))), abs=1e-6)


def test_the_table_says_what_happened_to_each(raw):
    cfg, r = raw
    label = int(r.scores[0, :, 1:].max(dim=0).values.argmax()) + 1
    score = float(r.scores[0, :, label].max()) * 0.5
    trace = nms_trace(r, label, score, 0.45)
    kept = [c.prior for c in trace if c.kept]
    rows = nms_table(trace, 300, 300, detected=set(kept[:1]))
    assert rows[0][-1] == "kept" and len(rows) == len(trace)
    assert any(v == "kept, then cut by top-k" for *_, v in rows) == (len(kept) > 1)
    assert any(str(v).startswith("suppressed by #") for *_, v in rows) == (len(kept) < len(trace))
    assert f"{len(trace)} candidate" in nms_summary(trace, "cat", score, 0.45)
