"""Non-maximum suppression for one class, step by step: the candidates above the score threshold in score order
(the best `PRE_NMS_TOP_K` of the class, as `ssd.postprocess.select_detections` takes them), each kept, or
suppressed by the first kept box that overlaps it by more than the NMS IoU. Greedy NMS as torchvision runs it,
so the kept ones are the class's detections before the top-k cut over all classes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

import ssd
from ssd.postprocess import PRE_NMS_TOP_K

from .numbers import box_text, counted, pixel_box, score_text


@dataclass
class Candidate:
    rank: int  # 1 = the class's best score
    prior: int  # the default box it came from
    score: float
    box: list[float]  # normalised x1, y1, x2, y2
    kept: bool
    by: int | None = None  # the rank of the kept box that suppressed it
    iou: float | None = None  # its IoU with that box


def nms_trace(raw: ssd.RawPrediction, label: int, score_threshold: float, nms_threshold: float,
              pre_nms_top_k: int = PRE_NMS_TOP_K) -> list[Candidate]:
    """The candidates of class `label` (1..C) of one image's inference outputs, best first, with NMS's verdict."""
    scores = raw.scores[0, :, label].float()
    above = (scores > score_threshold).nonzero().flatten()
    order = scores[above].argsort(descending=True, stable=True)[:pre_nms_top_k]
    priors = above[order]
    boxes = raw.boxes[0, priors].float()
    iou = box_iou(boxes, boxes)
    verdicts: list[tuple[bool, int | None, float | None]] = [(True, None, None)] * len(priors)
    for i in range(len(priors)):
        if not verdicts[i][0]:
            continue
        for j in (iou[i, i + 1:] > nms_threshold).nonzero().flatten().tolist():
            j += i + 1
            if verdicts[j][0] and verdicts[j][1] is None:
                verdicts[j] = (False, i + 1, float(iou[i, j]))
    return [Candidate(k + 1, int(p), float(scores[p]), [float(v) for v in boxes[k]], *verdicts[k])
            for k, p in enumerate(priors.tolist())]


def pixels(box: list[float], width: int, height: int) -> list[float]:
    """A normalised box in the photo's pixels, clipped to it and scaled in float32 as `ssd.Detector` makes a
    detection's box, then rounded as every view rounds pixels (`visualize.numbers.pixel_box`): a kept candidate and
    the journey read exactly as the detection does in the table and the API."""
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return pixel_box((torch.tensor(box, dtype=torch.float32).clamp(0, 1) * scale).tolist())


NMS_HEADERS = ["rank", "score", "box (x1, y1, x2, y2) px", "default box", "NMS"]


def nms_table(trace: list[Candidate], width: int, height: int, detected: set[int] | None = None) -> list[list]:
    """Rows for the page; `detected`: the default boxes among the detections shown (the rest of the kept ones
    fell to the top-k cut over all classes)."""
    rows = []
    for c in trace:
        box = box_text(pixels(c.box, width, height))
        if c.kept:
            verdict = "kept" if detected is None or c.prior in detected else "kept, then cut by top-k"
        else:
            verdict = f"suppressed by #{c.by} (IoU {c.iou:.2f})"
        rows.append([c.rank, score_text(c.score), box, f"#{c.prior}", verdict])
    return rows


def nms_summary(trace: list[Candidate], class_name: str, score_threshold: float, nms_threshold: float) -> str:
    kept = sum(c.kept for c in trace)
    return (f"**{class_name}**: {counted(len(trace), 'candidate')} above score "
            f"{score_threshold:.2f} → **{kept}** kept by NMS at IoU > {nms_threshold:.2f}; each suppressed one "
            "names the higher-scoring kept box that overlapped it.")
