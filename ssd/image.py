"""Images in: whatever a user hands us -> an upright 8-bit RGB PIL image -> the network's normalised input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .config import SSDConfig


def to_rgb(image) -> Image.Image:
    """PIL image, HxW / HxWx3 / HxWx4 uint8 array, or a path -> upright RGB image.

    EXIF orientation is applied (boxes are then in the pixels the user sees); 16-bit and float images are
    scaled to 8 bits; transparency is composited on white; palette, CMYK, L, 1 … are converted.
    """
    if isinstance(image, str | Path):
        try:
            with Image.open(image) as im:
                im.load()
                image = im.copy() if im.mode != "P" else im.convert("RGBA")
                image.info.update(im.info)
                image.getexif().update(im.getexif())
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {str(image)!r}: {e}") from e
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"expected an HxW or HxWx3/4 uint8 array, got {image.dtype} array of shape {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a numpy array or a path, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels ({image.width}x{image.height})")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(image, dtype=np.float32)
        # 16-bit data spans 0..65535; smaller integer or float ranges are kept as they are.
        if a.max(initial=0) > 255:
            a = a / 257.0
        image = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def network_input(images, size: int) -> np.ndarray:
    """RGB PIL images -> the inference graph's input: each warped to size x size (SSD ignores the aspect ratio),
    bilinear, as uint8 (B, size, size, 3). What the detector feeds every backend, and what INT8 calibration
    feeds the float32 graph (ssd.export.int8)."""
    return np.stack([np.asarray(im.resize((size, size), Image.BILINEAR)) for im in images])


def normalise(images: torch.Tensor, cfg: SSDConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) RGB -> the network's input (x - pixel_mean) / pixel_std in `dtype` (the base network's
    own input scaling: ImageNet mean and std for VGG16, (x - 127) / 128 for EfficientNet-Lite)."""
    mean = torch.tensor(cfg.pixel_mean, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    return (images.to(dtype) - mean) / std
