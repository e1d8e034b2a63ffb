"""Datasets: VOC and COCO ground truth read exactly, in the documented pixel convention, and bad data named.

Pixel convention under test: 0-based continuous xyxy; VOC's 1-based inclusive (xmin, ymin, xmax, ymax)
becomes (xmin - 1, ymin - 1, xmax, ymax); COCO's [x, y, w, h] becomes (x, y, x + w, y + h).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ssd.augment import Resize
from tests.shapes import COCO_CATEGORY_IDS, TRUTH_FILE, make_shapes_coco, make_shapes_voc
from train.datasets import COCODataset, DatasetError, DetectionDataset, VOCDataset, collate


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_voc")
    voc_dir = make_shapes_voc(root, n_train=6, n_val=4, size=None, seed=3)
    return voc_dir, json.loads((root / TRUTH_FILE).read_text())


def _copy_voc(src, dst):
    shutil.copytree(src, dst / "VOC2007")
    return dst / "VOC2007"


def _xml(objects, width=20, height=10, size=True):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    sz = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>a.jpg</filename>{sz}{objs}</annotation>"


def _one_image_voc(tmp_path, xml_text, width=20, height=10):
    """A VOC folder with a single image 'a' and the given annotation text."""
    voc = tmp_path / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    Image.new("RGB", (width, height), (10, 20, 30)).save(voc / "JPEGImages" / "a.jpg")
    (voc / "Annotations" / "a.xml").write_text(xml_text)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("a\n")
    return voc


# ------------------------------------------------------------------------------------------------- VOC
def test_voc_reads_the_generators_boxes_and_classes(voc):
    voc_dir, truth = voc
    ds = VOCDataset(voc_dir, "trainval", classes=None)
    assert ds.classes == tuple(sorted(truth["classes"]))
    assert ds.ids == sorted(truth["images"])
    for i, image_id in enumerate(ds.ids):
        t = truth["images"][image_id]
        boxes, labels, difficult, w, h = ds.annotation(i)
        assert (w, h) == (t["width"], t["height"])
        np.testing.assert_array_equal(boxes, np.array(t["boxes"], np.float32))
        assert [ds.classes[k - 1] for k in labels] == t["names"]
        assert boxes.dtype == np.float32 and labels.dtype == np.int64 and not difficult.any()
        s = ds.load(i)
        assert s.image.shape == (t["height"], t["width"], 3) and s.image.dtype == np.uint8
        assert s.image_id == image_id
        np.testing.assert_array_equal(s.boxes, boxes)


def test_voc_image_sets_and_explicit_class_order(voc):
    voc_dir, truth = voc
    train = VOCDataset(voc_dir, "train", classes=("triangle", "square", "circle"))
    val = VOCDataset(voc_dir, "val", classes=("triangle", "square", "circle"))
    assert len(train) == 6 and len(val) == 4 and not set(train.ids) & set(val.ids)
    _, labels, *_ = train.annotation(0)
    names = truth["images"][train.ids[0]]["names"]
    assert labels.tolist() == [{"triangle": 1, "square": 2, "circle": 3}[n] for n in names]


def test_voc_one_based_inclusive_becomes_zero_based_xyxy(tmp_path):
    # a box over pixel columns 0..9 and rows 2..4 (0-based) is xmin=1, xmax=10, ymin=3, ymax=5 in VOC;
    # the whole 20x10 image is xmin=1, ymin=1, xmax=20, ymax=10.
    voc = _one_image_voc(tmp_path, _xml([("cat", (1, 3, 10, 5), 0), ("dog", (1, 1, 20, 10), 0)]))
    boxes, labels, _, w, h = VOCDataset(voc).annotation(0)
    assert boxes.tolist() == [[0, 2, 10, 5], [0, 0, 20, 10]]
    assert labels.tolist() == [8, 12]  # cat, dog in ssd.VOC_CLASSES (1-based)
    assert (w, h) == (20, 10)


def test_voc_single_pixel_box_is_valid(tmp_path):
    voc = _one_image_voc(tmp_path, _xml([("cat", (5, 5, 5, 5), 0)]))
    assert VOCDataset(voc).annotation(0)[0].tolist() == [[4, 4, 5, 5]]


def test_voc_difficult_dropped_by_default_and_flagged_when_kept(tmp_path):
    voc = _one_image_voc(tmp_path, _xml([("cat", (1, 1, 5, 5), 0), ("dog", (6, 2, 9, 8), 1)]))
    boxes, labels, difficult, *_ = VOCDataset(voc).annotation(0)
    assert labels.tolist() == [8] and boxes.tolist() == [[0, 0, 5, 5]] and difficult.tolist() == [False]
    boxes, labels, difficult, *_ = VOCDataset(voc, keep_difficult=True).annotation(0)
    assert labels.tolist() == [8, 12] and difficult.tolist() == [False, True]
    assert boxes.tolist() == [[0, 0, 5, 5], [5, 1, 9, 8]]


def test_annotation_does_not_need_the_image_but_load_names_it(voc, tmp_path):
    voc_dir = _copy_voc(voc[0], tmp_path)
    ds = VOCDataset(voc_dir, "val", classes=None)
    (voc_dir / "JPEGImages" / f"{ds.ids[0]}.jpg").unlink()
    assert len(ds.annotation(0)[0]) >= 1
    with pytest.raises(DatasetError, match=f"{ds.ids[0]}.jpg"):
        ds.load(0)


BAD_XML = {
    "unparsable XML": ("<annotation><size>", "unparsable XML"),
    "missing size": (_xml([("cat", (1, 1, 5, 5), 0)], size=False), "<size>"),
    "missing xmax": (_xml([("cat", (1, 1, 5, 5), 0)]).replace("<xmax>5</xmax>", ""), "<xmax>"),
    "missing bndbox": ("<annotation><size><width>20</width><height>10</height></size>"
                       "<object><name>cat</name></object></annotation>", "<bndbox>"),
    "box outside": (_xml([("cat", (1, 1, 21, 5), 0)]), "outside the 20x10 image"),
    "x2 <= x1": (_xml([("cat", (8, 1, 6, 5), 0)]), "x2 <= x1"),
    "xmin nan": (_xml([("cat", ("nan", 1, 6, 5), 0)]), "bndbox><xmin> is 'nan', not a finite number"),
    "ymax inf": (_xml([("cat", (1, 1, 6, "inf"), 0)]), "bndbox><ymax> is 'inf', not a finite number"),
    "unknown class": (_xml([("kitten", (1, 1, 5, 5), 0)]), "unknown class name 'kitten'.*aeroplane.*--classes"),
    "difficult yes": (_xml([("cat", (1, 1, 5, 5), "yes")]), "object #0 \\('cat'\\) has <difficult>yes</difficult>"),
}


@pytest.mark.parametrize("case", sorted(BAD_XML))
def test_voc_malformed_annotation_names_file_and_problem(tmp_path, case):
    text, problem = BAD_XML[case]
    voc = _one_image_voc(tmp_path, text)
    with pytest.raises(DatasetError, match=problem) as err:
        VOCDataset(voc)
    assert str(voc / "Annotations" / "a.xml") in str(err.value)


def test_voc_missing_image_file_is_named(tmp_path):
    voc = _one_image_voc(tmp_path, _xml([("cat", (1, 1, 5, 5), 0)]))
    (voc / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="image file missing") as err:
        VOCDataset(voc)
    assert "a.jpg" in str(err.value)


def test_voc_missing_image_set_is_named(tmp_path):
    voc = _one_image_voc(tmp_path, _xml([("cat", (1, 1, 5, 5), 0)]))
    with pytest.raises(DatasetError, match="image set file missing") as err:
        VOCDataset(voc, image_set="test")
    assert "test.txt" in str(err.value) and "trainval" in str(err.value)


def test_voc_image_size_disagreeing_with_annotation_is_named(tmp_path):
    voc = _one_image_voc(tmp_path, _xml([("cat", (1, 1, 5, 5), 0)]))
    Image.new("RGB", (30, 10)).save(voc / "JPEGImages" / "a.jpg")
    ds = VOCDataset(voc)
    with pytest.raises(DatasetError, match="30x10.*20x10") as err:
        ds.load(0)
    assert "a.jpg" in str(err.value)


# ------------------------------------------------------------------------------------------------ COCO
@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    image_dir, ann_file = make_shapes_coco(tmp_path_factory.mktemp("shapes_coco"), n=8, seed=1)
    return image_dir, ann_file, json.loads(ann_file.read_text())


def test_coco_labels_follow_category_id_order_and_crowd_is_excluded(coco):
    image_dir, ann_file, raw = coco
    ds = COCODataset(image_dir, ann_file)
    # ids 3, 7, 9 are square, circle, triangle -> labels 1, 2, 3 (not alphabetical, not the raw ids)
    assert ds.classes == ("square", "circle", "triangle")
    label_of_id = {3: 1, 7: 2, 9: 3}
    assert len(ds) == len(raw["images"]) == 8
    crowd_seen = 0
    for i, image_id in enumerate(ds.ids):
        anns = [a for a in raw["annotations"] if str(a["image_id"]) == image_id]
        crowd_seen += sum(a["iscrowd"] for a in anns)
        plain = [a for a in anns if not a["iscrowd"]]
        boxes, labels, difficult, w, h = ds.annotation(i)
        expect = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in plain)]
        np.testing.assert_allclose(boxes, np.array(expect, np.float32).reshape(-1, 4))
        assert labels.tolist() == [label_of_id[a["category_id"]] for a in plain]
        info = next(im for im in raw["images"] if str(im["id"]) == image_id)
        assert (w, h) == (info["width"], info["height"])
    assert crowd_seen == 1
    assert len(ds.annotation(len(ds) - 1)[0]) == 0  # the image without objects is kept
    s = ds.load(0)
    assert s.image.shape[:2] == (raw["images"][0]["height"], raw["images"][0]["width"])


def test_coco_explicit_classes_reorder_labels(coco):
    image_dir, ann_file, raw = coco
    ds = COCODataset(image_dir, ann_file, classes=("circle", "square", "triangle"))
    by_name = {v: k for k, v in COCO_CATEGORY_IDS.items()}
    plain = [a for a in raw["annotations"] if a["image_id"] == raw["images"][1]["id"] and not a["iscrowd"]]
    assert ds.annotation(1)[1].tolist() == [("circle", "square", "triangle").index(by_name[a["category_id"]]) + 1
                                            for a in plain]


def test_coco_bbox_that_is_not_finite_is_named(coco, tmp_path):
    image_dir, ann_file, raw = coco
    for value in ("NaN", "Infinity"):
        raw2 = json.loads(json.dumps(raw))
        raw2["annotations"][0]["bbox"][0] = value  # written as the bare literal Python's json reads
        bad = tmp_path / f"{value}.json"
        bad.write_text(json.dumps(raw2).replace(f'"{value}"', value))
        with pytest.raises(DatasetError, match=f"annotation id {raw2['annotations'][0]['id']} .*4 numbers.*all finite"):
            COCODataset(image_dir, bad)


def test_coco_bad_json_and_missing_image_name_the_file(coco, tmp_path):
    image_dir, ann_file, raw = coco
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match="bad.json"):
        COCODataset(image_dir, bad)
    raw2 = json.loads(json.dumps(raw))
    raw2["images"][2]["file_name"] = "nowhere.jpg"
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(raw2))
    with pytest.raises(DatasetError, match="nowhere.jpg.*image file missing"):
        COCODataset(image_dir, moved)
    with pytest.raises(DatasetError, match="missing.json"):
        COCODataset(image_dir, tmp_path / "missing.json")
    for bbox in (None, ["1", "2", "3", "4"], [1, 2, 3]):
        raw3 = json.loads(json.dumps(raw))
        raw3["annotations"][0]["bbox"] = bbox
        odd = tmp_path / "odd.json"
        odd.write_text(json.dumps(raw3))
        with pytest.raises(DatasetError, match=r"odd.json: annotation id .* has bbox .*4 numbers") as err:
            COCODataset(image_dir, odd)
        assert repr(bbox) in str(err.value)


# ------------------------------------------------------------------------------------------- torch side
def test_detection_dataset_and_collate(voc):
    voc_dir, truth = voc
    src = VOCDataset(voc_dir, "val", classes=None)
    ds = DetectionDataset(src, Resize(64))
    image, boxes, labels = ds[1]
    t = truth["images"][src.ids[1]]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    w, h = t["width"], t["height"]
    expect = torch.tensor(t["boxes"]) / torch.tensor([w, h, w, h])
    torch.testing.assert_close(boxes, expect.float())
    assert labels.dtype == torch.int64 and len(labels) == len(t["names"])
    images, boxes_list, labels_list = collate([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    assert [len(b) for b in boxes_list] == [len(truth["images"][src.ids[k]]["boxes"]) for k in range(3)]
    assert all(lab.dtype == torch.int64 for lab in labels_list)
