"""Teaching a trained SSD one more photo, in a few dozen steps of its own training (the app's Learn tab).

A copy of the network trains on augmented views of one photo with its ground truth: `ssd.augment`'s
`SSDAugmentation` makes the views, exactly as training draws them (a generator seeded by (seed, step, view), as
the training engine seeds its own), `MultiBoxLoss` matches, encodes and mines hard negatives, and an optimizer
steps. Only the multibox heads train: the base network and the extra layers are shared with the network the copy
was made from, frozen, and run without gradients, so a step costs one forward pass of the base and a backward
pass of the heads alone, and the copy costs the heads' memory, not the network's.

A class the network has never seen (a "mug") gets one more column in every confidence head: a copy of the
background column whose bias is lowered by log(`NEW_CLASS_ODDS`), so that in every default box the new class
starts at 1/99 of background's probability. The copy then starts as the network it came from (every other
class's probability is scaled by at least 0.99, and the new class is nowhere above 0.01), and the new column
starts from features that already tell objects from background: its gradient only has to turn "background
here" into "mug here" where the mug is. (A random column would start each default box at a random score for
the new class, detections included, and the first steps would spend themselves undoing it.)

The network's own state is never touched: the heads are deep copies, the shared layers run in eval mode under
`torch.no_grad`, and no parameter of theirs is handed to the optimizer.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .augment import SSDAugmentation
from .boxes import decode
from .detector import Detector
from .image import normalise, to_rgb
from .loss import MultiBoxLoss, confidence_loss, hard_negatives
from .matching import MatchResult, match
from .model import SSD
from .priors import default_boxes

# A new class starts at this many times less probable than background, in every default box.
NEW_CLASS_ODDS = 99.0
HEADS = ("loc_heads", "conf_heads")


@dataclass(frozen=True)
class LearnRecipe:
    """The fixed small schedule of one run: `steps` optimizer steps, each on the same `views` augmented views of
    the photo (one batch), SGD with momentum at `lr` after a linear warmup of `warmup` steps, then a cosine down
    to zero at the last step. `seed` fixes every augmentation draw (the run is then the same every time on one
    machine). lr 0.05: the paper's 1e-3 is for 32 photos a batch over 100k+ steps; here a few dozen steps must
    move a new class from p = 0.01 to a detection (at 0.02 the coffee photo's mug ends at 0.88 after 30 steps,
    at 0.05 at 0.96; bench/learn.py). `grad_clip`: the gradient's norm is cut to it, a guard for odd inputs that
    the shipped model never meets (its norms stay under 8 on the coffee photo)."""

    steps: int = 30
    views: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup: int = 3
    grad_clip: float = 10.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.views < 1:
            raise ValueError(f"a run needs at least one step of one view, got steps={self.steps}, "
                             f"views={self.views}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        span = max(self.steps - self.warmup, 1)
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / span))


def heads_copy(network: SSD) -> SSD:
    """A copy of `network` whose multibox heads are its own (deep copies) and whose other layers (base, extra
    layers) are `network`'s own modules, shared, not copied."""
    shared = {}
    for name, child in network.named_children():
        if name not in HEADS:
            for m in child.modules():
                shared[id(m)] = m
            for t in (*child.parameters(), *child.buffers()):
                shared[id(t)] = t
    return copy.deepcopy(network, shared)


def _grown(head: nn.Module, boxes: int, classes: int, extra: int, odds: float) -> None:
    """In place: the last conv of a confidence head (and a BatchNorm after it) with `extra` more classes per box,
    each a copy of the background channel with its output lowered by log(odds)."""
    layers = list(head) if isinstance(head, nn.Sequential) else [head]
    last = max((i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)), default=None)
    if last is None or not isinstance(head, nn.Sequential):
        raise ValueError(f"a confidence head must be an nn.Sequential ending in a Conv2d, got {type(head).__name__}")
    old, new = classes + 1, classes + 1 + extra
    # Output channel a·new + c of the grown layer is channel a·old + c of the old one; a new class copies c = 0.
    source = torch.tensor([a * old + (c if c < old else 0) for a in range(boxes) for c in range(new)])
    added = torch.tensor([a * new + c for a in range(boxes) for c in range(old, new)], dtype=torch.long)
    conv = layers[last]
    if conv.out_channels != boxes * old:
        raise ValueError(f"a confidence head's last conv has {conv.out_channels} outputs, expected {boxes} boxes × "
                         f"{old} scores")
    grown = nn.Conv2d(conv.in_channels, boxes * new, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      conv.groups, bias=conv.bias is not None, dtype=conv.weight.dtype, device=conv.weight.device)
    with torch.no_grad():
        grown.weight.copy_(conv.weight[source])
        if conv.bias is not None:
            grown.bias.copy_(conv.bias[source])
    head[last] = grown
    shifted = grown if conv.bias is not None else None
    for i in range(last + 1, len(layers)):
        bn = layers[i]
        if not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(f"a confidence head may end in a BatchNorm2d after its conv, not {type(bn).__name__}")
        wide = nn.BatchNorm2d(boxes * new, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                              dtype=bn.weight.dtype if bn.affine else None)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(bn, name)
                if value is not None:
                    getattr(wide, name).copy_(value[source])
        head[i] = wide
        shifted = wide if bn.affine else shifted
    if shifted is None:
        raise ValueError("a confidence head needs a bias (its conv's or a BatchNorm's) to start a new class below "
                         "background")
    with torch.no_grad():
        shifted.bias[added] -= math.log(odds)


def add_classes(network: SSD, new_classes: Sequence[str], odds: float = NEW_CLASS_ODDS) -> SSD:
    """In place (call it on a copy): one more confidence column per class of `new_classes` in every confidence
    head, after the network's own classes, each started from background (see the module's text); the network's
    config then counts them. The localisation heads predict one box per default box whatever its class, so they
    stay as they are."""
    if not new_classes:
        return network
    cfg = network.cfg
    for head, boxes in zip(network.conf_heads, cfg.boxes_per_cell):
        _grown(head, boxes, cfg.num_classes, len(new_classes), odds)
    network.cfg = cfg.replace(num_classes=cfg.num_classes + len(new_classes))
    return network


@dataclass(frozen=True)
class LearnStep:
    """One optimizer step: the MultiBox loss of its augmented views (before the update, as the step measured it:
    loc + conf), the learning rate, and how the network then saw the photo itself, un-augmented: the mean
    probability of the positives for their object's class and the mean background probability of the hard
    negatives (`Probe`), with the same weights. `seconds`: since the run began."""

    step: int
    loss: float
    loc: float
    conf: float
    positive_probability: float
    hard_negative_background: float
    lr: float
    seconds: float

    def as_dict(self) -> dict:
        return {"step": self.step, "loss": round(self.loss, 5), "loc": round(self.loc, 5),
                "conf": round(self.conf, 5), "positive_probability": round(self.positive_probability, 5),
                "hard_negative_background": round(self.hard_negative_background, 5), "lr": round(self.lr, 6),
                "seconds": round(self.seconds, 2)}


@dataclass
class Probe:
    """The network on the photo as inference sees it (warped to the input size, no augmentation), for the
    default boxes the photo's ground truth matches (positives) and the hard negatives its loss would mine.

    positives: (P,) default-box indices; objects: (P,) which ground truth each matched; probability: (P,) its
    softmax probability of that object's class; boxes: (P, 4) where the network now puts it (decoded, normalised
    xyxy); negatives: (K,) the hard negatives' indices, highest loss first; background: (K,) their probability of
    background."""

    step: int
    positives: torch.Tensor
    objects: torch.Tensor
    probability: torch.Tensor
    boxes: torch.Tensor
    negatives: torch.Tensor
    background: torch.Tensor

    @property
    def mean_probability(self) -> float:
        return float(self.probability.mean()) if self.probability.numel() else 0.0

    @property
    def mean_background(self) -> float:
        return float(self.background.mean()) if self.background.numel() else 1.0


def split_head(head: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """(the layers under a head's last conv, that conv and what follows it): the part that stays frozen and the
    part that trains. The paper's 3×3 heads are one conv (nothing under it); SSDLite's are a depthwise conv,
    BatchNorm and ReLU6 under a 1×1 conv."""
    last = max((i for i, m in enumerate(head) if isinstance(m, nn.Conv2d)), default=None)
    if last is None:
        raise ValueError("a head must have a Conv2d")
    return head[:last], head[last:]


@dataclass
class Views:
    """Augmented views of the photo as the trained layers see them: the inputs of each head's last layers, per
    source layer ((V, C_k, H_k, W_k) for the localisation and the confidence heads), with each view's ground
    truth (normalised xyxy boxes and labels, as `MultiBoxLoss` takes them)."""

    loc_inputs: list[torch.Tensor]
    conf_inputs: list[torch.Tensor]
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def join(cls, parts: list[Views]) -> Views:
        return cls([torch.cat(t) for t in zip(*(p.loc_inputs for p in parts))],
                   [torch.cat(t) for t in zip(*(p.conf_inputs for p in parts))],
                   [b for p in parts for b in p.boxes], [lab for p in parts for lab in p.labels])


@dataclass
class HeadTraining:
    """One run on one photo. `network`: the trained SSD to start from (never changed: see `heads_copy`), with
    its `class_names`; `image`: the photo (anything `ssd.image.to_rgb` reads); `boxes`: (M, 4) pixel xyxy of its
    ground truth and `labels` their class names, where a name the network does not know is a new class.

    What trains is the last layer of every head (and a BatchNorm after it): SSDLite's 1×1 convs that turn a
    default box's features into its offsets and class scores, most of the heads' parameters; the paper's heads
    are that one 3×3 conv. Everything under them is frozen, so an augmented view's inputs to those layers never
    change: `prepare` augments `recipe.views` views once (`SSDAugmentation`, seeded by (seed, view)) and runs
    the frozen layers on them, and every step trains on all of them (one batch: the loss of the same views falls
    from step to step). A fresh batch of views per step would cost the base's forward pass per view and step,
    the bulk of a training step (bench/learn.py).

    `steps()` runs the recipe and yields each step's `LearnStep`; `probe()` says how the network sees the photo
    now; `model` is the copy, a complete SSD, with `class_names` (the network's, then the new ones)."""

    network: SSD
    class_names: Sequence[str]
    image: object
    boxes: np.ndarray
    labels: Sequence[str]
    recipe: LearnRecipe = field(default_factory=LearnRecipe)

    def __post_init__(self):
        known = list(self.class_names)
        self.new_classes = list(dict.fromkeys(name for name in self.labels if name not in known))
        self.class_names = known + self.new_classes
        self.model = add_classes(heads_copy(self.network), self.new_classes).eval()
        self.cfg = self.model.cfg
        loc = [split_head(h) for h in self.model.loc_heads]
        conf = [split_head(h) for h in self.model.conf_heads]
        self.loc_under, self.loc_last = zip(*loc)
        self.conf_under, self.conf_last = zip(*conf)
        self.trainable = [p for layer in (*self.loc_last, *self.conf_last) for p in layer.parameters()]
        for p in self.trainable:
            p.requires_grad_(True)
        r = self.recipe
        self.optimizer = torch.optim.SGD(self.trainable, lr=r.lr_at(0), momentum=r.momentum,
                                         weight_decay=r.weight_decay)
        self.criterion = MultiBoxLoss(self.cfg)
        self.augmentation = SSDAugmentation.for_config(self.cfg)
        picture = to_rgb(self.image)
        self.photo = np.asarray(picture)
        self.pixel_boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if len(self.pixel_boxes) != len(self.labels):
            raise ValueError(f"{len(self.pixel_boxes)} boxes but {len(self.labels)} labels")
        self.label_ids = np.array([self.class_names.index(name) + 1 for name in self.labels], np.int64)
        self.priors = default_boxes(self.cfg)
        # The photo as inference sees it (warped to the input size, bilinear, as `Detector.preprocess`) and its
        # ground truth matched: what `probe` shows.
        size = self.cfg.image_size
        warped = np.asarray(picture.resize((size, size), resample=2))  # PIL's BILINEAR
        width, height = picture.size
        normalised = self.pixel_boxes / np.array([width, height, width, height], np.float32)
        self.photo_view = self._frozen(torch.from_numpy(warped[None].copy()).permute(0, 3, 1, 2),
                                       [torch.from_numpy(normalised)], [torch.from_numpy(self.label_ids)])
        self.matched: MatchResult = match(self.photo_view.boxes, self.photo_view.labels, self.priors,
                                          self.cfg.match_threshold)
        self.views: Views | None = None
        self.step_count = 0
        self.seconds = 0.0

    def _frozen(self, images: torch.Tensor, boxes, labels) -> Views:
        """uint8 (B, 3, S, S) -> the trained layers' inputs (the frozen layers run without gradients)."""
        x = normalise(images, self.cfg).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            sources = self.model.features(x)
            return Views([under(f) for under, f in zip(self.loc_under, sources)],
                         [under(f) for under, f in zip(self.conf_under, sources)], boxes, labels)

    def augmented(self, view: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """View `view` of the photo: SSD's augmentation (uint8 S×S×3), its boxes (normalised xyxy) and labels."""
        rng = np.random.default_rng([self.recipe.seed, view])
        image, boxes, labels = self.augmentation(self.photo, self.pixel_boxes, self.label_ids, rng=rng)
        return (image, torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.as_tensor(labels, dtype=torch.int64).reshape(-1))

    def prepare(self, chunk: int = 2) -> Iterator[int]:
        """Augment the views and run the frozen layers on them, `chunk` at a time; yields how many are ready."""
        if self.views is not None:
            return
        start, parts = time.perf_counter(), []
        for first in range(0, self.recipe.views, chunk):
            made = [self.augmented(v) for v in range(first, min(first + chunk, self.recipe.views))]
            images = torch.stack([torch.from_numpy(np.ascontiguousarray(m[0])).permute(2, 0, 1) for m in made])
            parts.append(self._frozen(images, [m[1] for m in made], [m[2] for m in made]))
            self.seconds += time.perf_counter() - start
            start = time.perf_counter()
            yield sum(len(p) for p in parts)
        self.views = Views.join(parts)

    def _predict(self, views: Views) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predictions([last(x) for last, x in zip(self.loc_last, views.loc_inputs)],
                                      [last(x) for last, x in zip(self.conf_last, views.conf_inputs)])

    def step(self) -> LearnStep:
        """One optimizer step on every view; the probe is taken with the weights the loss saw."""
        for _ in self.prepare():
            pass
        start = time.perf_counter()
        k = self.step_count
        lr = self.recipe.lr_at(k)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        seen = self.probe()
        loc, conf = self._predict(self.views)
        loc_loss, conf_loss = self.criterion(loc, conf, self.views.boxes, self.views.labels)
        self.optimizer.zero_grad(set_to_none=True)
        (loc_loss + conf_loss).backward()
        nn.utils.clip_grad_norm_(self.trainable, self.recipe.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        self.seconds += time.perf_counter() - start
        loc_loss, conf_loss = loc_loss.item(), conf_loss.item()
        return LearnStep(k + 1, loc_loss + conf_loss, loc_loss, conf_loss, seen.mean_probability,
                         seen.mean_background, lr, self.seconds)

    def steps(self) -> Iterator[LearnStep]:
        """The recipe's remaining steps, one at a time."""
        while self.step_count < self.recipe.steps:
            yield self.step()

    @torch.no_grad()
    def probe(self) -> Probe:
        """How the network sees the photo now (see `Probe`): the trained layers only, on the photo's cached
        inputs."""
        loc, conf = self._predict(self.photo_view)
        m, cfg = self.matched, self.cfg
        positives = m.positives[0].nonzero().squeeze(1)
        scores = conf.float().softmax(-1)[0]
        labels = m.labels[0]
        loss = confidence_loss(conf, m.labels)
        negatives = hard_negatives(loss, m.positives, cfg.neg_pos_ratio)[0].nonzero().squeeze(1)
        negatives = negatives[loss[0, negatives].argsort(descending=True)]
        boxes = decode(loc.float(), self.priors, cfg.variances)[0]
        return Probe(self.step_count, positives, m.matched_gt[0, positives], scores[positives, labels[positives]],
                     boxes[positives], negatives, scores[negatives, 0])

    def detector(self, card: dict | None = None) -> Detector:
        """The copy as it is now, as a `Detector` run by PyTorch on the CPU (`card`: its model card, e.g. with the
        network's score threshold). Ends the run: the gradients are let go and nothing trains any more."""
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.trainable:
            p.requires_grad_(False)
        self.views = None
        return Detector(self.model, self.cfg, self.class_names, device="cpu", card=card, backend="torch")
