"""Watching SSD learn (ssd.learn, the Learn tab): a copy of a trained network learns one photo with SSD's own
augmentation, MultiBox loss and SGD, a class it never saw included, while the network it came from stays as it
was. Each check compares with an independent computation: the copy's whole forward pass against the cached path
that trains, the softmax of the original logits against the grown head, the schedule by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

import ssd
from bench.app_server import ROOT, export_random_weights, received_dir, running_app
from ssd.augment import SSDAugmentation
from ssd.image import normalise
from ssd.learn import NEW_CLASS_ODDS, HeadTraining, LearnRecipe, add_classes, heads_copy
from visualize.learn import NEW_CLASS_EXAMPLES, learning_rows, parse_learning_rows, probability_colour

SHIPPED = ROOT / "ssd" / "weights" / "ssd384_lite0_voc07.safetensors"


def tiny_vgg() -> ssd.SSD:
    """The paper's SSD300 head (one 3×3 conv) with BatchNorm after it, small and random."""
    torch.manual_seed(0)
    return ssd.build_ssd(ssd.SSD300_VOC.replace(batch_norm=True, width=0.25)).eval().requires_grad_(False)


def lite() -> ssd.SSD:
    """SSDLite heads (depthwise 3×3, BatchNorm, ReLU6, 1×1 conv) on a random EfficientNet-Lite0."""
    torch.manual_seed(1)
    net = ssd.build_ssd(ssd.SSD300_LITE0_VOC).eval().requires_grad_(False)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so that copying them matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net


def photo(seed: int = 0) -> Image.Image:
    """A photo with one bright object on a dark background: (picture, its box)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (200, 240, 3), dtype=np.uint8)
    pixels[50:170, 60:180] = rng.integers(150, 255, (120, 120, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


BOX = (60, 50, 180, 170)


def state(net) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("build", [tiny_vgg, lite], ids=["vgg-bn", "ssdlite"])
def test_a_new_class_starts_at_a_99th_of_background_and_every_other_score_stays(build):
    net = build()
    x = torch.randn(2, 3, net.cfg.image_size, net.cfg.image_size)
    with torch.no_grad():
        loc, conf = net(x)
        grown = add_classes(heads_copy(net), ["mug", "kettle"]).eval()
        loc2, conf2 = grown(x)
    assert grown.cfg.num_classes == net.cfg.num_classes + 2 and conf2.shape[-1] == conf.shape[-1] + 2
    torch.testing.assert_close(loc2, loc)
    torch.testing.assert_close(conf2[..., :-2], conf)  # the old classes' logits, box by box
    for new in (-2, -1):
        torch.testing.assert_close(conf2[..., new], conf[..., 0] - math.log(NEW_CLASS_ODDS), rtol=1e-5, atol=1e-4)
    p = conf2.softmax(-1)
    torch.testing.assert_close(p[..., -1] / p[..., 0], torch.full_like(p[..., 0], 1 / NEW_CLASS_ODDS), rtol=1e-3,
                               atol=0)
    assert float(p[..., -2:].max()) <= 0.01 + 1e-6


def test_the_copy_shares_the_layers_under_the_heads_and_owns_its_heads():
    net = tiny_vgg()
    copy = heads_copy(net)
    for name, p in net.named_parameters():
        head = name.split(".")[0] in ("loc_heads", "conf_heads")
        q = dict(copy.named_parameters())[name]
        assert (q is not p) == head, name
        assert torch.equal(q, p)


def test_training_changes_the_copy_and_never_the_network_it_came_from():
    net = tiny_vgg()
    before = state(net)
    flags = {k: p.requires_grad for k, p in net.named_parameters()}
    run = HeadTraining(net, ssd.VOC_CLASSES, photo(), np.array([BOX]), ["mug"], LearnRecipe(steps=3, views=2))
    list(run.steps())
    after = state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {k: p.requires_grad for k, p in net.named_parameters()}
    mine = dict(run.model.named_parameters())
    changed = [k for k in before if k.startswith("loc_heads") and k in mine and not torch.equal(mine[k], before[k])]
    assert changed  # the copy's heads did move (its confidence heads are wider: they have a class more)
    assert run.model.cfg.num_classes == 21 and net.cfg.num_classes == 20


def test_a_step_is_the_multibox_loss_of_ssd_augmented_views_through_the_whole_copy():
    """The cached path that trains (frozen layers once, heads' last layers per step) gives the loss that the
    copy's whole forward pass gives on the same augmented views (SSDAugmentation, seeded by (seed, view))."""
    net = lite()
    recipe = LearnRecipe(steps=2, views=3, seed=7)
    run = HeadTraining(net, ssd.VOC_CLASSES, photo(), np.array([BOX, (0, 0, 60, 50)]), ["mug", "dog"], recipe)
    aug = SSDAugmentation.for_config(run.cfg)
    pixels = np.asarray(photo())
    images, boxes, labels = [], [], []
    for v in range(recipe.views):
        image, b, lab = aug(pixels, np.array([BOX, (0, 0, 60, 50)], np.float32), np.array([21, 12]),
                            rng=np.random.default_rng([recipe.seed, v]))
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        boxes.append(torch.from_numpy(b))
        labels.append(torch.from_numpy(lab))
    with torch.no_grad():
        loc, conf = run.model(normalise(torch.stack(images), run.cfg))
        want = ssd.MultiBoxLoss(run.cfg)(loc, conf, boxes, labels)
    first = run.step()
    assert first.loc == pytest.approx(float(want[0]), rel=1e-4)
    assert first.conf == pytest.approx(float(want[1]), rel=1e-4)
    assert first.loss == pytest.approx(first.loc + first.conf)


def test_the_probe_is_the_whole_copy_on_the_photo_as_inference_sees_it():
    net = lite()
    run = HeadTraining(net, ssd.VOC_CLASSES, photo(), np.array([BOX]), ["mug"], LearnRecipe(steps=4, views=2))
    list(run.steps())
    probe = run.probe()
    size = run.cfg.image_size
    warped = torch.from_numpy(np.asarray(photo().resize((size, size), Image.BILINEAR)).copy()).permute(2, 0, 1)
    with torch.no_grad():
        loc, conf = run.model(normalise(warped[None], run.cfg))
    scores = conf.softmax(-1)[0]
    gt = torch.tensor([BOX], dtype=torch.float32) / torch.tensor([240, 200, 240, 200])
    m = ssd.match([gt], [torch.tensor([21])], ssd.default_boxes(run.cfg), run.cfg.match_threshold)
    positives = m.positives[0].nonzero().squeeze(1)
    assert torch.equal(probe.positives, positives)
    torch.testing.assert_close(probe.probability, scores[positives, 21], rtol=1e-4, atol=1e-5)
    decoded = ssd.decode(loc, ssd.default_boxes(run.cfg), run.cfg.variances)[0][positives]
    torch.testing.assert_close(probe.boxes, decoded, rtol=1e-4, atol=1e-5)
    negatives = ssd.hard_negatives(-scores[None, :, 0].log(), m.positives, run.cfg.neg_pos_ratio)[0]
    assert set(probe.negatives.tolist()) == set(negatives.nonzero().squeeze(1).tolist())
    torch.testing.assert_close(probe.background, scores[probe.negatives, 0], rtol=1e-4, atol=1e-5)


def test_the_loss_falls_step_after_step():
    """Every step trains on the same views (one batch), so the loss they give falls from step to step, and the
    hard negatives learn background. (A random network's logits are huge: without the gradient's clip at 10 this
    one's loss jumped 80-fold at step 5.) The new class climbing is checked on the shipped model, below."""
    run = HeadTraining(tiny_vgg(), ssd.VOC_CLASSES, photo(), np.array([BOX]), ["mug"], LearnRecipe(steps=12))
    steps = list(run.steps())
    assert [s.step for s in steps] == list(range(1, 13))
    assert steps[-1].loss < 0.6 * steps[0].loss
    assert all(b.loss <= a.loss * 1.01 for a, b in zip(steps, steps[1:]))
    assert steps[0].positive_probability < 0.011  # the new class starts at a 99th of background
    assert steps[-1].hard_negative_background > steps[0].hard_negative_background


def test_the_schedule_warms_up_then_follows_a_cosine_to_zero():
    r = LearnRecipe(steps=13, lr=0.04, warmup=3)
    assert [r.lr_at(k) for k in range(3)] == pytest.approx([0.01, 0.02, 0.03])
    assert r.lr_at(3) == pytest.approx(0.04)
    assert r.lr_at(8) == pytest.approx(0.02)  # half way down the cosine
    assert r.lr_at(12) == pytest.approx(0.04 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))
    with pytest.raises(ValueError, match="at least one step"):
        LearnRecipe(steps=0)


def test_rows_with_a_new_class_name():
    gt, new, problems = parse_learning_rows(
        [["mug", 10, 10, 50, 50], ["dog", 0, 0, 20, 20], ["background", 1, 1, 9, 9], ["x" * 40, 1, 1, 9, 9],
         ["kettle", 5, 5, 30, 30], [" mug ", 20, 20, 60, 60], ["pot", 1, 1, 5, 5]], ssd.VOC_CLASSES, 100, 80,
        max_new=2)
    assert gt.labels == ["mug", "dog", "kettle", "mug"] and new == ["mug", "kettle"]
    assert [p.split(":")[0] for p in problems] == ["row 3", "row 4", "row 7"]
    assert "class 0" in problems[0] and "at most 30" in problems[1] and "at most 2 new classes" in problems[2]
    rows = learning_rows("coffee")
    assert rows[-1] == ["mug", *NEW_CLASS_EXAMPLES["coffee"][0][1]] and rows[0][0] == "diningtable"


def test_probability_colours_run_from_red_through_yellow_to_green():
    assert probability_colour(0) == (215, 48, 39)
    assert probability_colour(0.5) == (255, 230, 0)
    assert probability_colour(1) == (26, 200, 80)
    assert probability_colour(float("nan")) == probability_colour(0) and probability_colour(7) == probability_colour(1)


# ------------------------------------------------------------------------------------------ the tab, in-process
@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    from ui.demo_models import DemoModel
    from ui.learn_tab import LearnTab

    weights = export_random_weights(tmp_path_factory.mktemp("weights"))
    return LearnTab(DemoModel.load(weights, "torch"))


def test_the_tab_trains_shows_each_stage_and_leaves_the_served_model_as_it_was(tab):
    model = tab.models.default
    before = model.predict(photo())
    rows = [["mug", *BOX], ["dog", 0, 0, 60, 50]]
    from ui.learn_tab import LearnPhoto

    outs = list(tab.train(LearnPhoto.of(photo(), "mine"), None, rows, 6))
    assert "Augmenting" in outs[0][3] and any("views ready" in str(o[3]) for o in outs)
    *_, last = outs
    learned = last[-1]
    assert learned.new_classes == ["mug"] and [s.step for s in learned.history] == list(range(1, 7))
    assert learned.detector.class_names[-1] == "mug" and "Step **6/6**" in last[3]
    assert all(isinstance(p, Image.Image) for p in (last[0], last[1], last[2], last[5], last[6]))
    assert [s["step"] for s in last[4]] == list(range(1, 7))
    after = model.predict(photo())
    assert torch.equal(before.boxes, after.boxes) and torch.equal(before.scores, after.scores)
    served, trained, summary = tab.compare(learned, "cat", None)
    assert "trained copy" in summary
    assert tab.reset()[3].startswith("The copy is gone")


def test_a_new_photo_or_new_ground_truth_clears_the_views_of_the_run_before(tab):
    from ui.learn_tab import FROM_MATCHING, cleared
    from ui.matching_tab import MatchState
    from visualize.examples import example_image

    out = tab.load_photo("cat")  # state, rows, picture, notes, pending corner, upload, then the run's views
    state, rows, picture = out[:3]
    assert (state.name, state.width, state.height) == ("cat", 451, 300) and rows == learning_rows("cat")
    assert tuple(out[6:]) == cleared() and isinstance(picture, Image.Image)
    assert tuple(tab.redraw(None, "coffee", [["mug", 1, 1, 50, 50]])[3:]) == cleared()
    # The Matching tab's photo (kept there at most 800 px wide) with its table, in the photo's pixels.
    big = example_image("motorcycle").resize((1482, 1000))
    out = tab.load_photo(FROM_MATCHING, MatchState.of(big, "big"), [["motorbike", 180, 190, 1370, 904]])
    assert out[1] == [["motorbike", 180, 190, 1370, 904]] and (out[0].width, out[0].height) == (1482, 1000)
    assert out[0].display.width == 800 and "new class" not in out[3].lower()


def test_the_tab_refuses_a_second_run_while_one_runs_and_says_why(tab):
    from ui.learn_tab import BUSY, LearnPhoto
    from ui.visitor_input import Refused

    assert tab.runs.acquire(blocking=False)
    try:
        with pytest.raises(Refused, match="already learning"):
            next(tab.train(LearnPhoto.of(photo(), "mine"), None, [["mug", *BOX]], 3))
        path = received_dir("learn") / "photo.png"
        photo().save(path)
        with pytest.raises(Refused) as refused:
            tab.learn_api(str(path), [["mug", *BOX]], 3)
        assert refused.value.message == BUSY
    finally:
        tab.runs.release()
    with pytest.raises(Refused, match="at least one box"):
        next(tab.train(LearnPhoto.of(photo(), "mine"), None, [], 3))
    with pytest.raises(Refused, match="Train a copy first"):
        tab.compare(None, "cat", None)


# ------------------------------------------------------------------------------------------ the app's /learn API
@pytest.mark.slow
def test_the_learn_api_returns_falling_losses_and_the_served_model_stays_the_same(tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    weights = export_random_weights(tmp_path)
    path = tmp_path / "photo.png"
    photo().save(path)
    # PyTorch throughout: a background switch to onnxruntime would change the served outputs' last digits.
    with running_app(weights, tmp_path / "app.log", SSD_BACKEND="torch") as url:
        client = gradio_client.Client(url, verbose=False)
        file = gradio_client.handle_file(str(path))
        before = client.predict(file, 0.05, 0.45, api_name="/detect")[2]
        out = client.predict(file, [["mug", *BOX], ["dog", 0, 0, 60, 50]], 10, api_name="/learn")
        after = client.predict(file, 0.05, 0.45, api_name="/detect")[2]
    steps = out["steps"]
    assert [s["step"] for s in steps] == list(range(1, 11))
    assert set(steps[0]) >= {"step", "loss", "loc", "conf", "positive_probability", "hard_negative_background"}
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert all(s["loss"] == pytest.approx(s["loc"] + s["conf"], abs=1e-4) for s in steps)
    assert out["new_classes"] == ["mug"] and out["positives"] > 0
    assert before["detections"] == after["detections"]
    assert before["detections"], "random weights detect something at score 0.05"


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.exists(), reason="needs the shipped weights")
def test_the_shipped_model_learns_a_mug_it_never_saw():
    """The coffee photo with its hand-drawn mug: after a short run the copy finds the mug where it is; the served
    model has no such class."""
    from visualize.examples import example_image

    served = ssd.Detector.load(SHIPPED, backend="torch", device="cpu")
    coffee = example_image("coffee")
    rows = learning_rows("coffee")
    run = HeadTraining(served.model, served.class_names, coffee, np.array([r[1:] for r in rows], np.float32),
                       [r[0] for r in rows], LearnRecipe(steps=15))
    history = list(run.steps())
    assert history[-1].loss < 0.6 * history[0].loss
    assert history[0].positive_probability < 0.02 and run.probe().mean_probability > 0.3
    trained = run.detector({"score_threshold": served.score_threshold})
    mugs = [d for d in trained.detect(coffee) if d.label == "mug"]
    assert mugs, [(d.label, d.score) for d in trained.detect(coffee)]
    box = torch.tensor([NEW_CLASS_EXAMPLES["coffee"][0][1]], dtype=torch.float32)
    assert float(box_iou(torch.tensor([mugs[0].box]), box)) >= 0.5
    assert "mug" not in served.class_names
