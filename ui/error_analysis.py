"""The Model tab's "What to fix first": the evaluation report's error analysis (`ssd.evaluation.tide` and
`ssd.evaluation.analysis`, written by `python -m train.evaluate --report`) as text and tables. TIDE's answer
(Bolya et al. 2020) to a practitioner's next question: which kind of error, fixed, would add the most mAP."""

from __future__ import annotations

# What each of TIDE's kinds is, in a reader's words, and what fixing it means.
KINDS = {
    "classification": "the right box, the wrong class (IoU ≥ 0.5 with an object of another class)",
    "localisation": "the right class, a poor box (0.1 ≤ IoU < 0.5 with an object of its class)",
    "both": "the wrong class and a poor box",
    "duplicate": "a second detection of an object already found",
    "background": "a detection on no object (IoU < 0.1 with every object)",
    "missed": "an object no detection found",
}
REASONS = {"below_threshold": "found only below the threshold", "wrong_class": "detected as another class",
           "poor_box": "found with a poor box", "other_object": "its detection claimed by another object",
           "not_detected": "nothing near it"}
MISSED_HEADERS = ["#", "image", "class", "box (x1, y1, x2, y2) px", "why missed", "nearest detection"]
SHOWN = 8


def image_name(entry: dict) -> str:
    """An image the report lists (a false positive's, a missed object's), by its file name where the report has
    it: a COCO image's id is a number that names no file. Its id where not (a pack, a report written before)."""
    return entry.get("file") or str(entry["image"])


def _box(box) -> str:
    return ", ".join(f"{v:.0f}" for v in box)


def fix_first_markdown(report: dict | None) -> str:
    """The kinds by the mAP each would add if fixed, AP by object size and what the missed objects are."""
    analysis = (report or {}).get("error_analysis")
    if not analysis:
        return ("The error analysis comes from the evaluation report (`python -m train.evaluate --report`), and "
                "this one has none: evaluate the weights again to see which kind of error costs the most.")
    errors = analysis["errors"]
    order = sorted(errors, key=lambda k: -errors[k]["dap_area"])
    top = order[0]
    lines = [
        f"**Fix first: {top}** — {KINDS.get(top, top)}. Fixing every such error would add "
        f"**+{100 * errors[top]['dap_area']:.1f} mAP** (from {100 * analysis['map_area']:.1f}; area mAP at IoU "
        f"{analysis['iou_threshold']}). Each kind is fixed alone and the detections scored again (TIDE, Bolya et "
        "al. 2020); the gains overlap, so they do not add up.",
        "",
        "| kind of error | what it is | count (at any score) | mAP gained if fixed |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {k} | {KINDS.get(k, k)} | {errors[k]['count']} | +{100 * errors[k]['dap_area']:.1f} |"
              for k in order]
    special = analysis.get("special", {})
    if special:
        fp, fn = special.get("false_positives"), special.get("false_negatives")
        if fp and fn:
            lines += ["", f"Every false positive removed: +{100 * fp['dap_area']:.1f}; every object found: "
                          f"+{100 * fn['dap_area']:.1f}."]
    sizes = analysis.get("by_size") or {}
    if sizes:
        lines += ["", "**AP by object size** (box area in the photo's pixels):", "",
                  "| size | area | objects | AP |", "|---|---|---:|---:|"]
        for name, s in sizes.items():
            area = (f"< {s['max_area']:.0f}" if not s["min_area"] else
                    f"{s['min_area']:.0f} – {s['max_area']:.0f}" if s["max_area"] else f"≥ {s['min_area']:.0f}")
            ap = "–" if s["map_area"] is None else f"{100 * s['map_area']:.1f}"
            lines.append(f"| {name} | {area} px² | {s['objects']} | {ap} |")
        weakest = min((k for k in sizes if sizes[k]["map_area"] is not None), key=lambda k: sizes[k]["map_area"],
                      default=None)
        if weakest:
            lines += ["", f"The weakest are the **{weakest}** objects."]
    missed = analysis.get("missed")
    if missed:
        reasons = ", ".join(f"{n} {REASONS.get(k, k)}" for k, n in missed["by_reason"].items() if n)
        lines += ["", f"At the score threshold {analysis['score_threshold']:.2f}, **{missed['total']} of "
                      f"{missed['objects']} objects are missed**: {reasons}. The missed objects with the "
                      "highest-scoring detection near them:"]
    return "\n".join(lines)


def missed_rows(report: dict | None) -> list[list]:
    analysis = (report or {}).get("error_analysis") or {}
    rows = []
    for m in (analysis.get("missed") or {}).get("worst", [])[:SHOWN]:
        near = m.get("near_miss")
        nearest = (f"{near['class']} {near['score']:.2f}, IoU {near['iou']:.2f}" if near else "none")
        rows.append([m["rank"], image_name(m), m["class"], _box(m["box"]), REASONS.get(m["reason"], m["reason"]),
                     nearest])
    return rows


def confusion_table(report: dict | None) -> tuple[list[str], list[list]] | None:
    """(headers, rows) of the confusion matrix: a row per true class (and background), a column per detected
    class (and "nothing")."""
    confusion = ((report or {}).get("error_analysis") or {}).get("confusion")
    if not confusion:
        return None
    labels = confusion["labels"]
    headers = ["truth \\ detected", "nothing", *labels[1:]]
    rows = [["background" if i == 0 else name, *counts] for i, (name, counts) in
            enumerate(zip(labels, confusion["counts"]))]
    return headers, rows
