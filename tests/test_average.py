"""Stochastic weight averaging (train.average): the mean of weights files, the BatchNorm statistics measured again
for the averaged weights (frozen layers keep theirs), and the command line end to end on a tiny run's snapshots."""

from __future__ import annotations

import json

import pytest
import torch

import ssd
from ssd.augment import SSDAugmentation
from tests.shapes import make_shapes_voc
from train import average
from train.datasets import VOCDataset
from train.engine import SNAPSHOTS, Trainer
from train.recipe import Recipe

TINY = ssd.SSD300_VOC.replace(name="tiny", num_classes=3, batch_norm=True, width=0.125)
CLASSES = ("circle", "square", "triangle")


def _write(model, path, classes=CLASSES, cfg=TINY):
    return ssd.export_weights(model, cfg, classes, path, dtype=torch.float32, steps=1)


def test_the_average_is_the_mean_of_the_float_tensors(tmp_path):
    torch.manual_seed(0)
    a, b = ssd.build_ssd(TINY), ssd.build_ssd(TINY)
    bn = a.base["conv1_1"][1]
    bn.num_batches_tracked.fill_(3)
    b.base["conv1_1"][1].num_batches_tracked.fill_(5)
    mean, card = average.average_weights([_write(a, tmp_path / "a.safetensors"), _write(b, tmp_path / "b.safetensors")])
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in mean.items():
        if v.is_floating_point():
            assert torch.allclose(v, (sa[k] + sb[k]) / 2, atol=1e-7), k
    assert int(mean["base.conv1_1.1.num_batches_tracked"]) == 5  # integer counts: the last file's
    assert card.classes == list(CLASSES) and card.steps == 1


def test_files_of_another_network_are_refused(tmp_path):
    a = _write(ssd.build_ssd(TINY), tmp_path / "a.safetensors")
    other = _write(ssd.build_ssd(TINY), tmp_path / "b.safetensors", classes=("x", "y", "z"))
    with pytest.raises(ValueError, match="classes differs"):
        average.average_weights([a, other])


def test_recomputed_statistics_are_the_mean_over_the_images_and_frozen_layers_keep_theirs():
    cfg = ssd.SSD300_LITE0_VOC.replace(frozen_base_layers=2)
    torch.manual_seed(0)
    model = ssd.build_ssd(cfg)
    norms = average.training_batchnorms(model)
    every = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    kept = [m for m in every if m not in norms]
    stem = [m for m in model.base.stem.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and stem and all(m in kept for m in stem)  # the stem is frozen, the heads' layers train
    before = [m.running_mean.clone() for m in kept]
    batches = [torch.randint(0, 256, (2, 3, 300, 300), dtype=torch.uint8, generator=torch.Generator().manual_seed(s))
               for s in range(2)]
    # The first trained BatchNorm's input, captured by a hook, gives the expected mean independently.
    seen = []
    first = norms[0]
    hook = first.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().mean((0, 2, 3))))
    assert average.recompute_batchnorm(model, cfg, iter(batches)) == 4
    hook.remove()
    assert not model.training
    assert torch.allclose(first.running_mean, torch.stack(seen).mean(0), atol=1e-5)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(kept, before))


def test_command_line_averages_a_cyclic_runs_snapshots_and_evaluates_them(tmp_path):
    shapes = make_shapes_voc(tmp_path / "shapes", n_train=8, n_val=4, seed=0)
    source = VOCDataset(shapes, "train", classes=CLASSES)
    r = Recipe(batch_size=2, lr=0.01, warmup_steps=0, max_steps=4, workers=0, log_every=1, schedule="cyclic",
               snapshot_every=2)
    Trainer(TINY, r, source, SSDAugmentation.for_config(TINY), tmp_path / "run", device="cpu").train()
    snaps = sorted(str(p) for p in (tmp_path / "run" / SNAPSHOTS).glob("*.safetensors"))
    assert len(snaps) == 2
    out = tmp_path / "avg.safetensors"
    assert average.main([*snaps, "--out", str(out), "--data", str(shapes), "--image-set", "train",
                         "--batchnorm-images", "4", "--val-data", str(shapes), "--val-image-set", "val"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["averaged"]["weights"] == ["step_000002.safetensors", "step_000004.safetensors"]
    assert card["averaged"]["batchnorm"] == "measured again on 4 augmented training images"
    assert 0 <= card["val"]["map_area"] <= 1 and card["val"]["images"] == 4
    assert (tmp_path / "avg.log.csv").read_text() == (tmp_path / "run" / SNAPSHOTS / "step_000004.log.csv").read_text()
    det = ssd.Detector.load(out)
    assert det.class_names == CLASSES


def test_command_line_reports_missing_files_in_one_line(tmp_path, capsys):
    assert average.main([str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "weights not found: " in (err := capsys.readouterr().err) and "nope.safetensors. Pass" in err
