"""Training curves, precision-recall curves and per-class AP (matplotlib, Agg canvas), and the command line that
draws them from the files training and evaluation write:

    python -m visualize.plots runs/lite0                  (or its log.csv): curves.png beside the log
    python -m visualize.plots model.eval.json --out pr.png  (an evaluation report, or train.evaluate's --json)

Training and evaluation write numbers only, so that they need no plotting library.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas, never through `pyplot`, so nothing is
registered in pyplot's global figure list and no backend is switched: safe in servers, threads and tests.
Every function returns the Figure; given `path` it also writes a PNG of exactly figsize x dpi pixels.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ssd.cli import error_exit, program

from .model_report import read_log

__all__ = ["figure_to_image", "plot_class_ap", "plot_pr_curves", "plot_run_comparison", "plot_training_curves"]


def _new_figure(figsize, dpi) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_image(fig: Figure) -> Image.Image:
    """A Figure as an RGB picture of exactly figsize x dpi pixels (rendered to PNG on an Agg canvas)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=fig.dpi, format="png")
    return fig


def _get(obj, name, default=None):
    """Attribute or key: works on evaluation results and on their `to_dict(curves=True)` form."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _float(x) -> float:
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------------------------------ PR curves
def plot_pr_curves(result, class_names=None, path=None, *, figsize=(9.0, 6.0), dpi=100, max_classes=20) -> Figure:
    """Precision against recall for each class of a VOC evaluation (`ssd.evaluation.VOCResult`, or its
    `to_dict(curves=True)`), one line per class, legend sorted by area AP.

    class_names: labels for the classes in `result.per_class` order (default: its keys). Classes without
    ground truth (AP nan) are left out; at most `max_classes` best are drawn. The title gives both mAPs.
    """
    per_class = _get(result, "per_class")
    if per_class is None:
        raise TypeError(f"expected a VOC evaluation result with per_class curves, got {type(result).__name__}")
    keys = list(per_class)
    names = [str(k) for k in keys] if class_names is None else [str(n) for n in class_names]
    if len(names) != len(keys):
        raise ValueError(f"{len(names)} class names for {len(keys)} classes in the result")

    curves = []
    for k, name in zip(keys, names, strict=True):
        c = per_class[k]
        ap = _float(_get(c, "ap_area"))
        if math.isnan(ap):
            continue
        precision, recall = _get(c, "precision"), _get(c, "recall")
        if precision is None or recall is None:
            raise ValueError(f"class {name!r} carries no precision/recall curve (use to_dict(curves=True))")
        curves.append((ap, name, np.asarray(recall, float), np.asarray(precision, float)))
    curves.sort(key=lambda t: -t[0])
    shown = curves[:max_classes]

    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    colours = _class_colours(len(shown))
    for (ap, name, rec, prec), colour in zip(shown, colours, strict=True):
        if rec.size:
            # Start at (0, first precision) so a one-point curve is still a visible line.
            ax.plot(np.r_[0.0, rec], np.r_[prec[0], prec], color=colour, lw=1.4,
                    label=f"{name}  {100 * ap:.1f}")
        else:
            ax.plot([], [], color=colour, lw=1.4, label=f"{name}  {100 * ap:.1f} (no detections)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    m_area, m07 = _float(_get(result, "map_area")), _float(_get(result, "map_11pt"))
    iou = _float(_get(result, "iou_threshold", 0.5))
    title = f"Precision-recall per class at IoU {iou:g}"
    if not math.isnan(m_area):
        title += f"   mAP {100 * m_area:.1f} (area), {100 * m07:.1f} (VOC07 11-point)"
    ax.set_title(title, fontsize=10)
    if shown:
        ax.legend(title="class  AP (area)", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
                  title_fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no class has ground truth", ha="center", va="center", transform=ax.transAxes)
    if len(curves) > len(shown):
        ax.text(1.0, -0.09, f"{len(curves) - len(shown)} more classes not drawn", ha="right",
                transform=ax.transAxes, fontsize=8)
    return _finish(fig, path)


def plot_class_ap(result, path=None, *, figsize=(9.0, 6.0), dpi=100) -> Figure:
    """Each class's AP (area under the PR curve, in percent) as a horizontal bar, best at the top, with its
    number of ground-truth objects beside its name and the mAP as a dashed line.

    result: anything with `per_class` {name: {ap_area, npos, ...}} and `map_area`: a `VOCResult`, its
    `to_dict()`, the evaluation report beside the weights, or a model card's `val`. Classes without ground truth
    (AP nan / None) are left out and counted below the chart.
    """
    per_class = _get(result, "per_class")
    if per_class is None:
        raise TypeError(f"expected a VOC evaluation result with per_class AP, got {type(result).__name__}")
    bars = []
    for name, c in per_class.items():
        ap = _float(_get(c, "ap_area"))
        if not math.isnan(ap):
            bars.append((100 * ap, str(name), _get(c, "npos")))
    bars.sort(key=lambda t: t[0])  # barh draws bottom-up: the best ends on top
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot(1, 1, 1)
    if not bars:
        ax.text(0.5, 0.5, "no class has ground truth", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _finish(fig, path)
    y = np.arange(len(bars))
    ax.barh(y, [b[0] for b in bars], color="tab:blue", height=0.7)
    ax.set_yticks(y, [name if npos is None else f"{name} ({npos})" for _, name, npos in bars], fontsize=8)
    for k, (ap, _, _) in enumerate(bars):
        ax.text(ap + 0.8, k, f"{ap:.1f}", va="center", fontsize=8)
    m = _float(_get(result, "map_area"))
    if not math.isnan(m):
        ax.axvline(100 * m, color="0.25", ls="--", lw=1.2, label=f"mAP {100 * m:.1f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xlabel("AP (%, area under the PR curve)")
    ax.grid(axis="x", alpha=0.3)
    iou = _float(_get(result, "iou_threshold", 0.5))
    ax.set_title(f"AP per class at IoU {iou:g} (ground-truth objects in brackets)", fontsize=10)
    missing = len(per_class) - len(bars)
    if missing:
        ax.text(1.0, -0.1, f"{missing} class{'es' * (missing != 1)} without ground truth not drawn", ha="right",
                transform=ax.transAxes, fontsize=8)
    return _finish(fig, path)


def _class_colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if n > 10 else colormaps["tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


# ------------------------------------------------------------------------------------ training curves
def _column(rows, key) -> np.ndarray:
    return np.array([_float(r.get(key)) for r in rows], dtype=float)


def plot_training_curves(rows, path=None, *, figsize=(9.0, 7.0), dpi=100) -> Figure:
    """The training log as two panels sharing the step axis.

    rows: dicts as in the training log CSV (`step`, `epoch`, `elapsed_s`, `loss`, `loc_loss`, `conf_loss`,
    `lr`, and `val_map` / `val_map_area` on the rows where validation ran) — numbers or the strings
    `csv.DictReader` gives; missing or empty values are skipped.
    Top: the MultiBox loss and its two parts (localisation smooth-L1, confidence cross-entropy), log scale.
    Bottom: validation mAP (VOC07 11-point, and area when logged) with the learning rate on a twin axis.
    """
    rows = [dict(r) for r in rows]
    fig = _new_figure(figsize, dpi)
    ax_loss, ax_map = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    if not rows:
        ax_loss.text(0.5, 0.5, "no training log rows yet", ha="center", va="center", transform=ax_loss.transAxes)
        ax_map.set_axis_off()
        return _finish(fig, path)

    step = _column(rows, "step")
    if np.isnan(step).all():
        step = np.arange(len(rows), dtype=float)

    for key, label, style in (("loss", "total loss", dict(lw=1.8, color="black")),
                              ("loc_loss", "localisation (smooth L1)", dict(lw=1.2, color="tab:blue")),
                              ("conf_loss", "confidence (softmax CE)", dict(lw=1.2, color="tab:orange"))):
        y = _column(rows, key)
        ok = np.isfinite(y) & np.isfinite(step)
        if ok.any():
            ax_loss.plot(step[ok], y[ok], label=label, **style)
    finite = np.concatenate([_column(rows, k) for k in ("loss", "loc_loss", "conf_loss")])
    finite = finite[np.isfinite(finite)]
    if finite.size and (finite > 0).all():
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3, which="both")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(fontsize=8, loc="upper right")
    elapsed = _column(rows, "elapsed_s")
    title = "Training"
    if np.isfinite(elapsed).any():
        title += f" — {np.nanmax(elapsed) / 60:.1f} min"
    epoch = _column(rows, "epoch")
    if np.isfinite(epoch).any():
        title += f", epoch {np.nanmax(epoch):g}"
    ax_loss.set_title(title, fontsize=10)

    handles = []
    for key, label, style in (("val_map", "val mAP (VOC07 11-point)", dict(color="tab:green", marker="o")),
                              ("val_map_area", "val mAP (area)", dict(color="tab:olive", marker="s"))):
        y = _column(rows, key)
        ok = np.isfinite(y) & np.isfinite(step)
        if ok.any():
            handles += ax_map.plot(step[ok], 100 * y[ok], label=label, lw=1.4, ms=4, **style)
    ax_map.set_ylabel("val mAP (%)")
    ax_map.set_xlabel("step")
    ax_map.grid(alpha=0.3)
    if handles:
        ax_map.set_ylim(bottom=0)
    else:
        ax_map.text(0.5, 0.5, "no validation mAP logged yet", ha="center", va="center",
                    transform=ax_map.transAxes, color="0.4")
        ax_map.set_ylim(0, 100)

    lr = _column(rows, "lr")
    ok = np.isfinite(lr) & np.isfinite(step)
    if ok.any():
        ax_lr = ax_map.twinx()
        handles += ax_lr.plot(step[ok], lr[ok], color="tab:purple", lw=1.0, ls="--", label="learning rate")
        ax_lr.set_ylabel("learning rate", color="tab:purple")
        ax_lr.tick_params(axis="y", colors="tab:purple")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax_lr.set_ylim(bottom=0)
    if handles:
        ax_map.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize=8, loc="lower right")
    return _finish(fig, path)


def plot_run_comparison(runs, path=None, *, figsize=(9.0, 7.0), dpi=100, smooth: int = 10) -> Figure:
    """Several training runs side by side, against the epoch (runs of different batch sizes or lengths line up
    by how much data they saw): the training loss (a running mean of `smooth` log rows, as one row is noisy) on
    top, validation mAP (area when logged, else VOC07 11-point) below, one colour per run.

    runs: {name: rows} with rows as `plot_training_curves` takes them.
    """
    fig = _new_figure(figsize, dpi)
    ax_loss, ax_map = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    colours = _class_colours(max(len(runs), 1))
    mAP_kinds = set()
    for (name, rows), colour in zip(runs.items(), colours):
        rows = [dict(r) for r in rows]
        epoch = _column(rows, "epoch")
        loss = _column(rows, "loss")
        ok = np.isfinite(epoch) & np.isfinite(loss)
        if ok.any():
            k = max(1, min(int(smooth), int(ok.sum())))
            mean = np.convolve(loss[ok], np.ones(k) / k, mode="valid")
            ax_loss.plot(epoch[ok][k - 1:], mean, color=colour, lw=1.4, label=name)
        area, pt11 = _column(rows, "val_map_area"), _column(rows, "val_map")
        kind, y = ("area", area) if np.isfinite(area).any() else ("11-point", pt11)
        ok = np.isfinite(epoch) & np.isfinite(y)
        if ok.any():
            mAP_kinds.add(kind)
            ax_map.plot(epoch[ok], 100 * y[ok], color=colour, marker="o", ms=4, lw=1.4, label=name)
            ax_map.annotate(f"{100 * y[ok][-1]:.1f}", (epoch[ok][-1], 100 * y[ok][-1]), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=8, color=colour)
    ax_loss.set_ylabel(f"training loss (mean of {smooth} rows)" if smooth > 1 else "training loss")
    ax_loss.set_title("Runs compared", fontsize=10)
    ax_loss.grid(alpha=0.3)
    ax_map.set_ylabel(f"val mAP, {' / '.join(sorted(mAP_kinds)) or 'none logged'} (%)")
    ax_map.set_xlabel("epoch")
    ax_map.grid(alpha=0.3)
    for ax in (ax_loss, ax_map):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    return _finish(fig, path)


# ----------------------------------------------------------------------------------------------------- CLI
def read_pr_result(path: Path) -> dict:
    """The per-class curves of an evaluation report (`<stem>.eval.json`, curves under each class's "pr") or of
    `python -m train.evaluate --json` (under "voc"), in the form `plot_pr_curves` takes."""
    data = json.loads(path.read_text())
    result = data.get("voc", data)
    per_class = result.get("per_class")
    if not isinstance(per_class, dict):
        raise ValueError(f"{path}: no per-class results (an evaluation report, or the --json file of "
                         "train.evaluate / ssd-evaluate)")
    return {**result, "per_class": {k: {**c, **c.get("pr", {})} for k, c in per_class.items()}}


def _log_path(name: str) -> Path:
    path = Path(name)
    path = path / "log.csv" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _run_name(path: Path) -> str:
    """A run folder's name for its log.csv, else the file's stem (`weights` for weights.log.csv)."""
    return path.parent.name if path.name == "log.csv" else path.name.split(".")[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=program(f"python -m {__spec__.name}"),
                                description="Draw a training run's curves (loss and val mAP against the step), "
                                            "several runs compared (against the epoch), or an evaluation's "
                                            "precision-recall curves.")
    p.add_argument("file", nargs="+",
                   help="a run folder or its log.csv; several of them to compare the runs; or an evaluation "
                        "report / train.evaluate --json")
    p.add_argument("--out", help="the PNG (default: a run folder's curves.png; compare.png for several runs; "
                                 "<stem>_curves.png or <stem>_pr.png in the current folder for another file)")
    args = p.parse_args(argv)
    try:
        paths = [_log_path(name) for name in args.file]
        if len(paths) > 1:
            if any(path.suffix != ".csv" for path in paths):
                raise ValueError("several files are compared as training runs: give run folders or log.csv files")
            names = [_run_name(path) for path in paths]
            if len(set(names)) < len(names):
                names = [str(path.parent if path.name == "log.csv" else path) for path in paths]
            out = Path(args.out) if args.out else Path("compare.png")
            plot_run_comparison({name: read_log(path) for name, path in zip(names, paths)}, out)
        elif (path := paths[0]).suffix == ".csv":
            # A run folder's log gets its curves beside it; any other log (weights' <stem>.log.csv) here.
            default = path.with_name("curves.png") if path.name == "log.csv" else Path(f"{_run_name(path)}_curves.png")
            out = Path(args.out) if args.out else default
            plot_training_curves(read_log(path), out)
        elif path.suffix == ".json":
            out = Path(args.out) if args.out else Path(f"{_run_name(path)}_pr.png")  # not beside installed weights
            plot_pr_curves(read_pr_result(path), path=out)
        else:
            raise ValueError(f"{path}: expected a training log (.csv) or an evaluation (.json)")
    except (OSError, ValueError, KeyError) as e:
        return error_exit(e)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
