"""Training curves and precision-recall curves: PNGs of the asked size that show the logged numbers."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ssd.evaluation.voc import evaluate_voc
from visualize.plots import plot_pr_curves, plot_run_comparison, plot_training_curves


def _pyplot_figures():
    import matplotlib.pyplot as plt

    return list(plt.get_fignums())


def _voc_result():
    # One image, class "cat": TP, FP (duplicate), TP against 3 boxes -> recall 1/3 1/3 2/3,
    # precision 1 1/2 2/3. Class "dog": no ground truth (not drawn). Class "owl": one box, found.
    gt = [(np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 50, 20, 70]], float),
           np.array([1, 1, 1, 3]))]
    dets = [(np.array([[0, 0, 10, 10], [0, 0, 10, 11], [20, 0, 30, 10], [0, 50, 20, 70], [5, 5, 9, 9]], float),
             np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 1, 1, 3, 2]))]
    return evaluate_voc(dets, gt, 3, class_names=("cat", "dog", "owl"))


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_pr_curves_png_has_the_asked_size_and_draws_each_class_curve(tmp_path):
    before = _pyplot_figures()
    path = tmp_path / "sub" / "pr.png"
    fig = plot_pr_curves(_voc_result(), None, path, figsize=(6, 4), dpi=50)
    assert isinstance(fig, Figure)
    assert path.stat().st_size > 2000
    assert _png_size(path) == (300, 200)
    assert _pyplot_figures() == before  # nothing registered with pyplot
    (ax,) = fig.axes
    lines = {line.get_label().split()[0]: line for line in ax.get_lines()}
    assert set(lines) == {"cat", "owl"}  # "dog" has no ground truth
    # The drawn cat curve is the hand-worked one, starting at recall 0 with its first precision.
    np.testing.assert_allclose(lines["cat"].get_xdata(), [0, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(lines["cat"].get_ydata(), [1, 1, 1 / 2, 2 / 3])
    # The legend gives each class's area AP in percent: cat 1/3*1 + 1/3*2/3 = 5/9 -> 55.6, owl 100.0.
    assert lines["cat"].get_label() == "cat  55.6"
    assert lines["owl"].get_label() == "owl  100.0"


def test_pr_curves_from_the_json_form_with_custom_names():
    result = _voc_result().to_dict(curves=True)
    fig = plot_pr_curves(result, ["Cat", "Dog", "Owl"])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["Owl  100.0", "Cat  55.6"]  # best first
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        plot_pr_curves(result, ["Cat", "Dog"])


def _log_rows():
    rows = []
    for step in range(0, 500, 50):
        row = {"step": step, "epoch": step / 100, "elapsed_s": step * 0.2, "loss": 12 / (1 + step / 100),
               "loc_loss": 3 / (1 + step / 100), "conf_loss": 9 / (1 + step / 100), "lr": min(1e-3, 1e-5 * step)}
        if step in (100, 300):
            row["val_map"] = step / 1000
        rows.append(row)
    return rows


def test_training_curves_from_a_csv_log_with_val_map_on_some_rows(tmp_path):
    # As the training log CSV reads back: all strings, val_map empty where validation did not run.
    buf = io.StringIO()
    fields = ["step", "epoch", "elapsed_s", "img_per_s", "loss", "loc_loss", "conf_loss", "lr", "val_map"]
    writer = csv.DictWriter(buf, fields)
    writer.writeheader()
    writer.writerows(_log_rows())
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows[0]["val_map"] == ""

    before = _pyplot_figures()
    path = tmp_path / "curves.png"
    fig = plot_training_curves(rows, path, figsize=(8, 6), dpi=40)
    assert _png_size(path) == (320, 240)
    assert path.stat().st_size > 2000
    assert _pyplot_figures() == before

    ax_loss, ax_map, ax_lr = fig.axes
    losses = {line.get_label(): line for line in ax_loss.get_lines()}
    assert len(losses) == 3
    total = losses["total loss"]
    np.testing.assert_allclose(total.get_xdata(), np.arange(0, 500, 50))
    np.testing.assert_allclose(total.get_ydata(), [12 / (1 + s / 100) for s in range(0, 500, 50)])
    # Validation points only where they were logged, in percent.
    (val,) = ax_map.get_lines()
    np.testing.assert_allclose(val.get_xdata(), [100, 300])
    np.testing.assert_allclose(val.get_ydata(), [10, 30])
    (lr,) = ax_lr.get_lines()
    assert max(lr.get_ydata()) == pytest.approx(1e-3)


def test_training_curves_before_any_validation_or_any_rows():
    fig = plot_training_curves([r for r in _log_rows() if "val_map" not in r])
    assert fig.axes[1].get_lines() == []
    assert "no validation" in " ".join(t.get_text() for t in fig.axes[1].texts)
    fig = plot_training_curves([])
    assert isinstance(fig, Figure)


def test_class_ap_bars_best_on_top_with_the_map_line(tmp_path):
    from visualize.plots import plot_class_ap

    before = _pyplot_figures()
    path = tmp_path / "ap.png"
    fig = plot_class_ap(_voc_result(), path, figsize=(6, 4), dpi=50)
    assert _png_size(path) == (300, 200)
    assert _pyplot_figures() == before
    (ax,) = fig.axes
    # cat 5/9 and owl 1 (see _voc_result); dog has no ground truth and gets no bar. barh draws bottom-up.
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(widths, [100 * 5 / 9, 100])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat (3)", "owl (1)"]
    (line,) = ax.get_lines()
    assert line.get_xdata()[0] == pytest.approx(100 * (5 / 9 + 1) / 2)
    assert line.get_label() == "mAP 77.8"
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "55.6" in texts and "100.0" in texts and "1 class without ground truth not drawn" in texts


def test_class_ap_from_a_model_cards_val_and_from_nothing():
    from visualize.plots import plot_class_ap

    val = {"map_area": 0.5, "per_class": {"cat": {"ap_area": 0.25, "npos": 4}, "dog": {"ap_area": 0.75, "npos": 2}}}
    (ax,) = plot_class_ap(val).axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat (4)", "dog (2)"]
    fig = plot_class_ap({"map_area": None, "per_class": {"cat": {"ap_area": None, "npos": 0}}})
    assert "no class has ground truth" in " ".join(t.get_text() for t in fig.axes[0].texts)
    with pytest.raises(TypeError, match="per_class"):
        plot_class_ap({"map_area": 0.5})


def test_the_command_line_draws_a_runs_log_and_an_evaluation_report(tmp_path, capsys):
    """Training writes log.csv and no picture; `python -m visualize.plots` draws it, and the PR curves of the
    evaluation report beside the shipped weights."""
    from ssd.detector import DEFAULT_WEIGHTS
    from ssd.evaluation.report import report_path
    from train.log import write_log
    from visualize.plots import main

    write_log(tmp_path, _log_rows())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]
    assert main([str(tmp_path)]) == 0 and _png_size(tmp_path / "curves.png") == (900, 700)
    out = tmp_path / "pr.png"
    assert main([str(report_path(DEFAULT_WEIGHTS)), "--out", str(out)]) == 0 and _png_size(out) == (900, 600)
    (tmp_path / "log.txt").write_text("step\n")
    assert main([str(tmp_path / "log.txt")]) == 2 and "expected a training log" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2 and "no such file" in capsys.readouterr().err


def test_runs_compared_line_up_by_epoch_with_their_last_map_written_beside_it():
    """Two runs of different lengths and batch sizes: one line each in both panels, against the epoch; the mAP
    panel uses the area mAP when a run logs it and names which kind it shows."""
    short = _log_rows()  # 11-point only, epochs 0 to 4.5
    long = [{**r, "epoch": r["step"] / 50, "val_map_area": r.get("val_map") and r["val_map"] + 0.1}
            for r in _log_rows()]
    fig = plot_run_comparison({"short": short, "long": long}, smooth=3)
    ax_loss, ax_map = fig.axes
    assert [line.get_label() for line in ax_loss.get_lines()] == ["short", "long"]
    # The running mean of 3 rows starts at the third row's epoch.
    x, y = ax_loss.get_lines()[0].get_data()
    assert x[0] == pytest.approx(1.0) and y[0] == pytest.approx(np.mean([12 / (1 + s / 100) for s in (0, 50, 100)]))
    (xs, ys), (xl, yl) = (line.get_data() for line in ax_map.get_lines())
    assert list(xs) == [1.0, 3.0] and list(ys) == pytest.approx([10.0, 30.0])  # 11-point
    assert list(xl) == [2.0, 6.0] and list(yl) == pytest.approx([20.0, 40.0])  # area
    assert {t.get_text() for t in ax_map.texts} == {"30.0", "40.0"}
    assert ax_map.get_ylabel() == "val mAP, 11-point / area (%)" and ax_map.get_xlabel() == "epoch"


def test_the_command_line_compares_several_runs(tmp_path, capsys):
    from ssd.detector import DEFAULT_WEIGHTS
    from ssd.evaluation.report import report_path
    from train.log import write_log
    from visualize.plots import main

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_log(tmp_path / name, _log_rows())
    out = tmp_path / "runs.png"
    assert main([str(tmp_path / "a"), str(tmp_path / "b" / "log.csv"), "--out", str(out)]) == 0
    assert _png_size(out) == (900, 700) and f"wrote {out}" in capsys.readouterr().out
    assert main([str(tmp_path / "a"), str(report_path(DEFAULT_WEIGHTS))]) == 2
    assert "compared as training runs" in capsys.readouterr().err
