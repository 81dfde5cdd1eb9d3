"""The folder tree is the architecture: every import in the package, including imports inside
functions, points one way, and no modules import each other in a circle.

    base (errors, files, deprecation) <- engine <- methods <- plot <- {cli, viewer}
    models <- {cli, viewer};  the facade rflens/__init__ <- {cli, viewer}

The upward imports allowed: a result object's ``plot`` / ``plot_grid`` / ``_repr_png_`` method
whose whole body is ``from ..plot import f`` and ``return f(self, ...)``, and the facade's
``widget`` whose whole body is ``from .viewer.widget import widget`` and its return (the notebook
widget is the viewer; anywidget loads only when it is asked for).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rflens"

MAY_IMPORT = {
    "base": {"base"},
    "engine": {"base", "engine"},
    "methods": {"base", "engine", "methods"},
    "models": {"base", "models"},
    "plot": {"base", "engine", "methods", "plot"},
    "facade": {"base", "engine", "methods", "models", "facade"},
    "viewer": {"base", "engine", "methods", "plot", "models", "facade", "viewer"},
    "cli": {"base", "methods", "plot", "models", "facade", "viewer", "cli"},
}
# the CLI calls the public API only: the facade and the public surface of each subpackage
CLI_MAY_IMPORT = {"rflens", "rflens.errors", "rflens.files", "rflens.methods", "rflens.models", "rflens.plot",
                  "rflens.viewer"}
DELEGATING_METHODS = {"plot": "plot", "plot_grid": "plot", "_repr_png_": "plot", "widget": "viewer"}  # -> its layer


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module == "rflens":
        return "facade"
    if parts[1] in ("errors", "files", "deprecation", "_moved", "_lazy"):
        return "base"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Imports(ast.NodeVisitor):
    """Every import of an rflens module, with the function it sits in (None: module level)."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int, ast.AST | None]] = []
        self.functions: list[ast.AST] = []
        self.typing_only: set[int] = set()  # lines of imports under `if TYPE_CHECKING:`

    def visit_If(self, node):
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            self.typing_only |= {n.lineno for s in node.body for n in ast.walk(s) if isinstance(n, ast.stmt)}
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        self.functions.append(node)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.split(".")[0] == "rflens":
                self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        target = _resolve(self.module, self.is_package, node)
        if target.split(".")[0] != "rflens":
            return
        for alias in node.names:  # `from . import spread` imports a module
            sub = f"{target}.{alias.name}"
            self._add(sub if sub in MODULES else target, node)

    def _add(self, target: str, node):
        self.found.append((target, node.lineno, self.functions[-1] if self.functions else None))


def imports() -> list[tuple[str, str, int, ast.AST | None]]:
    edges = []
    for module, path in MODULES.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text()))
        edges += [(module, target, line, fn) for target, line, fn in visitor.found if target != module]
        TYPING_ONLY.update((module, line) for line in visitor.typing_only)
    return edges


TYPING_ONLY: set[tuple[str, int]] = set()  # (module, line): imports only type checkers run


def _is_delegation(fn: ast.AST | None, target: str) -> bool:
    """A ``plot``-like method made of one import from rflens.plot and one return (the facade's
    ``widget``: from rflens.viewer)."""
    if fn is None or DELEGATING_METHODS.get(fn.name) != layer_of(target):
        return False
    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return len(body) == 2 and isinstance(body[0], ast.ImportFrom) and isinstance(body[1], ast.Return)


EDGES = imports()


def test_the_walk_sees_imports_inside_functions_too():
    lazy = [(m, t) for m, t, _, fn in EDGES if fn is not None]
    assert ("rflens.engine.analyze", "rflens.engine.probe") in lazy   # method="probe" imports the oracle lazily
    assert len(MODULES) > 40 and len(EDGES) > 150


def test_every_import_points_down_the_layers():
    wrong = [f"{m}:{line} imports {t} ({layer_of(m)} -> {layer_of(t)})"
             for m, t, line, fn in EDGES
             if layer_of(t) not in MAY_IMPORT[layer_of(m)] and not _is_delegation(fn, t)]
    assert not wrong, "imports against the direction:\n" + "\n".join(wrong)


def test_the_cli_imports_only_public_names_of_public_modules():
    wrong = []
    for module, path in MODULES.items():
        if layer_of(module) != "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, path.name == "__init__.py", node)
                if target.startswith("rflens") and layer_of(target) != "cli":
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    if target not in CLI_MAY_IMPORT or private:
                        wrong.append(f"{module}:{node.lineno} from {target} import {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.Import):
                wrong += [f"{module}:{node.lineno} import {a.name}" for a in node.names
                          if a.name.startswith("rflens") and a.name not in CLI_MAY_IMPORT]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rflens" \
                    and node.attr.startswith("_") and node.attr != "__version__":
                wrong.append(f"{module}:{node.lineno} rflens.{node.attr}")
    assert not wrong, "the CLI reaches past the public API:\n" + "\n".join(wrong)


def test_result_objects_plot_by_a_one_line_delegation():
    upward = sorted({(m, fn.name) for m, t, _, fn in EDGES if _is_delegation(fn, t)})
    assert ("rflens.engine.unit", "plot") in upward and ("rflens.methods.gradient", "_repr_png_") in upward
    assert all(layer_of(m) in ("engine", "methods") for m, name in upward if name != "widget")
    assert [m for m, name in upward if name == "widget"] == ["rflens"]


def test_no_modules_import_each_other_in_a_circle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, t, line, fn in EDGES:
        # names imported for type hints only are no import at run time: they make no cycle
        if t in MODULES and not _is_delegation(fn, t) and (m, line) not in TYPING_ONLY:
            graph[m].add(t)
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_longer_than_600_lines(module):
    assert len(MODULES[module].read_text().splitlines()) <= 600


def test_the_layer_test_catches_an_engine_module_importing_plot_outside_a_delegation():
    source = ("class Unit:\n    def plot(self):\n        from ..plot import unit_plot\n        return unit_plot(self)\n"
              "    def show(self):\n        from ..plot import unit_plot\n        unit_plot(self)\n        return 1\n")
    visitor = _Imports("rflens.engine.field", False)
    visitor.visit(ast.parse(source))
    verdicts = [_is_delegation(fn, target) for target, _, fn in visitor.found]
    assert verdicts == [True, False]


def test_the_module_paths_of_0_1_still_import_with_a_deprecation_warning():
    import importlib
    import sys

    import rflens
    from rflens._moved import MOVED
    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}; the old path goes away"):
            module = importlib.import_module(old)
        assert dir(module) == dir(importlib.import_module(new))
    from rflens.checkpoints import load_weights
    assert load_weights is rflens.models.load_weights
    assert callable(rflens.adapt) and callable(rflens.segment)  # names that were always the functions
