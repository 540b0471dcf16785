"""The architecture holds: layers import one way, models/ stands alone, one MLflow boundary, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = ["data", "evaluation", "training", "tracking", "study", "report", "bench", "cli"]
"""Sub-packages of ablation/, each importing only from those before it (and the top-level modules)."""


def _modules() -> dict[str, Path]:
    out = {}
    for package in ("ablation", "models"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.If) and top_level_only:  # `if TYPE_CHECKING:` blocks are not run
            continue
    return found


MODULES = _modules()


def test_models_import_nothing_from_the_harness() -> None:
    for name, path in MODULES.items():
        if name.startswith("models"):
            assert not any(i.split(".")[0] == "ablation" for i in _imports(path, False)), name


def test_only_the_tracking_package_imports_mlflow() -> None:
    users = {n for n, p in MODULES.items() if any(i.split(".")[0] == "mlflow" for i in _imports(p, False))}
    assert users and all(n.startswith("ablation.tracking") for n in users), users


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_earlier_layers(layer: str) -> None:
    later = {f"ablation.{name}" for name in LAYERS[LAYERS.index(layer) + 1 :]}
    for name, path in MODULES.items():
        if name.startswith(f"ablation.{layer}"):
            bad = {i for i in _imports(path, False) if any(i == p or i.startswith(p + ".") for p in later)}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    graph = {
        name: {m for i in _imports(path, False) for m in (i, i.rsplit(".", 1)[0]) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


GROUND = ["names", "errors", "io", "runtime", "config"]
"""The ground floor: top-level modules every layer may import, which import no sub-package themselves."""


def test_at_most_9_modules_at_the_top_of_the_harness() -> None:
    top = {p.stem for p in (REPO / "ablation").glob("*.py")}
    assert len(top) <= 9 and set(GROUND) <= top, top
    assert top - set(GROUND) == {"__init__", "__main__", "encoders"}  # the entry point and the door to models/


@pytest.mark.parametrize("module", GROUND)
def test_the_ground_floor_imports_no_layer(module: str) -> None:
    imported = {i for i in _imports(REPO / "ablation" / f"{module}.py", False) if i.startswith("ablation.")}
    bad = {i for i in imported if i.split(".")[1] not in GROUND}
    assert not bad, f"ablation.{module} imports {sorted(bad)}"


def test_no_function_is_longer_than_60_lines() -> None:
    long = [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, long


def test_no_module_runs_code_at_import_time_beyond_definitions() -> None:
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.If)
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert docstring or isinstance(node, allowed), f"{name}:{node.lineno}"
