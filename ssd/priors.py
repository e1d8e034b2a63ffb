"""Default boxes (paper §2.2) and the identity of each one.

For feature map k of size |f_k| the scale is s_k = min_size_k / image_size, and every cell (i, j) gets, centred
at ((j + 0.5) / |f_k|, (i + 0.5) / |f_k|):
  * ratio 1 at scale s_k,
  * ratio 1 at scale s'_k = sqrt(s_k * s_{k+1})  (s_{k+1} = max_size_k / image_size),
  * for each extra ratio r: width s_k * sqrt(r), height s_k / sqrt(r), and the same for 1/r.
Boxes are ordered layer by layer, then row, column, and shape within the cell — the same order in which
`ssd.model.SSD` flattens its predictions, so index n of the predictions belongs to default box n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .config import SSDConfig


def _shape_names(ratios: tuple[int, ...]) -> tuple[str, ...]:
    names = ["1", "1'"]  # 1' is the extra ratio-1 box at scale s'_k
    for r in ratios:
        names += [f"{r}", f"1/{r}"]
    return tuple(names)


def _cell_shapes(cfg: SSDConfig, k: int) -> list[tuple[float, float]]:
    """(w, h) of the boxes of one cell of layer k, normalised to the image size."""
    s_k = cfg.min_sizes[k] / cfg.image_size
    s_prime = math.sqrt(cfg.min_sizes[k] * cfg.max_sizes[k]) / cfg.image_size
    shapes = [(s_k, s_k), (s_prime, s_prime)]
    for r in cfg.aspect_ratios[k]:
        shapes += [(s_k * math.sqrt(r), s_k / math.sqrt(r)), (s_k / math.sqrt(r), s_k * math.sqrt(r))]
    return shapes


@dataclass(frozen=True)
class PriorLayout:
    """All default boxes of a config and, for each, where it comes from.

    boxes:  (N, 4) cx, cy, w, h in [0, 1] (clipped, as the reference implementation does)
    layer, row, col, shape: (N,) int64 — source layer index, cell row i, cell column j, shape index in cell
    """

    config: SSDConfig
    boxes: torch.Tensor
    layer: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    shape: torch.Tensor

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @property
    def layer_offsets(self) -> tuple[int, ...]:
        """Index of the first default box of each layer (and the total at the end)."""
        counts = [f * f * b for f, b in zip(self.config.feature_maps, self.config.boxes_per_cell)]
        return tuple([0] + list(torch.tensor(counts).cumsum(0).tolist()))

    def shape_names(self, layer: int) -> tuple[str, ...]:
        """Names of the per-cell shapes of `layer`: '1', "1'" (the s'_k box), '2', '1/2', '3', '1/3'."""
        return _shape_names(self.config.aspect_ratios[layer])

    def index(self, layer: int, row: int, col: int, shape: int = 0) -> int:
        """Index of one default box, e.g. the 6 boxes of cell (7, 12) on fc7 are index(1, 7, 12, s), s < 6."""
        cfg = self.config
        f, b = cfg.feature_maps[layer], cfg.boxes_per_cell[layer]
        if not (0 <= row < f and 0 <= col < f and 0 <= shape < b):
            raise IndexError(
                f"{cfg.source_layers[layer]} has {f}x{f} cells with {b} boxes each; got cell ({row}, {col}), "
                f"shape {shape}"
            )
        return self.layer_offsets[layer] + (row * f + col) * b + shape

    def cell_indices(self, layer: int, row: int, col: int) -> list[int]:
        """Indices of all default boxes of one cell."""
        return [self.index(layer, row, col, s) for s in range(self.config.boxes_per_cell[layer])]

    def describe(self, index: int) -> dict:
        """Where default box `index` lives: layer name, feature-map size, cell, shape name and its box."""
        k = int(self.layer[index])
        return {
            "index": int(index),
            "layer": self.config.source_layers[k],
            "layer_index": k,
            "feature_map": self.config.feature_maps[k],
            "row": int(self.row[index]),
            "col": int(self.col[index]),
            "shape": self.shape_names(k)[int(self.shape[index])],
            "box_cxcywh": [float(v) for v in self.boxes[index]],
        }


@lru_cache(maxsize=16)
def prior_layout(cfg: SSDConfig) -> PriorLayout:
    """Default boxes of `cfg` with their identity (cached: configs are frozen and hashable)."""
    boxes, layer, row, col, shape = [], [], [], [], []
    for k, f in enumerate(cfg.feature_maps):
        shapes = torch.tensor(_cell_shapes(cfg, k), dtype=torch.float64)  # (b, 2)
        b = shapes.shape[0]
        i, j, s = torch.meshgrid(torch.arange(f), torch.arange(f), torch.arange(b), indexing="ij")
        i, j, s = i.reshape(-1), j.reshape(-1), s.reshape(-1)
        cx = (j.double() + 0.5) / f
        cy = (i.double() + 0.5) / f
        wh = shapes[s]
        boxes.append(torch.stack([cx, cy, wh[:, 0], wh[:, 1]], dim=1))
        layer.append(torch.full_like(i, k))
        row.append(i)
        col.append(j)
        shape.append(s)
    all_boxes = torch.cat(boxes).clamp_(0.0, 1.0).float()
    return PriorLayout(cfg, all_boxes, torch.cat(layer), torch.cat(row), torch.cat(col), torch.cat(shape))


def default_boxes(cfg: SSDConfig) -> torch.Tensor:
    """(N, 4) default boxes (cx, cy, w, h) in [0, 1]: 8732 for SSD300, 24564 for SSD512."""
    return prior_layout(cfg).boxes.clone()
