"""The network (paper Fig. 2): output shapes, size against torchvision's SSD300, and prediction order = prior
order. Full-width models are built on the meta device (shapes without memory or compute)."""

import pytest
import torch
from torch import nn
from torchvision.models.detection import ssd300_vgg16

import ssd
from ssd import SSD300_COCO, SSD300_LITE0_VOC, SSD300_VOC, SSD512_VOC


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("cfg, boxes", [(SSD300_VOC, 8732), (SSD512_VOC, 24564), (SSD300_COCO, 8732)])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("width", [1.0, 0.25])
def test_output_shapes(cfg, boxes, batch_norm, width):
    cfg = cfg.replace(batch_norm=batch_norm, width=width)
    with torch.device("meta"):
        model = ssd.build_ssd(cfg)
        x = torch.empty(2, 3, cfg.image_size, cfg.image_size)
        assert tuple(f.shape[-1] for f in model.features(x)) == cfg.feature_maps
        loc, conf = model(x)
    assert loc.shape == (2, boxes, 4)
    assert conf.shape == (2, boxes, cfg.num_classes + 1)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == batch_norm
    assert model.base["conv1_1"][0].out_channels == max(8, round(64 * width))
    assert model.fc7[0].out_channels == max(8, round(1024 * width))


def test_parameter_count_equals_torchvision_ssd300():
    with torch.device("meta"):
        ours = ssd.build_ssd(SSD300_VOC)
        theirs = ssd300_vgg16(num_classes=21, weights=None, weights_backbone=None)
    assert count(ours) == count(theirs) == 26_285_486


def test_paper_architecture_details():
    with torch.device("meta"):
        model = ssd.build_ssd(SSD300_VOC)
    fc6, fc7 = model.fc6[0], model.fc7[0]
    assert (fc6.in_channels, fc6.out_channels, fc6.kernel_size, fc6.dilation, fc6.padding) == (
        512, 1024, (3, 3), (6, 6), (6, 6))  # atrous fc6
    assert (fc7.in_channels, fc7.out_channels, fc7.kernel_size) == (1024, 1024, (1, 1))
    assert (model.pool5.kernel_size, model.pool5.stride) == (3, 1)
    assert model.l2norm.weight.shape == (512,)
    assert torch.equal(ssd.build_ssd(SSD300_VOC.replace(width=0.25)).l2norm.weight, torch.full((128,), 20.0))
    for k, head in enumerate(model.conf_heads):
        assert head[0].kernel_size == (3, 3)
        assert head[0].out_channels == SSD300_VOC.boxes_per_cell[k] * 21
        assert model.loc_heads[k][0].out_channels == SSD300_VOC.boxes_per_cell[k] * 4


def test_extra_layer_geometry_matches_paper():
    with torch.device("meta"):
        m300, m512 = ssd.build_ssd(SSD300_VOC), ssd.build_ssd(SSD512_VOC)

    def geometry(conv):
        return conv.kernel_size[0], conv.stride[0], conv.padding[0]

    # Paper Fig. 2: conv8_2, conv9_2 3x3 stride 2; conv10_2, conv11_2 3x3 stride 1 (no padding).
    assert [geometry(m300.extras[f"conv{n}_2"][0]) for n in (8, 9, 10, 11)] == [
        (3, 2, 1), (3, 2, 1), (3, 1, 0), (3, 1, 0)]
    # SSD512 (released model): conv8_2 .. conv11_2 3x3 stride 2, conv12_2 4x4 stride 1 pad 1.
    assert [geometry(m512.extras[f"conv{n}_2"][0]) for n in (8, 9, 10, 11, 12)] == [
        (3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1), (4, 1, 1)]


def test_wrong_input_size_is_explained():
    with torch.device("meta"):
        model = ssd.build_ssd(SSD300_VOC)
        with pytest.raises(ValueError, match="300x300"):
            model(torch.empty(1, 3, 512, 512))


@pytest.mark.parametrize("cfg", [SSD300_VOC.replace(width=0.25), SSD300_LITE0_VOC], ids=["vgg16", "lite0"])
def test_prediction_order_matches_prior_order(cfg):
    """Make every head output a code of (layer, row, column, channel); prediction n must carry the layer, cell
    and shape that prior_layout says default box n has — whatever the base network."""
    torch.manual_seed(0)
    model = ssd.build_ssd(cfg).eval()
    C1 = cfg.num_classes + 1

    def code(layer, row, col, channel):
        return ((layer * 64 + row) * 64 + col) * 256 + channel  # < 2**24: exact in float32

    def coded_output(k):
        def hook(module, inputs, out):
            _, ch, h, w = out.shape
            i, j, c = torch.meshgrid(torch.arange(h), torch.arange(w), torch.arange(ch), indexing="ij")
            return code(k, i, j, c).permute(2, 0, 1)[None].float()
        return hook

    for k in range(len(cfg.feature_maps)):
        model.loc_heads[k].register_forward_hook(coded_output(k))
        model.conf_heads[k].register_forward_hook(coded_output(k))
    with torch.no_grad():
        loc, conf = model(torch.zeros(1, 3, 300, 300))

    layout = ssd.prior_layout(cfg)
    L, i, j, s = layout.layer[:, None], layout.row[:, None], layout.col[:, None], layout.shape[:, None]
    assert torch.equal(loc[0].long(), code(L, i, j, s * 4 + torch.arange(4)))
    assert torch.equal(conf[0].long(), code(L, i, j, s * C1 + torch.arange(C1)))
    # The hand-worked case: the 6 boxes of cell (7, 12) of fc7 are predictions 6646..6651.
    assert torch.equal(loc[0, 6646:6652, 0].long(), torch.tensor([code(1, 7, 12, 4 * s) for s in range(6)]))
