"""Measuring a detector: VOC mAP with the devkit's rules (`voc`), COCO AP through pycocotools (`coco`), running a
detector over a dataset (`run`), what its errors cost (`tide`, `analysis`: TIDE's kinds of error, AP by object
size, the confusion matrix, the missed objects) and the evaluation report that sits beside the weights
(`report`). Training scores its val set with it and the app's Model tab reads its report; neither is needed to
use it.
`python -m train.evaluate` is its command line (it reads datasets with training's readers)."""

from .analysis import ErrorAnalysis, analyse_errors
from .coco import evaluate_coco
from .report import build_report, report_path, write_report
from .run import collect_detections, evaluate_detector, score_voc
from .voc import ClassAP, VOCResult, evaluate_voc, voc_ap

__all__ = [
    "ClassAP", "ErrorAnalysis", "VOCResult", "analyse_errors", "build_report", "collect_detections",
    "evaluate_coco", "evaluate_detector", "evaluate_voc", "report_path", "score_voc", "voc_ap", "write_report",
]
