"""Inference outputs of a small untrained SSD300 on a random image, for the tests of the teaching views: many
overlapping candidates of every class, as a learner's first network has."""

from __future__ import annotations

import torch

import ssd
from ssd.graph import InferenceGraph

CFG = ssd.SSD300_VOC.replace(batch_norm=True, width=0.25)


def random_outputs(seed: int) -> ssd.RawPrediction:
    """The graph's decoded boxes and softmax scores for one random 300×300 image (weights and image from `seed`)."""
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (1, 300, 300, 3), dtype=torch.uint8)
    with torch.no_grad():
        boxes, scores = InferenceGraph(ssd.build_ssd(CFG).eval(), CFG)(images)
    return ssd.RawPrediction(boxes, scores, 300, 300, 0.0)
