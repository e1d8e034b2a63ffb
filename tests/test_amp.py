"""train.amp: the depthwise layers that train faster in float32 under bfloat16 autocast run in float32, as
their timings say, without touching the model's state; such a layer computes exactly what float32 computes."""

from __future__ import annotations

import pytest
import torch

import ssd
from ssd.efficientnet_lite import conv_bn
from train import amp


def depthwise(seed: int = 0):
    torch.manual_seed(seed)
    return conv_bn(8, 8, kernel=5, stride=2, groups=8).train()


def test_a_float32_layer_under_autocast_computes_what_float32_computes():
    x = torch.randn(2, 8, 20, 20)
    reference, layer = depthwise(), depthwise()
    expected = reference(x)
    expected.sum().backward()
    layer.float32_under_autocast = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x.bfloat16())
    got.sum().backward()
    assert got.dtype == torch.float32
    # The input came in bfloat16, as the layer before hands it over under autocast.
    assert torch.allclose(got, reference(x.bfloat16().float()), atol=1e-5)
    assert (got - expected).abs().max() < 0.05  # only the input's rounding to bfloat16 differs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert depthwise()(x.bfloat16()).dtype == torch.bfloat16  # the flag off: autocast decides


def test_the_chooser_follows_the_timings_times_each_shape_once_and_leaves_the_model_as_it_was(monkeypatch):
    cfg = ssd.SSD300_LITE0_VOC.replace(frozen_base_layers=0)
    model = ssd.build_ssd(cfg).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    timed = []

    def fake_time(layer, x, dtype, in_float32, repeats):
        timed.append((tuple(x.shape), layer[0].kernel_size, layer[0].stride, in_float32))
        five = layer[0].kernel_size == (5, 5)
        return (0.5 if five else 2.0) if in_float32 else 1.0  # float32 wins for the 5×5 layers only

    monkeypatch.setattr(amp, "_time", fake_time)
    chosen = amp.choose_depthwise_precision(model, batch_size=2, image_size=cfg.image_size)
    layers = amp.depthwise_layers(model)
    assert len(layers) == 16
    assert chosen == [n for n, m in layers.items() if m[0].kernel_size == (5, 5)] and chosen
    assert all(m.float32_under_autocast == (n in chosen) for n, m in layers.items())
    assert len(timed) == 2 * len(set(t[:3] for t in timed)) < 2 * len(layers)  # repeated shapes timed once
    assert all(shape[0] == 2 for shape, *_ in timed)  # at the training batch size
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched
    assert model.training


@pytest.mark.slow
def test_the_real_timings_give_a_valid_choice():
    """No assertion on which layers win (that is the CPU's business), only that the real timer runs."""
    model = ssd.build_ssd(ssd.SSD300_LITE0_VOC).train()
    chosen = amp.choose_depthwise_precision(model, batch_size=1, image_size=300, repeats=1)
    assert set(chosen) <= set(amp.depthwise_layers(model))
