"""Box formats and the offset encoding of eq. (2) with variances 0.1 / 0.2."""

import math

import torch

from ssd import decode, encode
from ssd.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

V = (0.1, 0.2)  # the paper's variances


def random_cxcywh(n, seed):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g)
    size = torch.rand(n, 2, generator=g) * 0.9 + 0.02
    return torch.cat([centre, size], 1)


def test_formats_by_hand():
    xyxy = torch.tensor([[0.1, 0.2, 0.5, 0.3]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), torch.tensor([[0.3, 0.25, 0.4, 0.1]]))
    torch.testing.assert_close(cxcywh_to_xyxy(torch.tensor([[0.3, 0.25, 0.4, 0.1]])), xyxy)


def test_encode_by_hand():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    # Ground truth centred 0.05 to the right of the prior, twice as wide, half as tall.
    gt = torch.tensor([[0.35, 0.45, 0.75, 0.55]])  # cx 0.55, cy 0.5, w 0.4, h 0.1
    expected = torch.tensor([[0.05 / 0.2 / 0.1, 0.0, math.log(2) / 0.2, math.log(0.5) / 0.2]])
    torch.testing.assert_close(encode(gt, prior, V), expected)
    # Other variances divide the same offsets.
    torch.testing.assert_close(encode(gt, prior, (1.0, 1.0)), expected * torch.tensor([0.1, 0.1, 0.2, 0.2]))


def test_decode_by_hand():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    loc = torch.tensor([[1.0, -2.0, 0.0, 5 * math.log(3)]])
    # cx = 0.5 + 1*0.1*0.2, cy = 0.5 - 2*0.1*0.2, w = 0.2, h = 0.2 * exp(0.2 * 5 ln 3) = 0.6
    cx, cy, w, h = 0.52, 0.46, 0.2, 0.6
    torch.testing.assert_close(decode(loc, prior, V), torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]))


def test_decode_of_encode_is_identity():
    priors = random_cxcywh(1000, 0)
    gt = cxcywh_to_xyxy(random_cxcywh(1000, 1))
    torch.testing.assert_close(decode(encode(gt, priors, V), priors, V), gt, atol=1e-5, rtol=1e-5)


def test_encode_of_decode_is_identity():
    priors = random_cxcywh(1000, 2)
    loc = torch.randn(1000, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(encode(decode(loc, priors, V), priors, V), loc, atol=1e-4, rtol=1e-4)


def test_zero_offsets_decode_to_the_prior():
    priors = random_cxcywh(50, 4)
    torch.testing.assert_close(decode(torch.zeros(50, 4), priors, V), cxcywh_to_xyxy(priors))


def test_batched_broadcast():
    priors = random_cxcywh(30, 5)
    gt = cxcywh_to_xyxy(torch.stack([random_cxcywh(30, 6), random_cxcywh(30, 7)]))
    batched = encode(gt, priors, V)
    assert batched.shape == (2, 30, 4)
    torch.testing.assert_close(batched[1], encode(gt[1], priors, V))
    torch.testing.assert_close(decode(batched, priors, V), gt, atol=1e-5, rtol=1e-5)
