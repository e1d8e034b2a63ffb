"""Training's data, found from the folder as it is given: VOC, COCO and YOLO layouts of the same photos read
the same objects, and a folder that is none of them gets a message that says what each format needs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.own_data import CLASSES, photos, write_coco, write_voc, write_yolo
from train.datasets import DatasetError, YOLODataset
from train.sources import find_data


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
