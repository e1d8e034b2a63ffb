"""How the page writes its numbers: one rule per kind of number, used by every view, so one value never reads two
ways on the same page.

- Pixel coordinates and lengths: one decimal, rounded once from the value itself (what the API returns:
  `pixel_box`), so a table, the journey and the NMS view all say 370.5 where the API says 370.5.
- Scores, probabilities and IoUs: a fixed number of decimals (0.400 beside 0.901, never 0.4).
- Counts: the noun in the singular for one (1 positive, 2 positives)."""

from __future__ import annotations

PIXEL_DECIMALS = 1
SCORE_DECIMALS = 3


def pixel_box(box) -> list[float]:
    """A box (or any pixel values) rounded to PIXEL_DECIMALS, as the API and every view give it."""
    return [round(float(v), PIXEL_DECIMALS) for v in box]


def pixel_text(value: float) -> str:
    """One pixel value as the page writes it."""
    return f"{float(value):.{PIXEL_DECIMALS}f}"


def box_text(box) -> str:
    """`x1, y1, x2, y2` as the page writes a box: each value to PIXEL_DECIMALS (the API's numbers)."""
    return ", ".join(pixel_text(v) for v in box)


def score_text(value: float, decimals: int = SCORE_DECIMALS) -> str:
    """A score, probability or IoU with a fixed number of decimals."""
    return f"{float(value):.{decimals}f}"


def significant_text(value: float, digits: int = 3) -> str:
    """A probability to `digits` significant digits, trailing zeros kept (0.420, 1.23e-05): an untrained network's
    are far below 0.0001."""
    return f"{float(value):#.{digits}g}"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 positive`, `2 positives` (or the `plural` given)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
