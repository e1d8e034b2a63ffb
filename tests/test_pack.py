"""Training pack: one file that gives back the same dataset, resized (never enlarged), boxes on the same pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssd.augment import Resize
from tests.shapes import make_shapes_coco, make_shapes_voc
from train.datasets import COCODataset, DatasetError, DetectionDataset, Sample, VOCDataset, collate
from train.pack import _HEADER, PackDataset, build_pack, main

MAX_SIDE = 120


@pytest.fixture(scope="module")
def voc_and_pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("pack")
    voc_dir = make_shapes_voc(root, n_train=8, n_val=4, size=None, seed=5)  # sizes 96-200 x 80-160
    out = root / "shapes.pack"
    summary = main(["--data-root", str(voc_dir), "--image-set", "trainval", "--classes", "auto",
                    "--out", str(out), "--max-side", str(MAX_SIDE), "--quality", "90", "--workers", "2"])
    return VOCDataset(voc_dir, "trainval", classes=None), out, summary


def test_pack_round_trip_matches_the_dataset_within_resize_rounding(voc_and_pack):
    direct, out, summary = voc_and_pack
    pack = PackDataset(out)
    assert summary["images"] == len(direct) == len(pack) == 12
    assert pack.ids == direct.ids and pack.classes == direct.classes
    assert out.stat().st_size == summary["bytes"]
    assert pack.info["max_side"] == MAX_SIDE and pack.info["source"]["format"] == "voc"
    # What the model card says the weights were trained on.
    assert pack.describe() == f"VOC image set trainval, longer side at most {MAX_SIDE} px, JPEG quality 90"
    # The index records each source image's size too (the file format's orig_width / orig_height).
    with open(out, "rb") as f:
        _, offset, length = _HEADER.unpack(f.read(_HEADER.size))
        f.seek(offset)
        index = json.loads(f.read(length))
    assert [(r["orig_width"], r["orig_height"]) for r in index["images"]] == [
        tuple(direct.annotation(i)[3:5]) for i in range(len(direct))]
    enlarged_none = shrunk = 0
    for i in range(len(pack)):
        b0, l0, _, w, h = direct.annotation(i)
        b, lab, _, pw, ph = pack.annotation(i)
        scale = min(1.0, MAX_SIDE / max(w, h))  # by hand: longer side to MAX_SIDE, never enlarge
        assert (pw, ph) == (round(w * scale), round(h * scale))
        shrunk += scale < 1
        enlarged_none += scale == 1
        np.testing.assert_allclose(b, b0 * np.array([pw / w, ph / h, pw / w, ph / h]), atol=1e-3)
        np.testing.assert_array_equal(lab, l0)
        s = pack.load(i)
        assert s.image.shape == (ph, pw, 3) and s.image.dtype == np.uint8 and s.image_id == direct.ids[i]
        ref = np.asarray(Image.fromarray(direct.load(i).image).resize((pw, ph), Image.LANCZOS), np.float32)
        # the same picture up to JPEG re-encoding, and clearly closer than the reference shifted by one pixel
        got = s.image.astype(np.float32)
        err = np.abs(got - ref).mean()
        err_dx = np.abs(got[:, 1:] - ref[:, :-1]).mean()
        err_dy = np.abs(got[1:] - ref[:-1]).mean()
        assert err < 6 and err < 0.8 * min(err_dx, err_dy)
    assert shrunk and enlarged_none  # the generated sizes exercise both cases


def test_pack_works_in_dataloader_workers(voc_and_pack):
    direct, out, _ = voc_and_pack
    pack = PackDataset(out)
    pack.load(0)  # open the file in the parent first: forked workers must not share its descriptor
    ds = DetectionDataset(pack, Resize(48))
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    images, boxes, labels = zip(*loader, strict=True)
    images = torch.cat(images)
    boxes, labels = [b for bs in boxes for b in bs], [lab for ls in labels for lab in ls]
    assert images.shape == (12, 3, 48, 48)
    for i in range(12):
        img, b, lab = ds[i]
        assert torch.equal(images[i], img) and torch.equal(boxes[i], b) and torch.equal(labels[i], lab)
        b0, _, _, w, h = direct.annotation(i)
        np.testing.assert_allclose(b.numpy(), b0 / np.array([w, h, w, h]), atol=1e-4)


class _FlaggedSource:
    """Two solid images; the second object of each is 'difficult'."""

    classes = ("a", "b")

    def __len__(self):
        return 2

    def load(self, i):
        image = np.full((50, 400, 3), 60 * (i + 1), np.uint8)
        return Sample(image, np.array([[0, 0, 100, 50], [200, 10, 400, 40]], np.float32), np.array([1, 2]),
                      np.array([False, True]), f"img{i}")


def test_difficult_objects_are_stored_and_dropped_unless_kept(tmp_path):
    out = tmp_path / "f.pack"
    build_pack(_FlaggedSource(), out, max_side=200, quality=90, workers=1, progress=False)
    pack = PackDataset(out)
    boxes, labels, difficult, w, h = pack.annotation(1)
    assert (w, h) == (200, 25) and labels.tolist() == [1] and boxes.tolist() == [[0, 0, 50, 25]]
    boxes, labels, difficult, *_ = PackDataset(out, keep_difficult=True).annotation(1)
    assert labels.tolist() == [1, 2] and difficult.tolist() == [False, True]
    assert boxes.tolist() == [[0, 0, 50, 25], [100, 5, 200, 20]]
    assert abs(int(pack.load(1).image.mean()) - 120) <= 1


def test_coco_pack_keeps_label_mapping(tmp_path):
    image_dir, ann_file = make_shapes_coco(tmp_path, n=5, seed=2)
    out = tmp_path / "coco.pack"
    main(["--format", "coco", "--data-root", str(image_dir), "--ann-file", str(ann_file), "--out", str(out),
          "--max-side", "1000", "--workers", "1"])
    direct, pack = COCODataset(image_dir, ann_file), PackDataset(out)
    assert pack.classes == direct.classes == ("square", "circle", "triangle")
    for i in range(5):
        b0, l0, _, w, h = direct.annotation(i)
        b, lab, _, pw, ph = pack.annotation(i)
        assert (pw, ph) == (w, h)  # max side 1000: nothing is enlarged
        np.testing.assert_allclose(b, b0, atol=1e-3)
        assert lab.tolist() == l0.tolist()
    assert len(pack.annotation(4)[0]) == 0
    assert pack.describe() == f"COCO {ann_file.name}, longer side at most 1000 px, JPEG quality 62"


def test_bad_pack_files_are_named(tmp_path, voc_and_pack):
    not_pack = tmp_path / "x.pack"
    not_pack.write_bytes(b"PK\x03\x04 something else entirely")
    with pytest.raises(DatasetError, match="x.pack.*not a training pack"):
        PackDataset(not_pack)
    cut = tmp_path / "cut.pack"
    cut.write_bytes(voc_and_pack[1].read_bytes()[:-100])
    with pytest.raises(DatasetError, match="cut.pack.*truncated"):
        PackDataset(cut)
    with pytest.raises(DatasetError, match="missing.pack"):
        PackDataset(tmp_path / "missing.pack")


def test_rebuilt_pack_is_not_read_with_stale_offsets(tmp_path):
    out = tmp_path / "f.pack"
    build_pack(_FlaggedSource(), out, max_side=100, quality=90, workers=1, progress=False)
    pack = PackDataset(out)  # index read, file not yet opened for images (as in a fresh DataLoader worker)
    build_pack(_FlaggedSource(), out, max_side=300, quality=90, workers=1, progress=False)
    with pytest.raises(DatasetError, match="f.pack.*changed"):
        pack.load(0)
