"""MultiBox loss (paper eq. 1, §2.2 "Hard negative mining"): smooth-L1 on positives + softmax loss over the
positives and the hardest negatives, at most 3 negatives per positive, divided by the number of positives."""

import torch

import ssd
from ssd import MultiBoxLoss, hard_negatives, multibox_loss
from ssd.boxes import cxcywh_to_xyxy


def background_loss(conf):
    """-log softmax(conf)[background], by hand."""
    return torch.logsumexp(conf, dim=-1) - conf[..., 0]


def test_three_negatives_per_positive_are_the_hardest():
    g = torch.Generator().manual_seed(0)
    conf = torch.randn(2, 50, 4, generator=g)
    labels = torch.zeros(2, 50, dtype=torch.long)
    labels[0, [3, 17, 30, 41]] = torch.tensor([1, 2, 3, 1])  # 4 positives in image 0, none in image 1
    bg = background_loss(conf)
    neg = hard_negatives(bg, labels > 0, neg_pos_ratio=3)
    assert neg.sum(dim=1).tolist() == [12, 0]
    assert not (neg & (labels > 0)).any()
    candidates = [n for n in range(50) if labels[0, n] == 0]
    hardest = sorted(candidates, key=lambda n: -float(bg[0, n]))[:12]
    assert sorted(torch.nonzero(neg[0]).flatten().tolist()) == sorted(hardest)


def test_mining_takes_all_negatives_when_there_are_too_few():
    conf = torch.randn(1, 10, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([[1, 1, 1, 2, 2, 2, 0, 0, 0, 0]])  # 6 positives would want 18 negatives; 4 exist
    neg = hard_negatives(background_loss(conf), labels > 0, neg_pos_ratio=3)
    assert neg[0].tolist() == [False] * 6 + [True] * 4


def test_loss_value_by_hand():
    g = torch.Generator().manual_seed(2)
    loc, loc_t = torch.randn(1, 20, 4, generator=g), torch.randn(1, 20, 4, generator=g)
    conf = torch.randn(1, 20, 5, generator=g)
    labels = torch.zeros(1, 20, dtype=torch.long)
    labels[0, 5], labels[0, 11] = 2, 4
    loc_loss, conf_loss = multibox_loss(loc, conf, loc_t, labels, neg_pos_ratio=3)

    def smooth_l1(x):
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5

    positives = [5, 11]
    want_loc = sum(smooth_l1(float(loc[0, n, c] - loc_t[0, n, c])) for n in positives for c in range(4)) / 2
    log_p = torch.log_softmax(conf[0], dim=-1)
    negatives = sorted((n for n in range(20) if n not in positives), key=lambda n: float(log_p[n, 0]))[:6]
    want_conf = (-sum(float(log_p[n, labels[0, n]]) for n in positives)
                 - sum(float(log_p[n, 0]) for n in negatives)) / 2
    assert abs(float(loc_loss) - want_loc) < 1e-5
    assert abs(float(conf_loss) - want_conf) < 1e-5


def test_no_objects_gives_zero_loss_not_nan():
    cfg = ssd.SSD300_VOC
    loc = torch.randn(2, 8732, 4, requires_grad=True)
    conf = torch.randn(2, 8732, 21, requires_grad=True)
    loss_fn = MultiBoxLoss(cfg)
    empty = [torch.zeros(0, 4)] * 2
    loc_loss, conf_loss = loss_fn(loc, conf, empty, [torch.zeros(0, dtype=torch.long)] * 2)
    total = loc_loss + conf_loss
    assert torch.isfinite(total) and total.item() == 0.0
    total.backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(conf.grad).all()


def test_gradients_reach_every_head():
    torch.manual_seed(0)
    cfg = ssd.SSD300_VOC.replace(width=0.125)
    model = ssd.build_ssd(cfg)
    layout = ssd.prior_layout(cfg)
    # One object exactly on a default box of every source layer, so that each layer has a positive.
    cells = [layout.index(k, f // 2, f // 2, 0) for k, f in enumerate(cfg.feature_maps)]
    boxes = cxcywh_to_xyxy(layout.boxes[cells]).clamp(0, 1)
    labels = torch.arange(1, len(cells) + 1)
    loc, conf = model(torch.randn(1, 3, 300, 300))
    loc_loss, conf_loss = MultiBoxLoss(cfg)(loc, conf, [boxes], [labels])
    (loc_loss + conf_loss).backward()
    assert torch.isfinite(loc_loss) and torch.isfinite(conf_loss) and loc_loss.item() > 0 and conf_loss.item() > 0
    for k, name in enumerate(cfg.source_layers):
        for kind, head in (("loc", model.loc_heads[k]), ("conf", model.conf_heads[k])):
            grad = head[0].weight.grad
            assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches the {kind} head of {name}"
    assert model.base["conv1_1"][0].weight.grad.abs().sum() > 0
    assert model.l2norm.weight.grad.abs().sum() > 0
