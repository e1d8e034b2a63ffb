"""Small building blocks that the base networks' extra layers and the multibox heads share."""

from __future__ import annotations

from torch import nn


def conv_relu(cin, cout, batch_norm, **kw) -> nn.Sequential:
    """A convolution, optional BatchNorm (then no bias) and ReLU: the paper's VGG16 layers and extra layers."""
    layers = [nn.Conv2d(cin, cout, bias=not batch_norm, **kw)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def separable(cin, cout, stride=1, padding=1, mid=None) -> nn.Sequential:
    """SSDLite's extra layer: 1x1 to `mid`, 3x3 depthwise (stride, padding), 1x1 to `cout`; BN + ReLU6 each."""
    mid = mid or cout // 2
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, mid, 3, stride, padding, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


def init_added(modules) -> None:
    """Layers SSD adds to a base: Xavier-initialised convolutions (§3), zero biases, identity BatchNorm."""
    for m in (mod for part in modules for mod in part.modules()):
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    zero_biases(modules)


def zero_biases(modules) -> None:
    for m in (mod for part in modules for mod in part.modules()):
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
