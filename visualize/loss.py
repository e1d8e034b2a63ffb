"""The MultiBox loss of one photo in numbers (paper eq. 1): L = (L_conf + α·L_loc) / N, with N the positives,
L_loc the smooth-L1 of each positive's four predicted offsets against its ground truth's encoded offsets, and
L_conf the cross-entropy of each positive (against its class) and of each hard negative (against background).

It reads the network's inference outputs (`ssd.RawPrediction`: decoded boxes and softmax scores, what the app
and onnxruntime have) and undoes them exactly: `ssd.encode` of the decoded boxes gives back the predicted
offsets, and -log of a softmax probability is the cross-entropy of the logits. So the sum equals
`ssd.MultiBoxLoss` on the network's raw outputs, term by term, up to rounding."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

import ssd

from .numbers import counted, score_text, significant_text

ALPHA = 1.0  # the paper's weight of the localisation loss ("set to 1 by cross validation"), as training uses it
COORDINATES = ("cx", "cy", "w", "h")


@dataclass
class LossTerms:
    """Every term of the loss of one image. `positives` and `negatives` are rows (dicts) best explained first:
    positives by their total loss, hard negatives by their cross-entropy, highest first."""

    n: int  # positives
    loc: float  # Σ smooth-L1 over the positives' offsets
    conf_positives: float  # Σ cross-entropy of the positives
    conf_negatives: float  # Σ cross-entropy of the hard negatives
    positives: list[dict]
    negatives: list[dict]
    neg_pos_ratio: int

    @property
    def conf(self) -> float:
        return self.conf_positives + self.conf_negatives

    @property
    def total(self) -> float:
        """L of eq. (1); 0 without positives, as training takes it."""
        return (self.conf + ALPHA * self.loc) / self.n if self.n else 0.0

    def as_dict(self) -> dict:
        return {"N": self.n, "alpha": ALPHA, "L_loc_sum": self.loc, "L_conf_sum": self.conf,
                "L_conf_positives": self.conf_positives, "L_conf_hard_negatives": self.conf_negatives,
                "L": self.total, "L_loc": self.loc / max(self.n, 1), "L_conf": self.conf / max(self.n, 1),
                "neg_pos_ratio": self.neg_pos_ratio, "positives": self.positives, "hard_negatives": self.negatives}


def loss_terms(cfg: ssd.SSDConfig, raw: ssd.RawPrediction, m: ssd.MatchResult,
               class_names: list[str] | tuple[str, ...]) -> LossTerms:
    """The loss of `raw` (one image's inference outputs) against the matching `m` of its ground truth."""
    priors = ssd.default_boxes(cfg)
    loc = ssd.encode(raw.boxes[0].float(), priors, cfg.variances)  # the offsets the network predicted
    log_p = raw.scores[0].float().clamp_min(1e-30).log()
    labels = m.labels[0]
    ce = F.nll_loss(log_p, labels, reduction="none")  # = cross-entropy of the logits
    positives = labels > 0
    targets = m.loc_targets(priors, cfg.variances)[0]
    smooth_l1 = F.smooth_l1_loss(loc[positives], targets[positives], reduction="none")  # (P, 4)
    negatives = ssd.hard_negatives(ce[None], positives[None], cfg.neg_pos_ratio)[0]
    layout = ssd.prior_layout(cfg)
    names = ["background", *class_names]

    def where(i: int) -> dict:
        d = layout.describe(i)
        return {"index": i, "layer": d["layer"], "cell": [d["row"], d["col"]], "shape": d["shape"]}

    rows = []
    for k, i in enumerate(positives.nonzero().flatten().tolist()):
        terms = [float(v) for v in smooth_l1[k]]
        rows.append({**where(i), "class": names[int(labels[i])], "iou": float(m.iou[0, i]),
                     "forced": bool(m.forced[0, i]), "smooth_l1": dict(zip(COORDINATES, terms)),
                     "loc": sum(terms), "ce": float(ce[i]), "p_class": float(log_p[i, labels[i]].exp())})
    rows.sort(key=lambda r: -(r["loc"] + r["ce"]))
    neg_rows = [{**where(i), "ce": float(ce[i]), "p_background": float(log_p[i, 0].exp()),
                 "top_class": names[int(log_p[i, 1:].argmax()) + 1]}
                for i in negatives.nonzero().flatten().tolist()]
    neg_rows.sort(key=lambda r: -r["ce"])
    return LossTerms(n=int(positives.sum()), loc=float(smooth_l1.sum()), conf_positives=float(ce[positives].sum()),
                     conf_negatives=float(ce[negatives].sum()), positives=rows, negatives=neg_rows,
                     neg_pos_ratio=cfg.neg_pos_ratio)


# The default box in one column, as the Detect table names it, and the four smooth-L1 terms in another: the
# positives' table fits the page's width with its p(class) and CE in view.
POSITIVE_HEADERS = ["#", "class", "default box", "IoU", "smooth-L1 (cx, cy, w, h)", "L_loc", "p(class)", "CE"]
NEGATIVE_HEADERS = ["#", "default box", "p(background)", "most likely class", "CE"]
LOSS_DECIMALS = 4
# The four terms share one cell, so one decimal fewer: at 4, with an EfficientNet-Lite model's longer layer names
# ("blocks.5 expand"), the table is wider than a 1280-pixel page and CE is cut.
TERM_DECIMALS = 3


def default_box_text(r: dict) -> str:
    """A term's default box as the tables name it: its source layer, cell and shape."""
    return f"{r['layer']} cell ({r['cell'][0]}, {r['cell'][1]}) shape {r['shape']}"


def loss_text(value: float) -> str:
    return score_text(value, LOSS_DECIMALS)


def positive_table(terms: LossTerms) -> list[list]:
    return [[r["index"], r["class"] + " (forced)" * r["forced"], default_box_text(r), score_text(r["iou"]),
             ", ".join(score_text(r["smooth_l1"][c], TERM_DECIMALS) for c in COORDINATES), loss_text(r["loc"]),
             significant_text(r["p_class"]), loss_text(r["ce"])] for r in terms.positives]


def negative_table(terms: LossTerms) -> list[list]:
    return [[r["index"], default_box_text(r), significant_text(r["p_background"]), r["top_class"], loss_text(r["ce"])]
            for r in terms.negatives]


def loss_markdown(terms: LossTerms) -> str:
    """Equation (1) with this photo's numbers."""
    if not terms.n:
        return "No positives, so N = 0 and the loss is 0 (training skips such images' terms)."
    p, neg = len(terms.positives), len(terms.negatives)
    return (f"**L = (L_conf + α·L_loc) / N = ({terms.conf:.3f} + {ALPHA:g}·{terms.loc:.3f}) / {terms.n} = "
            f"{terms.total:.4f}**\n\n"
            f"- N = {counted(terms.n, 'positive')}; α = {ALPHA:g}.\n"
            f"- L_loc = Σ over the {counted(p, 'positive')} of smooth-L1 of the 4 offsets (predicted − encoded ground "
            f"truth) = {terms.loc:.3f}.\n"
            f"- L_conf = Σ cross-entropy of the {counted(p, 'positive')} ({terms.conf_positives:.3f}) + of the "
            f"{counted(neg, 'hard negative')} ({terms.conf_negatives:.3f}: the background boxes with the highest loss, "
            f"{terms.neg_pos_ratio} per positive) = {terms.conf:.3f}. The other default boxes add nothing.")
