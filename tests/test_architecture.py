"""Dependencies point one way (docs/architecture.md): app.py -> ui -> visualize -> ssd; detect.py -> visualize;
train -> ssd; bench/ may import any of those, never tests/. ssd/ imports none of the others; train/ and
visualize/ import their own modules relatively (the wheel installs them as ssd_train and ssd_visualize). Checked
on the import graph of every module, lazy imports included: no circle between modules, none between packages, and
no tab of the page imports another tab."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"ssd", "train", "visualize", "ui", "app", "detect", "bench", "tests"}
CODE = ("ssd", "train", "visualize", "ui", "app.py", "detect.py", "bench", "tests")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files(package: str) -> list[Path]:
    target = ROOT / package
    return [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))


def module_graph() -> dict[str, set[str]]:
    """{module: the project's modules it imports}, relative imports resolved, imports inside functions included;
    `from package import name` counts the module package.name where there is one."""
    paths = {module_name(p): p for package in CODE for p in _files(package)}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in paths}
        known = set()
        for target in found:
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                known.add(target)
        graph[name] = known
    return graph


def project_imports(package: str) -> dict[str, set[str]]:
    """{file: dotted project modules it imports (at any depth, lazily or not)}."""
    graph = module_graph()
    return {str(_path_of(m)): targets for m, targets in graph.items() if m == package or m.startswith(package + ".")}


def _path_of(module: str) -> Path:
    path = Path(*module.split("."))
    return path / "__init__.py" if (ROOT / path).is_dir() else path.with_suffix(".py")


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of `graph`, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package, allowed", [
    ("ssd", {"ssd"}),
    ("visualize", {"ssd", "visualize"}),
    ("train", {"ssd", "train"}),
    ("ui", {"ssd", "visualize", "ui"}),
    ("bench", {"ssd", "train", "visualize", "ui", "app", "detect", "bench"}),  # never tests/: it runs without them
])
def test_dependencies_point_downward(package, allowed):
    for path, modules in project_imports(package).items():
        wrong = {m for m in modules if not any(m == a or m.startswith(a + ".") for a in allowed)}
        assert not wrong, f"{path} imports {sorted(wrong)}; {package}/ may import only {sorted(allowed)}"


def test_the_checker_sees_lazy_and_relative_imports():
    # train/__main__.py imports .datasets inside a function; ssd/detector.py imports .export inside one.
    graph = module_graph()
    assert "train.datasets" in graph["train.__main__"]
    assert {"ssd.export", "ssd.backends"} <= graph["ssd.detector"]
    assert "ssd.cli" in graph["ssd.export.__main__"]


def test_no_module_imports_itself_round_a_circle():
    assert cycle(module_graph()) is None, " -> ".join(cycle(module_graph()))


def test_no_package_imports_another_that_imports_it_back():
    packages = {}
    for module, targets in module_graph().items():
        top = module.split(".")[0]
        packages.setdefault(top, set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != top)
    assert cycle(packages) is None, " -> ".join(cycle(packages))


def test_no_tab_imports_another_tab():
    graph = module_graph()
    tabs = {m for m in graph if m.startswith("ui.") and m.endswith("_tab")}
    leaning = {m: sorted(graph[m] & tabs) for m in tabs if graph[m] & tabs}
    assert not leaning, f"tabs that import other tabs: {leaning}"


def test_evaluation_sits_on_the_detector_core_below_training_and_the_app():
    """ssd.evaluation uses the library; the library's core never needs it; training imports it downward."""
    graph = module_graph()
    evaluation = {m for m in graph if m == "ssd.evaluation" or m.startswith("ssd.evaluation.")}
    core = {m for m in graph if m.split(".")[0] == "ssd"} - evaluation
    leaning = {m: sorted(graph[m] & evaluation) for m in core if graph[m] & evaluation}
    assert not leaning, f"the library's core imports its evaluation: {leaning}"
    assert not any(t.split(".")[0] in {"train", "ui", "visualize"} for m in evaluation for t in graph[m])
    assert graph["train.engine"] & evaluation and graph["train.evaluate"] & evaluation


@pytest.mark.parametrize("package", ["train", "visualize"])
def test_installed_under_another_name_a_package_imports_itself_relatively(package):
    """pyproject.toml installs train/ as ssd_train and visualize/ as ssd_visualize: an absolute `train.x` inside
    them would fail in the wheel."""
    absolute = []
    for path in _files(package):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
            absolute += [f"{path.name}: {n}" for n in names if n and n.split(".")[0] == package]
    assert not absolute, absolute
