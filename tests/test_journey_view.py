"""visualize.journey: a detection's default box, offsets and decoding give back the detection's own box."""

from __future__ import annotations

import pytest
import torch

import ssd
from tests.outputs import CFG, random_outputs
from visualize.journey import class_bars, draw_journey, journey, journey_markdown
from visualize.nms import nms_trace


@pytest.fixture(scope="module")
def setup():
    cfg, raw = CFG, random_outputs(2)
    boxes, scores = raw.boxes, raw.scores
    settings = ssd.InferenceSettings(float(scores[0, :, 1:].max()) * 0.5, 0.45, cfg.top_k)
    dets = ssd.postprocess.select_detections(boxes, scores, settings)[0]
    return cfg, raw, dets


def test_decoding_the_offsets_gives_the_detection_and_nms_names_what_it_suppressed(setup):
    cfg, raw, dets = setup
    prior, label = int(dets.prior[0]), int(dets.labels[0])
    trace = nms_trace(raw, label, float(raw.scores[0, :, 1:].max()) * 0.5, 0.45)
    j = journey(cfg, raw, prior, label, ssd.VOC_CLASSES, trace)
    assert j["decoded_xyxy"] == pytest.approx(dets.boxes[0].tolist(), abs=1e-5)
    assert j["default_box"]["index"] == prior and j["class"] == ssd.VOC_CLASSES[label - 1]
    # The offsets are what the network's loc head said: decoding them with the library gives the same box.
    again = ssd.decode(torch.tensor([j["offsets"]]), ssd.prior_layout(cfg).boxes[prior][None], cfg.variances)[0]
    assert again.tolist() == pytest.approx(j["box_xyxy"], abs=1e-5)
    assert sum(s["p"] for s in j["scores"]) == pytest.approx(1.0, abs=1e-4)
    assert j["nms"]["kept"] and j["nms"]["rank"] == 1
    assert {c["rank"] for c in j["nms"]["suppressed"]} == {c.rank for c in trace if c.by == 1}
    text = journey_markdown(j, 300, 300)
    assert f"#{prior}" in text and "exp(" in text and "NMS" in text
    assert draw_journey(ssd.image.to_rgb(torch.zeros(300, 300, 3, dtype=torch.uint8).numpy()), j).width == 300
    assert class_bars(j)[0][0] == j["scores"][0]["class"]
