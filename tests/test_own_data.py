"""Training's data, found from the folder as it is given: VOC, COCO and YOLO layouts of the same photos read
the same objects, and a folder that is none of them gets a message that says what each format needs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.own_data import CLASSES, photos, write_coco, write_voc, write_yolo
from train.datasets import DatasetError
from train.sources import find_data
from train.yolo_labels import YOLODataset


@pytest.fixture(scope="module")
def items():
    return photos(6)


def objects(source):
    """Per image: sorted (class name, rounded box) pairs."""
    out = []
    for i in range(len(source)):
        boxes, labels, _, _, _ = source.annotation(i)
        out.append(sorted((source.classes[k - 1], tuple(np.round(b).astype(int))) for b, k in zip(boxes, labels)))
    return out


def drawn(items):
    return [sorted((n, tuple(b)) for b, n in zip(boxes, names)) for _, boxes, names in items]


@pytest.mark.parametrize("layout", ["voc", "voc-no-sets", "coco", "yolo", "yolo-ultralytics"])
def test_every_layout_reads_the_boxes_drawn(tmp_path, items, layout):
    if layout.startswith("voc"):
        source, found = find_data(write_voc(tmp_path / "voc", items, image_sets=layout == "voc"), classes=None)
    elif layout == "coco":
        images, ann = write_coco(tmp_path / "coco", items)
        source, found = find_data(images, ann_file=ann)
    else:
        source, found = find_data(write_yolo(tmp_path / "yolo", items, ultralytics=layout.endswith("ultralytics")))
    assert found.startswith(layout.split("-")[0].upper())
    assert set(source.classes) == set(CLASSES)
    assert objects(source) == drawn(items)


def test_a_folder_of_no_known_format_names_what_each_needs(tmp_path, items):
    _, ann = write_coco(tmp_path, items)  # the images and a JSON, but the JSON not given
    with pytest.raises(DatasetError) as e:
        find_data(tmp_path)
    message = str(e.value)
    assert "VOC:" in message and "YOLO:" in message and "--ann-file" in message and ann.name in message


def test_yolo_lines_that_are_not_boxes_are_refused_with_their_place(tmp_path, items):
    root = write_yolo(tmp_path, items[:1])
    label = root / "labels" / "photo_0.txt"
    for text, says in (("0 0.5 0.5 0.2\n", "expected 5 fields"), ("7 0.5 0.5 0.2 0.2\n", "class index 7"),
                       ("0 0.5 0.5 3 0.2\n", "fractions of the image"), ("a b c d e\n", "expected '<class>")):
        label.write_text(text)
        with pytest.raises(DatasetError, match=says) as e:
            YOLODataset(root / "images", root / "labels", root / "classes.txt")
        assert "photo_0.txt:1" in str(e.value)


def parse(*argv):
    from train.__main__ import build_parser

    return build_parser().parse_args([*argv, "--out", "runs/x"])


def test_the_default_recipe_fine_tunes_the_shipped_network_at_a_size_for_the_data():
    from ssd.detector import DEFAULT_WEIGHTS
    from train.__main__ import DEFAULT_CONFIG, sized_recipe

    args = parse("--data", "photos")
    assert args.config == DEFAULT_CONFIG == "SSD384_LITE0_VOC"
    small = sized_recipe(args, 40, args.config)
    assert (small.batch_size, small.lr, small.max_steps, small.warmup_steps) == (4, 0.001, 300, 30)
    assert small.init_weights == str(DEFAULT_WEIGHTS) and small.weight_decay == 4e-5
    large = sized_recipe(args, 3761, args.config)
    assert (large.batch_size, large.lr, large.max_steps, large.warmup_steps) == (16, 0.004, 236 * 30, 200)
    given = sized_recipe(parse("--data", "p", "--batch-size", "2", "--lr", "0.01", "--epochs", "2",
                               "--init-weights", "none"), 40, args.config)
    assert (given.batch_size, given.lr, given.max_steps, given.init_weights) == (2, 0.01, 40, None)
    paper = sized_recipe(parse("--data", "p", "--config", "SSD300_VOC"), 40, "SSD300_VOC")
    assert paper.init_weights is None and paper.lr == 0.015 * 4 / 16 and paper.weight_decay == 5e-4


def test_the_length_is_given_once():
    from train.__main__ import UsageError, sized_recipe

    with pytest.raises(UsageError, match="--epochs or --max-steps"):
        sized_recipe(parse("--data", "p", "--epochs", "3", "--max-steps", "10"), 40, "SSD384_LITE0_VOC")


def test_without_validation_data_a_seeded_tenth_is_held_out(tmp_path, items, capsys):
    from train.__main__ import load_sources

    root = write_yolo(tmp_path / "yolo", photos(20, seed=3))
    train, val, desc = load_sources(parse("--data", str(root)))
    assert (len(train), len(val)) == (18, 2) and not set(train.ids) & set(val.ids)
    assert "held out" in capsys.readouterr().out and "val: 2 held-out images" in desc
    again, val_again, _ = load_sources(parse("--data", str(root)))
    assert val_again.ids == val.ids  # seeded: a resumed run measures on the same images
    everything, none, _ = load_sources(parse("--data", str(root), "--holdout", "0"))
    assert len(everything) == 20 and none is None


@pytest.mark.parametrize("layout", ["voc", "coco", "yolo"])
def test_one_command_reads_each_format_as_given(tmp_path, items, layout, capsys):
    from train.__main__ import load_sources

    if layout == "voc":
        argv = ["--data", str(write_voc(tmp_path / "voc", items))]
    elif layout == "coco":
        images, ann = write_coco(tmp_path / "coco", items)
        argv = ["--data", str(images), "--ann-file", str(ann)]
    else:
        argv = ["--data", str(write_yolo(tmp_path / "yolo", items))]
    train, val, _ = load_sources(parse(*argv))
    assert sorted(train.classes) == sorted(CLASSES) and len(train) + len(val) == len(items)
    assert f"data: {layout.upper()}" in capsys.readouterr().out
