"""The presets are the paper's SSD300 / SSD512 models (§2.2, §3, §3.4 and the released Caffe models)."""

import dataclasses
import json
import math

import pytest

import ssd
from ssd import SSD300_COCO, SSD300_VOC, SSD512_COCO, SSD512_VOC, SSDConfig


def caffe_sizes(image_size, first_ratio, min_ratio, max_ratio, num_layers):
    """Default-box sizes worked out the way the paper's released models do (ssd_pascal.py): conv4_3 gets
    `first_ratio` %, the other layers s_k = s_min + (s_max - s_min)(k - 1)/(m - 1) in whole percent, and each
    layer's max size is the next layer's min size."""
    step = math.floor((max_ratio - min_ratio) / (num_layers - 2))
    ratios = [first_ratio] + list(range(min_ratio, max_ratio + 1, step))
    ratios.append(ratios[-1] + step)
    sizes = [r * image_size / 100 for r in ratios]
    return sizes[:num_layers], sizes[1:num_layers + 1]


@pytest.mark.parametrize(
    "cfg, first, s_min, s_max",
    [(SSD300_VOC, 10, 20, 90), (SSD512_VOC, 7, 15, 90), (SSD300_COCO, 7, 15, 90), (SSD512_COCO, 4, 10, 90)],
)
def test_default_box_sizes_follow_the_scale_formula(cfg, first, s_min, s_max):
    mins, maxs = caffe_sizes(cfg.image_size, first, s_min, s_max, len(cfg.feature_maps))
    assert cfg.min_sizes == pytest.approx(mins)
    assert cfg.max_sizes == pytest.approx(maxs)


def test_ssd300_sources_and_boxes_per_cell():
    cfg = SSD300_VOC
    assert cfg.source_layers == ("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
    assert cfg.feature_maps == (38, 19, 10, 5, 3, 1)
    assert cfg.steps == (8, 16, 32, 64, 100, 300)
    assert cfg.boxes_per_cell == (4, 6, 6, 6, 4, 4)
    assert cfg.num_default_boxes == 5776 + 2166 + 600 + 150 + 36 + 4 == 8732
    # Fig. 2: conv8_2, conv9_2 3x3 stride 2; conv10_2, conv11_2 3x3 stride 1 without padding.
    assert cfg.extra_layers == ((3, 2, 1), (3, 2, 1), (3, 1, 0), (3, 1, 0))
    assert cfg.num_classes == 20 and len(ssd.VOC_CLASSES) == 20


def test_ssd512_adds_conv12_2():
    cfg = SSD512_VOC
    assert cfg.source_layers[-1] == "conv12_2"
    assert cfg.feature_maps == (64, 32, 16, 8, 4, 2, 1)
    assert cfg.num_default_boxes == 64**2 * 4 + 32**2 * 6 + 16**2 * 6 + 8**2 * 6 + 4**2 * 6 + 2**2 * 4 + 4 == 24564
    # Released SSD512: conv8_2 .. conv11_2 3x3 stride 2, conv12_2 4x4 stride 1 pad 1 (2 -> 1).
    assert cfg.extra_layers == ((3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1), (4, 1, 1))


@pytest.mark.parametrize("cfg", [SSD300_VOC, SSD512_VOC, SSD300_COCO, SSD512_COCO])
def test_paper_constants(cfg):
    assert cfg.variances == (0.1, 0.2)
    assert cfg.match_threshold == 0.5
    assert cfg.neg_pos_ratio == 3
    assert (cfg.conf_threshold, cfg.nms_threshold, cfg.top_k) == (0.01, 0.45, 200)
    assert cfg.l2norm_scale == 20
    assert not cfg.batch_norm and cfg.width == 1.0
    assert cfg.num_classes == (20 if "VOC" in cfg.name else 80)
    assert ssd.PRESETS[cfg.name] is cfg


@pytest.mark.parametrize("cfg", [SSD300_VOC, SSD512_COCO.replace(batch_norm=True, width=0.5)])
def test_json_round_trip(cfg):
    assert SSDConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_configs_are_frozen_and_replace_copies():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SSD300_VOC.width = 0.5
    small = SSD300_VOC.replace(width=0.25, batch_norm=True)
    assert (small.width, small.batch_norm) == (0.25, True)
    assert (SSD300_VOC.width, SSD300_VOC.batch_norm) == (1.0, False)


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="equal lengths"):
        SSD300_VOC.replace(steps=(8, 16, 32))
    with pytest.raises(ValueError, match="extra_layers"):
        SSD300_VOC.replace(extra_layers=((3, 2, 1),))
    with pytest.raises(ValueError, match="width"):
        SSD300_VOC.replace(width=0)
    with pytest.raises(ValueError, match="num_classes"):
        SSD300_VOC.replace(num_classes=0)
    with pytest.raises(ValueError, match="colour"):
        SSDConfig.from_dict({**SSD300_VOC.to_dict(), "colour": "red"})
