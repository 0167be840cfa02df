"""The package's structure, read statically: every ``import`` of ``kerasface/`` parsed with ``ast``, none executed.

(a) no import cycle among kerasface modules (imports inside functions included: a cycle deferred
    to call time is still a cycle);
(b) layering: a module imports only from its own floor or below (``FLOORS``), and every module
    has a floor;
(c) ``argparse`` only under ``kerasface/cli/`` (the command line is the only place that parses argv);
(d) no underscore-private name of one kerasface module imported (or read as ``module._name``) by another;
(e) no import of a kerasface module inside a function, except the deliberate lazy imports of ``LAZY_IMPORTS``.

Each check is also run on a small synthetic tree with a known violation, so it is known to be able to fail.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kerasface"

# Floors, lowest first. A module may import modules of its own floor or of a lower one.
# "x.*" is the package x and everything under it; "x" is the module x alone.
FLOORS = {
    0: ("kerasface._lazy", "kerasface.io", "kerasface.ops", "kerasface.config", "kerasface.layers",
        "kerasface.face_spec", "kerasface.runtime"),  # contracts; runtime: TF kernels, set before importing it
    1: ("kerasface.losses.*", "kerasface.optimizers"),  # keras.ops building blocks; Adam with a fused update
    # the package root registers layers, losses and models; pretrained/ converts published weights
    2: ("kerasface.models.*", "kerasface.pretrained.*", "kerasface"),
    3: ("kerasface.data.*",),  # image sources, decoding, splits, sampling, pipelines
    4: ("kerasface.evaluation.*",  # reads images through data/, scores models
        "kerasface.recognition.*"),  # verify / represent / find / embed with any model and its FaceSpec
    5: ("kerasface.training.*",),  # the runner and its tasks: take a config, never a preset name
    6: ("kerasface.presets",),  # named settings over the schema
    7: ("kerasface.cli.*", "kerasface.__main__"),  # the command line
}

# Modules that may import kerasface modules inside functions, and why.
LAZY_IMPORTS = {
    "kerasface.data.insightface_bin": "decoding the .bin's images needs OpenCV; reading the pairs does not",
    "kerasface.cli.*": "a command imports its implementation (and TensorFlow with it) only when it runs, "
                       "so `kerasface --help` and `kerasface presets` stay fast",
}

ARGPARSE_HOME = "kerasface.cli.*"


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return module == base or module.startswith(base + ".")
    return module == pattern


def floor_of(module: str) -> int | None:
    found = [floor for floor, patterns in FLOORS.items() for p in patterns if _matches(module, p)]
    return max(found) if found else None


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the kerasface module imported (a package's __init__ for names it exports)
    name: str | None  # the name taken from ``target`` (None: the module itself)
    line: int
    in_function: bool

    def __str__(self):
        what = f"{self.target}.{self.name}" if self.name else self.target
        return f"{self.importer}:{self.line} -> {what}"


def module_sources(package: Path = PACKAGE) -> dict[str, tuple[str, bool]]:
    """``{module name: (source, is_package)}`` for every ``.py`` file of ``package``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        out[name] = (path.read_text(encoding="utf-8"), is_package)
    return out


@dataclass
class Tree:
    """The parsed imports of a set of modules."""

    modules: dict[str, tuple[str, bool]]

    @functools.cached_property
    def parsed(self) -> dict[str, ast.Module]:
        return {name: ast.parse(src, filename=name) for name, (src, _) in self.modules.items()}

    def _absolute(self, importer: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = importer.split(".")
        if not self.modules[importer][1]:  # a plain module: relative to its package
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    @functools.cached_property
    def imports(self) -> list[Import]:
        """Every import of a kerasface module, at module level or inside a function."""
        out = []
        for importer, tree in self.parsed.items():
            for node, in_function in _walk_imports(tree):
                if isinstance(node, ast.Import):
                    out += [Import(importer, a.name, None, node.lineno, in_function)
                            for a in node.names if _is_ours(a.name)]
                    continue
                source = self._absolute(importer, node)
                if not _is_ours(source):
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in self.modules:
                        out.append(Import(importer, sub, None, node.lineno, in_function))
                    else:
                        out.append(Import(importer, source, alias.name, node.lineno, in_function))
        return out

    @functools.cached_property
    def stdlib_imports(self) -> list[tuple[str, str, int]]:
        """``(importer, top-level module, line)`` of every import of a module outside kerasface."""
        out = []
        for importer, tree in self.parsed.items():
            for node, _ in _walk_imports(tree):
                if isinstance(node, ast.Import):
                    out += [(importer, a.name.split(".")[0], node.lineno) for a in node.names]
                elif not node.level and node.module:
                    out.append((importer, node.module.split(".")[0], node.lineno))
        return out

    def graph(self) -> dict[str, set[str]]:
        edges = {m: set() for m in self.modules}
        for imp in self.imports:
            if imp.target in self.modules:
                edges[imp.importer].add(imp.target)
        return edges

    def private_attribute_reads(self) -> list[str]:
        """``module._name`` read through a name bound to another kerasface module by an import."""
        out = []
        for importer, tree in self.parsed.items():
            bound = {}  # local name -> module
            for node, _ in _walk_imports(tree):
                if isinstance(node, ast.Import):
                    for a in node.names:
                        if _is_ours(a.name):
                            bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                else:
                    source = self._absolute(importer, node)
                    for a in node.names:
                        if f"{source}.{a.name}" in self.modules:
                            bound[a.asname or a.name] = f"{source}.{a.name}"
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                    continue
                chain, value = [], node.value
                while isinstance(value, ast.Attribute):
                    chain.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in bound:
                    module = ".".join([bound[value.id], *reversed(chain)])
                    if module in self.modules and module != importer:
                        out.append(f"{importer}:{node.lineno} -> {module}.{node.attr}")
        return out


def _is_ours(module: str) -> bool:
    return module == "kerasface" or module.startswith("kerasface.")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _walk_imports(tree: ast.Module):
    """``(import node, inside a function?)`` for every import statement of ``tree``."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            stack.append((child, inner))


# ----------------------------------------------------------------------------- the checks
def import_cycles(tree: Tree) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    graph = tree.graph()
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def modules_without_floor(tree: Tree) -> list[str]:
    return [m for m in sorted(tree.modules) if floor_of(m) is None]


def upward_imports(tree: Tree) -> list[str]:
    out = []
    for imp in tree.imports:
        low, high = floor_of(imp.importer), floor_of(imp.target)
        if low is not None and high is not None and high > low:
            out.append(f"{imp} (floor {low} -> {high})")
    return sorted(set(out))


def argparse_outside_cli(tree: Tree) -> list[str]:
    return sorted({f"{m}:{line}" for m, top, line in tree.stdlib_imports
                   if top == "argparse" and not _matches(m, ARGPARSE_HOME)})


def private_imports(tree: Tree) -> list[str]:
    named = [str(imp) for imp in tree.imports
             if imp.name and _is_private(imp.name) and imp.target != imp.importer]
    return sorted(set(named + tree.private_attribute_reads()))


def function_level_imports(tree: Tree, allowed: dict = LAZY_IMPORTS) -> tuple[list[str], list[str]]:
    """(offenders, allowed lazy imports): import statements of kerasface modules inside functions."""
    offenders, lazy = set(), set()
    for imp in tree.imports:
        if imp.in_function:
            where = lazy if any(_matches(imp.importer, p) for p in allowed) else offenders
            where.add(f"{imp.importer}:{imp.line} -> {imp.target}")
    return sorted(offenders), sorted(lazy)


@pytest.fixture(scope="module")
def tree() -> Tree:
    t = Tree(module_sources())
    assert "kerasface.models.registry" in t.modules and len(t.imports) > 50  # the parser sees the package
    return t


# ----------------------------------------------------------------------------- on the real tree
def test_the_floor_table_is_consistent():
    patterns = [p for ps in FLOORS.values() for p in ps]
    assert len(patterns) == len(set(patterns))
    assert list(FLOORS) == sorted(FLOORS)
    assert floor_of("kerasface.models.registry") == 2 and floor_of("kerasface.cli") == 7
    assert floor_of("kerasface.cli_pack") is None and floor_of("kerasface.ops") == 0


def test_no_import_cycle(tree):
    cycles = import_cycles(tree)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_module_has_a_floor(tree):
    missing = modules_without_floor(tree)
    assert not missing, f"modules with no floor in FLOORS: {missing}"


def test_no_import_runs_up_the_floors(tree):
    up = upward_imports(tree)
    assert not up, f"{len(up)} imports run up the floors:\n" + "\n".join(up)


def test_argparse_only_under_cli(tree):
    found = argparse_outside_cli(tree)
    assert not found, f"argparse imported outside kerasface/cli/: {found}"


def test_no_private_name_crosses_modules(tree):
    found = private_imports(tree)
    assert not found, f"{len(found)} private names imported across modules:\n" + "\n".join(found)


def test_kerasface_imports_at_module_top(tree):
    offenders, lazy = function_level_imports(tree)
    assert not offenders, (f"{len(offenders)} function-level kerasface imports outside LAZY_IMPORTS "
                           f"({len(lazy)} allowed):\n" + "\n".join(offenders))


# ----------------------------------------------------------------------------- the checks can fail
SYNTHETIC = {
    "kerasface": ("from kerasface import models\n", True),
    "kerasface.ops": ("import numpy\n", False),
    "kerasface.models": ("from .registry import build\n", True),
    "kerasface.models.registry": ("from kerasface.ops import x\nfrom kerasface.data.images import _crop\n", False),
    "kerasface.data": ("", True),
    "kerasface.data.images": ("import argparse\nfrom . import pipeline\n", False),
    "kerasface.data.pipeline": (
        "from kerasface.data import images\n"
        "def f():\n    from kerasface.training import run\n    return images._decode(run)\n", False),
    "kerasface.training": ("", True),
    "kerasface.training.run": ("import argparse\n", False),
    "kerasface.cli": ("", True),
    "kerasface.cli.main": ("import argparse\ndef main():\n    from kerasface.training import run\n", False),
    "kerasface.stray": ("", False),
}


def test_checks_find_the_violations_of_a_synthetic_tree():
    t = Tree(SYNTHETIC)
    assert import_cycles(t) == [["kerasface.data.images", "kerasface.data.pipeline"]]
    assert modules_without_floor(t) == ["kerasface.stray"]
    assert upward_imports(t) == [
        "kerasface.data.pipeline:3 -> kerasface.training.run (floor 3 -> 5)",
        "kerasface.models.registry:2 -> kerasface.data.images._crop (floor 2 -> 3)",
    ]
    assert argparse_outside_cli(t) == ["kerasface.data.images:1", "kerasface.training.run:1"]
    assert private_imports(t) == ["kerasface.data.pipeline:4 -> kerasface.data.images._decode",
                                  "kerasface.models.registry:2 -> kerasface.data.images._crop"]
    offenders, lazy = function_level_imports(t)
    assert offenders == ["kerasface.data.pipeline:3 -> kerasface.training.run"]
    assert lazy == ["kerasface.cli.main:3 -> kerasface.training.run"]
