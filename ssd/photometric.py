"""The photometric distortion of SSD's augmentation (`ssd.augment`) as one affine colour map.

Every colour op of the recipe is pointwise and affine in RGB: brightness adds, contrast scales, saturation blends
with the luma, a hue shift is a rotation of the chroma plane in YIQ, a channel swap is a permutation. So they
compose, in the drawn order, into one 3×3 matrix + offset (`color_matrix`), which PIL applies in C in one pass
(`apply_color`).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["CHANNEL_ORDERS", "apply_color", "color_matrix", "describe_color"]

# RGB <-> YIQ (NTSC). Y is luma; I, Q span the chroma plane in which a hue shift is a rotation.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)
# The channel swaps the distortion draws from (out[c] = in[perm[c]]).
CHANNEL_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def color_matrix(brightness=0.0, contrast=1.0, saturation=1.0, hue_deg=0.0, contrast_first=True,
                 perm=(0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """(A 3x3, b 3) such that rgb' = A @ rgb + b applies, in order: brightness, contrast (if contrast_first),
    saturation, hue, contrast (if not contrast_first), channel permutation `perm` (out[c] = in[perm[c]])."""
    a, b = np.eye(3), np.zeros(3)

    def then(m, off=0.0):
        nonlocal a, b
        a, b = m @ a, m @ b + off

    then(np.eye(3), brightness)
    if contrast_first:
        then(contrast * np.eye(3))
    theta = math.radians(hue_deg)
    c, s = math.cos(theta), math.sin(theta)
    chroma = np.array([[1, 0, 0], [0, saturation * c, -saturation * s], [0, saturation * s, saturation * c]])
    then(_YIQ2RGB @ chroma @ _RGB2YIQ)
    if not contrast_first:
        then(contrast * np.eye(3))
    then(np.eye(3)[list(perm)])
    return a, b


def apply_color(image: Image.Image, color) -> Image.Image:
    """`image` with the colour map `color` ((A, b) of `color_matrix`, or None: unchanged); PIL applies the 3x4
    matrix per pixel in C, rounding and clipping to uint8."""
    if color is None:
        return image
    a, b = color
    return image.convert("RGB", tuple(np.concatenate([a, b[:, None]], 1).ravel().tolist()))


def describe_color(c: dict | None, p: float) -> str:
    """A sentence for the drawn colour ops `c` (keyword arguments of `color_matrix`, or None when none was drawn,
    each being drawn with probability `p`)."""
    if c is None:
        return f"No colour op was drawn (each happens with p = {p:g})."
    ops = []
    if c["brightness"] != 0.0:
        ops.append(f"brightness {c['brightness']:+.1f}")
    if c["contrast"] != 1.0:
        ops.append(f"contrast ×{c['contrast']:.2f} ({'before' if c['contrast_first'] else 'after'} the colour ops)")
    if c["saturation"] != 1.0:
        ops.append(f"saturation ×{c['saturation']:.2f}")
    if c["hue_deg"] != 0.0:
        ops.append(f"hue {c['hue_deg']:+.1f}°")
    if tuple(c["perm"]) != (0, 1, 2):
        ops.append("channels swapped to " + "".join("RGB"[i] for i in c["perm"]))
    return ", ".join(ops) + "."
