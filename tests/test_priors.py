"""Default boxes (paper §2.2): how many per layer, where they sit, what shape they have, and their identity."""

import math

import pytest
import torch

import ssd
from ssd import SSD300_VOC, SSD512_VOC


def test_ssd300_counts_per_layer():
    layout = ssd.prior_layout(SSD300_VOC)
    assert torch.bincount(layout.layer).tolist() == [5776, 2166, 600, 150, 36, 4]
    assert len(layout) == 8732
    assert layout.layer_offsets == (0, 5776, 7942, 8542, 8692, 8728, 8732)
    assert ssd.default_boxes(SSD300_VOC).shape == (8732, 4)


def test_ssd512_counts_per_layer():
    layout = ssd.prior_layout(SSD512_VOC)
    assert torch.bincount(layout.layer).tolist() == [16384, 6144, 1536, 384, 96, 16, 4]
    assert ssd.default_boxes(SSD512_VOC).shape == (24564, 4)


def test_first_cell_of_conv4_3_by_hand():
    # s_1 = 30/300 = 0.1, s'_1 = sqrt(30 * 60)/300; centre (0.5/38, 0.5/38); ratios 1, 1', 2, 1/2.
    boxes = ssd.default_boxes(SSD300_VOC)[:4]
    c = 0.5 / 38
    s, s_prime, r2 = 0.1, math.sqrt(1800) / 300, math.sqrt(2)
    expected = torch.tensor([
        [c, c, s, s],
        [c, c, s_prime, s_prime],
        [c, c, s * r2, s / r2],
        [c, c, s / r2, s * r2],
    ])
    torch.testing.assert_close(boxes, expected)


def test_cell_7_12_of_fc7_by_hand():
    # fc7 is 19x19 with 6 boxes per cell; it starts after conv4_3's 38*38*4 = 5776 boxes.
    # Cell (row 7, column 12): first box is 5776 + (7*19 + 12)*6 = 6646.
    layout = ssd.prior_layout(SSD300_VOC)
    assert layout.index(1, 7, 12, 0) == 6646
    assert layout.cell_indices(1, 7, 12) == [6646, 6647, 6648, 6649, 6650, 6651]
    cx, cy = 12.5 / 19, 7.5 / 19
    s, s_prime = 0.2, math.sqrt(60 * 111) / 300
    r2, r3 = math.sqrt(2), math.sqrt(3)
    expected = torch.tensor([
        [cx, cy, s, s],
        [cx, cy, s_prime, s_prime],
        [cx, cy, s * r2, s / r2],
        [cx, cy, s / r2, s * r2],
        [cx, cy, s * r3, s / r3],
        [cx, cy, s / r3, s * r3],
    ])
    torch.testing.assert_close(layout.boxes[6646:6652], expected)
    torch.testing.assert_close(ssd.default_boxes(SSD300_VOC)[6646:6652], expected)

    d = layout.describe(6650)
    assert d["index"] == 6650
    assert (d["layer"], d["layer_index"], d["feature_map"]) == ("fc7", 1, 19)
    assert (d["row"], d["col"], d["shape"]) == (7, 12, "3")
    assert d["box_cxcywh"] == pytest.approx([cx, cy, s * r3, s / r3], abs=1e-6)
    assert [layout.describe(i)["shape"] for i in range(6646, 6652)] == ["1", "1'", "2", "1/2", "3", "1/3"]


def test_last_layer_single_cell_is_centred_and_clipped():
    # conv11_2: one cell at the image centre, s = 264/300, s' = sqrt(264*315)/300; s*sqrt(2) > 1 is clipped.
    layout = ssd.prior_layout(SSD300_VOC)
    s, r2 = 0.88, math.sqrt(2)
    expected = torch.tensor([
        [0.5, 0.5, s, s],
        [0.5, 0.5, math.sqrt(264 * 315) / 300, math.sqrt(264 * 315) / 300],
        [0.5, 0.5, 1.0, s / r2],
        [0.5, 0.5, s / r2, 1.0],
    ])
    torch.testing.assert_close(layout.boxes[-4:], expected)
    assert layout.describe(8731)["layer"] == "conv11_2"
    assert layout.describe(8731)["shape"] == "1/2"
    assert layout.index(5, 0, 0, 3) == 8731


def test_ssd512_conv12_2_cell_by_hand():
    layout = ssd.prior_layout(SSD512_VOC)
    i = layout.index(6, 0, 0, 1)
    assert i == 24564 - 3
    s_prime = math.sqrt(460.8 * 537.6) / 512
    torch.testing.assert_close(layout.boxes[i], torch.tensor([0.5, 0.5, s_prime, s_prime]))


def test_centres_form_the_paper_grid():
    # Every box of layer k, cell (i, j) is centred at ((j + .5)/|f_k|, (i + .5)/|f_k|).
    layout = ssd.prior_layout(SSD300_VOC)
    f = torch.tensor(SSD300_VOC.feature_maps, dtype=torch.float32)[layout.layer]
    torch.testing.assert_close(layout.boxes[:, 0], (layout.col + 0.5) / f)
    torch.testing.assert_close(layout.boxes[:, 1], (layout.row + 0.5) / f)
    assert layout.boxes.min() >= 0 and layout.boxes.max() <= 1


def test_index_and_describe_agree_everywhere():
    layout = ssd.prior_layout(SSD300_VOC)
    for n in torch.randint(0, len(layout), (200,), generator=torch.Generator().manual_seed(0)).tolist() + [0, 8731]:
        d = layout.describe(n)
        shape = layout.shape_names(d["layer_index"]).index(d["shape"])
        assert layout.index(d["layer_index"], d["row"], d["col"], shape) == n


@pytest.mark.parametrize("args", [(0, 38, 0, 0), (1, 0, 0, 6), (5, 0, 1, 0), (0, -1, 0, 0)])
def test_index_out_of_range_names_the_layer(args):
    layout = ssd.prior_layout(SSD300_VOC)
    with pytest.raises(IndexError, match=SSD300_VOC.source_layers[args[0]]):
        layout.index(*args)


def test_default_boxes_is_a_copy():
    boxes = ssd.default_boxes(SSD300_VOC)
    boxes.zero_()
    assert ssd.default_boxes(SSD300_VOC).abs().sum() > 0
