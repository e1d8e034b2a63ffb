"""Example photos (scikit-image's bundled samples, no download) with hand-made ground-truth boxes.

The boxes were drawn by eye on the original pixels, PASCAL VOC style (tight around the visible object).
They are teaching material for the matching view, not a benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Example:
    name: str
    loader: str  # function name in skimage.data
    note: str
    objects: tuple[tuple[str, tuple[int, int, int, int]], ...]  # (VOC class, (x1, y1, x2, y2) pixels)


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example("astronaut", "astronaut", "Eileen Collins (512×512). One person; the shuttle is a model.",
                (("person", (20, 15, 380, 512)),)),
        Example("cat", "chelsea", "Chelsea the cat (451×300): a large object that fills the frame.",
                (("cat", (15, 0, 410, 300)),)),
        Example("motorcycle", "stereo_motorcycle", "A motorcycle in a garage (741×500), with a bicycle cut off "
                "at the left edge: one large and one small object.",
                (("motorbike", (90, 95, 685, 452)), ("bicycle", (0, 135, 45, 232)))),
        Example("coffee", "coffee", "A cup of coffee (600×400). Cups are not a VOC class; the table under it "
                "(diningtable) is the only VOC object.",
                (("diningtable", (0, 0, 600, 400)),)),
    )
}


def example_names() -> list[str]:
    return list(EXAMPLES)


def examples_for(class_names) -> list[str]:
    """The examples whose every object is of one of `class_names`: those a model of these classes can be shown
    matching without a ground-truth row it cannot read (a model of other classes than VOC's fits few or none).
    An example is kept whole or not at all: dropping the objects a model lacks would leave objects in the
    photo that its ground truth calls background."""
    known = set(class_names)
    return [e.name for e in EXAMPLES.values() if all(label in known for label, _ in e.objects)]


def example_for(class_names, preferred: str) -> str | None:
    """The example a view of a model of `class_names` starts from: `preferred` if it fits them (`examples_for`),
    else the first that does, else None (the view then asks for a photo of one's own)."""
    fitting = examples_for(class_names)
    return preferred if preferred in fitting else next(iter(fitting), None)


@lru_cache(maxsize=8)
def _load(name: str) -> Image.Image:
    import skimage.data

    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; examples are {example_names()}")
    data = getattr(skimage.data, EXAMPLES[name].loader)()
    if isinstance(data, tuple):  # stereo_motorcycle returns (left, right, disparity)
        data = data[0]
    return Image.fromarray(data).convert("RGB")


def example_image(name: str) -> Image.Image:
    """The example photo as an RGB PIL image (a fresh copy)."""
    return _load(name).copy()


def example_annotations(name: str) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Hand-made ground truth of an example: [(VOC class, (x1, y1, x2, y2) pixels), ...]."""
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; examples are {example_names()}")
    return list(EXAMPLES[name].objects)


def write_examples(directory: str | Path) -> dict[str, Path]:
    """Save every example photo as `<name>.jpg` in `directory` (for upload widgets); returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in EXAMPLES:
        path = directory / f"{name}.jpg"
        if not path.exists():
            _load(name).save(path, quality=92)
        paths[name] = path
    return paths
