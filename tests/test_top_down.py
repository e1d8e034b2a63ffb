"""The top-down path (ssd.top_down, `SSDConfig.top_down`): FPN/FSSD's fusion of each of the first k source
layers with the next coarser one, which starts at zero so that weights trained without it load unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ssd
from ssd import Detector
from ssd.top_down import TopDown

SMALL_VGG = ssd.SSD300_VOC.replace(width=0.125, batch_norm=True)


def with_path_weights(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for conv in model.top_down.project:
        conv.weight.data.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
        conv.bias.data.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
    return model


def test_the_path_runs_from_the_deepest_source_on_it_down_to_the_first():
    # One channel everywhere, projections that copy: source 1 becomes 1 + 5 (source 2 upsampled), and source 0
    # gets that fused source 1, not source 1's own 1: the coarser map is fused before it is passed down.
    path = TopDown([1, 1, 1, 1], k=2)
    for conv in path.project:
        torch.nn.init.ones_(conv.weight)
    sources = [torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 2, 2), torch.full((1, 1, 1, 1), 5.0),
               torch.full((1, 1, 1, 1), 7.0)]
    fused = path(sources)
    assert torch.equal(fused[0], torch.full((1, 1, 4, 4), 6.0))
    assert torch.equal(fused[1], torch.full((1, 1, 2, 2), 6.0))
    assert fused[2] is sources[2] and fused[3] is sources[3]  # beyond the path: the base's own maps
    assert torch.equal(sources[0], torch.zeros(1, 1, 4, 4))  # the inputs are not changed in place


def test_sizes_that_do_not_halve_exactly_are_upsampled_to_the_finer_map():
    path = TopDown([2, 3], k=1)
    torch.nn.init.ones_(path.project[0].weight)
    fused = path([torch.zeros(1, 2, 19, 19), torch.ones(1, 3, 10, 10)])
    assert fused[0].shape == (1, 2, 19, 19) and torch.equal(fused[0], torch.full((1, 2, 19, 19), 3.0))


def test_weights_trained_without_the_path_compute_what_they_did():
    torch.manual_seed(0)
    plain = ssd.build_ssd(SMALL_VGG).eval()
    with_path = ssd.build_ssd(SMALL_VGG.replace(top_down=2)).eval()
    missing, unexpected = with_path.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f"top_down.project.{i}.{p}" for i in range(2) for p in ("bias", "weight")]
    assert not unexpected
    x = torch.randn(2, 3, 300, 300)
    with torch.no_grad():
        for a, b in zip(plain(x), with_path(x)):
            assert torch.equal(a, b)


def test_the_heads_of_the_fused_layers_see_the_deeper_maps_and_the_rest_do_not():
    torch.manual_seed(0)
    model = with_path_weights(ssd.build_ssd(SMALL_VGG.replace(top_down=2)).eval())
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        fused = model.features(x)
        model.top_down = None
        own = model.features(x)
    assert [f.shape for f in fused] == [f.shape for f in own]
    assert not torch.allclose(fused[0], own[0]) and not torch.allclose(fused[1], own[1])
    assert all(torch.equal(a, b) for a, b in zip(fused[2:], own[2:]))


def test_the_path_trains():
    torch.manual_seed(0)
    cfg = SMALL_VGG.replace(top_down=1)
    model = ssd.build_ssd(cfg)
    loc, conf = model(torch.randn(2, 3, 300, 300))
    (loc.square().mean() + conf.square().mean()).backward()
    # Zero weights still get a gradient (from the input they multiply); the first step moves them off zero.
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.top_down.parameters())


@pytest.mark.parametrize("k", [-1, 6])
def test_a_path_into_no_layer_or_past_the_last_is_refused(k):
    with pytest.raises(ValueError, match="top_down must be 0 to 5"):
        SMALL_VGG.replace(top_down=k)


def test_the_config_round_trips_through_a_card():
    cfg = ssd.SSD384_LITE0_VOC.replace(top_down=2)
    assert ssd.SSDConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["top_down"]  # a card written before the path existed: the paper's network
    assert ssd.SSDConfig.from_dict(old).top_down == 0


@pytest.mark.slow
def test_a_model_with_the_path_exports_to_onnx(tmp_path):
    cfg = SMALL_VGG.replace(top_down=2)  # 38 <- 19 <- 10: one upsampling that is not exactly 2x
    torch.manual_seed(0)
    torch_side = Detector(with_path_weights(ssd.build_ssd(cfg)), cfg, ssd.VOC_CLASSES, device="cpu")
    exported = Detector.load(ssd.export_onnx(torch_side, tmp_path / "top_down.onnx"))
    assert exported.backend_name == "onnxruntime" and exported.config == cfg
    images = np.random.default_rng(0).integers(0, 256, (2, 300, 300, 3), dtype=np.uint8)
    for a, b in zip(torch_side.backend(images), exported.backend(images)):
        assert float((a - b).abs().max()) < 1e-4


def test_the_page_says_the_network_is_not_the_papers():
    from ui.demo_models import DemoModel

    cfg = SMALL_VGG.replace(top_down=2)
    page = DemoModel(Detector(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, device="cpu")).summary()
    assert "a top-down path into its first 2 source layers" in page
    plain = DemoModel(Detector(ssd.build_ssd(SMALL_VGG), SMALL_VGG, ssd.VOC_CLASSES, device="cpu")).summary()
    assert "top-down" not in plain


def test_a_fine_tune_keeps_the_path_of_the_file_it_starts_from(tmp_path):
    """`python -m train` without --top-down: a file whose card says it has the path (the shipped one) is fine-tuned
    as that network, every tensor kept; a file without a card, or on another base, leaves the preset's."""
    from train.init_weights import top_down_of

    cfg = SMALL_VGG.replace(top_down=2)
    with_path = ssd.export_weights(ssd.build_ssd(cfg), cfg, ssd.VOC_CLASSES, tmp_path / "with_path.safetensors")
    assert top_down_of(with_path, SMALL_VGG) == 2
    assert top_down_of(with_path, ssd.SSD384_LITE0_VOC) == 0  # another base network: the preset's
    assert top_down_of(None, SMALL_VGG) == 0 and top_down_of(tmp_path / "missing.safetensors", SMALL_VGG) == 0
    with_path.with_suffix(".json").unlink()
    assert top_down_of(with_path, SMALL_VGG) == 0  # no card: nothing says what it was


def test_a_path_past_the_last_source_layer_is_a_usage_error(tmp_path, capsys):
    from tests.shapes import make_shapes_voc
    from train.__main__ import cli

    data = make_shapes_voc(tmp_path / "data")
    assert cli(["--config", "SSD300_VOC", "--top-down", "6", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert "top_down must be 0 to 5" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.ckpt").exists()
