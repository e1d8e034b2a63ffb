"""The Model tab's "What to fix first" (ui.error_analysis): the report's error analysis in the page's words,
the kinds ordered by what fixing them would add."""

from __future__ import annotations

import json

from ssd.detector import DEFAULT_WEIGHTS
from ui.error_analysis import confusion_table, fix_first_markdown, missed_rows


def report(**errors):
    kinds = ("classification", "localisation", "both", "duplicate", "background", "missed")
    return {"error_analysis": {
        "iou_threshold": 0.5, "map_area": 0.5, "score_threshold": 0.4, "costliest": max(errors, key=errors.get),
        "errors": {k: {"count": 3, "dap_area": errors.get(k, 0.0)} for k in kinds},
        "by_size": {"small": {"min_area": 0.0, "max_area": 1024.0, "objects": 2, "map_area": 0.1},
                    "large": {"min_area": 9216.0, "max_area": None, "objects": 5, "map_area": None}},
        "missed": {"total": 1, "objects": 7, "by_reason": {"wrong_class": 1, "poor_box": 0},
                   "worst": [{"rank": 1, "image": "a.jpg", "class": "cat", "box": [1, 2, 30.4, 40.6],
                              "reason": "wrong_class", "near_miss": {"class": "dog", "score": 0.91, "iou": 0.7}}]},
        "confusion": {"labels": ["background", "cat", "dog"], "counts": [[0, 1, 2], [3, 4, 5], [6, 7, 8]]}}}


def test_the_costliest_kind_comes_first_and_is_named():
    text = fix_first_markdown(report(missed=0.02, background=0.09, localisation=0.05))
    assert text.startswith("**Fix first: background**") and "+9.0 mAP" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "px²" not in line][1:]
    assert [r.split(" | ")[0].strip("| ") for r in rows[:3]] == ["background", "localisation", "missed"]
    assert "| large | ≥ 9216 px² | 5 | – |" in text and "weakest are the **small**" in text
    assert "1 of 7 objects are missed**: 1 detected as another class." in text


def test_missed_objects_and_the_confusion_matrix_as_tables():
    assert missed_rows(report(missed=0.1)) == [[1, "a.jpg", "cat", "1, 2, 30, 41", "detected as another class",
                                                "dog 0.91, IoU 0.70"]]
    headers, rows = confusion_table(report(missed=0.1))
    assert headers == ["truth \\ detected", "nothing", "cat", "dog"]
    assert rows == [["background", 0, 1, 2], ["cat", 3, 4, 5], ["dog", 6, 7, 8]]


def test_a_report_without_the_analysis_says_how_to_get_it():
    assert "python -m train.evaluate --report" in fix_first_markdown({"false_positives": {}})
    assert missed_rows(None) == [] and confusion_table({}) is None


def test_the_shipped_report_answers_which_error_costs_the_most():
    shipped = json.loads(DEFAULT_WEIGHTS.with_suffix(".eval.json").read_text())
    costliest = shipped["error_analysis"]["costliest"]
    assert fix_first_markdown(shipped).startswith(f"**Fix first: {costliest}**")
