"""Dependencies point one way (docs/architecture.md): app.py -> ui -> visualize -> ssd; detect.py -> visualize;
train -> ssd. train/ draws its curves with visualize.plots and nothing else of visualize/; ssd/ imports none of
the others. The one way up: visualize/augment.py shows training's augmentation with train.transforms itself."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"ssd", "train", "visualize", "ui", "app", "detect", "bench", "tests"}


def project_imports(package: str) -> dict[str, set[str]]:
    """{file: dotted project modules it imports (at any depth, lazily or not)}."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = {n for n in names if n.split(".")[0] in PROJECT}
    return found


@pytest.mark.parametrize("package, allowed", [
    ("ssd", {"ssd"}),
    ("visualize", {"ssd", "visualize", "train.transforms"}),
    ("train", {"ssd", "train", "visualize.plots"}),
    ("ui", {"ssd", "visualize", "ui"}),
])
def test_dependencies_point_downward(package, allowed):
    for path, modules in project_imports(package).items():
        wrong = {m for m in modules if not any(m == a or m.startswith(a + ".") for a in allowed)}
        assert not wrong, f"{path} imports {sorted(wrong)}; {package}/ may import only {sorted(allowed)}"


def test_the_checker_sees_lazy_imports():
    # train/engine.py imports visualize.plots inside a function: the walk must find it, or the test above is blind.
    assert "visualize.plots" in project_imports("train")["train/engine.py"]


def test_only_the_augmentation_view_imports_train_and_only_its_transforms():
    users = {path for path, modules in project_imports("visualize").items()
             if any(m.startswith("train") for m in modules)}
    assert users == {"visualize/augment.py"}
    assert {m for m in project_imports("visualize")["visualize/augment.py"] if m.startswith("train")} == {
        "train.transforms"}
    # What the app then loads of train/: the package's __init__ (a docstring) and transforms, which needs only
    # what the app has anyway (numpy, torch, torchvision, Pillow) — no dataset, pack or engine code.
    assert project_imports("train")["train/__init__.py"] == set()
    third_party = set()
    for node in ast.walk(ast.parse((ROOT / "train" / "transforms.py").read_text())):
        if isinstance(node, ast.Import):
            third_party |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            third_party.add(node.module.split(".")[0])
    assert third_party <= {"__future__", "math", "os", "dataclasses", "typing", "numpy", "torch", "torchvision",
                           "PIL"}, third_party
