"""Base networks are parts (ssd.bases): SSD, the config check and training ask the part, so a new base is one
class and a preset. The test adds a toy base the project has never seen and trains a step on it."""

import pytest
import torch
from torch import nn

import ssd
from ssd import bases
from ssd.base_network import BaseNetwork
from ssd.bases import base_network
from ssd.layers import init_added


class ToyBase(BaseNetwork):
    """Two strided convs (stride 8 and 16 sources for a 64-pixel input), and one extra layer."""

    name = "toy"
    title = "Toy"
    sources = 2
    pretrained = False
    weight_decay = 1e-3
    cpu_memory_format = torch.channels_last

    def build(self, ssd_module, cfg):
        ssd_module.base = nn.Sequential(nn.Conv2d(3, 8, 3, 8, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        ssd_module.extras = nn.ModuleDict({"toy_extra": nn.Conv2d(16, 16, 3, 2, 1)})
        return [8, 16, 16]

    def features(self, ssd_module, x):
        a = ssd_module.base[1](ssd_module.base[0](x))
        b = ssd_module.base[3](ssd_module.base[2](a))
        return [a, b, ssd_module.extras["toy_extra"](b)]

    def init_weights(self, ssd_module):
        init_added([ssd_module.base, ssd_module.extras])


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(bases, "_BASES", {**bases.bases(), "toy": ToyBase()})
    return ssd.SSDConfig(name="TOY", image_size=64, num_classes=3, source_layers=("a", "b", "toy_extra"),
                         feature_maps=(8, 4, 2), steps=(8, 16, 32), min_sizes=(10, 25, 40),
                         max_sizes=(25, 40, 60), aspect_ratios=((2,), (2,), (2,)), extra_layers=((3, 2, 1),),
                         backbone="toy")


def test_a_new_base_is_a_part_and_a_config(toy):
    model = ssd.build_ssd(toy)
    loc, conf = model(torch.rand(2, 3, 64, 64))
    assert loc.shape == (2, toy.num_default_boxes, 4) and conf.shape == (2, toy.num_default_boxes, 4)
    # The MultiBox loss (matching, 3:1 hard negatives) trains it: the part's own parameters get gradients.
    boxes, labels = [torch.tensor([[0.1, 0.1, 0.6, 0.7]])] * 2, [torch.tensor([2])] * 2
    loc_loss, conf_loss = ssd.MultiBoxLoss(toy)(loc, conf, boxes, labels)
    (loc_loss + conf_loss).backward()
    assert model.base[0].weight.grad is not None
    assert model.base_network is bases.bases()["toy"]


def test_the_config_counts_the_parts_sources(toy):
    with pytest.raises(ValueError, match="need 1 extra_layers"):
        toy.replace(extra_layers=())
    with pytest.raises(ValueError, match="backbone must be one of"):
        toy.replace(backbone="resnet50")


@pytest.mark.parametrize("name", sorted(n for n in bases.bases()))
def test_every_registered_base_gives_its_presets_sources(name):
    part = base_network(name)
    presets = [c for c in ssd.PRESETS.values() if c.backbone == name]
    assert presets, f"no preset uses {name}"
    cfg = presets[0]
    model = ssd.build_ssd(cfg).eval()
    sources = model.features(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
    assert tuple(s.shape[-1] for s in sources) == cfg.feature_maps
    assert len(cfg.extra_layers) == len(cfg.feature_maps) - part.sources
    assert part.title and part.describe(cfg).startswith(part.title.split("-")[0])
    # Pretrained parts say where their weights come from; scratch parts say they have none.
    info = part.weights_info()
    assert isinstance(info, dict) == part.pretrained


def test_training_asks_the_part_for_its_memory_format(toy):
    from train.engine import memory_format

    assert memory_format(torch.device("cpu"), toy) == torch.channels_last
    assert memory_format(torch.device("cpu"), ssd.SSD300_VOC) == torch.contiguous_format
    assert memory_format(torch.device("cpu"), ssd.SSD384_LITE0_VOC) == torch.channels_last
