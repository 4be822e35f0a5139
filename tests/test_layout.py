"""The package's layout holds: no import cycles, no other module's underscore names, imports pointing one way.

The import graph is read with ``ast`` (nothing is imported): every ``import`` and ``from ... import``
anywhere in a module (module level, inside functions, relative or absolute) is an edge to the package
module it names; ``from pkg import name`` is an edge to ``pkg.name`` where that is a module, else to
``pkg``. Imports under ``if TYPE_CHECKING:`` never run, so they are left out of the cycle check only.
Each check returns its violations as sentences naming the module, the line and the import, and a
synthetic package proves each one can fail.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "toolchain"
# bottom -> top: a module may import its own layer and the layers below it, never one above
LAYERS = ("runtime", "artifact", "data", "export", "train", "bench", "variants", "serve", "fleet", "web", "pipeline", "sweep", "cli")
BOTTOM, TOP = "", "__main__"  # the package's own __init__ (below everything) and `python -m toolchain`


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the package module imported
    line: int
    text: str  # the import as written, e.g. "from .model import load"
    name: str | None = None  # the name taken from target (from X import name), when not a module
    type_only: bool = False  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.source} line {self.line}: `{self.text}`"


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file for every .py under root (a package folder); a package is its __init__.py."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _base(module: str, is_package: bool, level: int) -> str:
    """The package a relative import with ``level`` dots starts from."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(parts[: len(parts) - (level - 1)])


def edges(root: Path) -> list[Edge]:
    """Every import of a package module by a package module."""
    mods, out = modules(root), []
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        guarded = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            found = []
            if isinstance(node, ast.Import):
                found = [(a.name, None) for a in node.names]
            else:
                pkg = _base(module, path.name == "__init__.py", node.level) if node.level else ""
                pkg = ".".join(p for p in (pkg, node.module or "") if p)
                for alias in node.names:
                    sub = f"{pkg}.{alias.name}"
                    found.append((sub, None) if sub in mods else (pkg, alias.name))
            for target, name in found:
                if target in mods:
                    out.append(Edge(module, target, node.lineno, ast.unparse(node), name, node.lineno in guarded))
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_owner(module: str) -> str | None:
    """The package a private module (``pkg.sub._helpers``) belongs to, or None for a public one."""
    parts = module.split(".")
    first = next((i for i, part in enumerate(parts) if _is_private(part)), None)
    return None if first is None else ".".join(parts[:first])


def find_cycles(graph: list[Edge]) -> list[str]:
    """One sentence per strongly connected group of modules that import each other, with one cycle spelled out."""
    succ: dict[str, dict[str, Edge]] = {}
    for e in graph:
        if not e.type_only and e.source != e.target:
            succ.setdefault(e.source, {}).setdefault(e.target, e)
    out = []
    for group in _strongly_connected(succ):
        start = min(group)
        path = _path_back(succ, start, group)
        out.append(f"import cycle among {len(group)} modules ({', '.join(sorted(group))}): "
                   + " -> ".join(str(e) for e in path))
    return out


def _strongly_connected(succ: dict[str, dict[str, Edge]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; only the groups of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(succ):
        if root in index:
            continue
        work = [(root, iter(sorted(succ.get(root, {}))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return groups


def _path_back(succ: dict[str, dict[str, Edge]], start: str, group: set[str]) -> list[Edge]:
    """The shortest chain of imports from start back to start inside group (breadth first)."""
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for target, edge in sorted(succ.get(node, {}).items()):
                if target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came[path[0].source])
                    return path
                if target in group and target not in came:
                    came[target] = edge
                    nxt.append(target)
        frontier = nxt
    raise AssertionError(f"{start} is in a cycle group but no path leads back")  # pragma: no cover


def private_imports(root: Path) -> list[str]:
    """`from X import _name` and `X._name` where X is another module of the package (a sibling's private
    submodule is the one exception: a package may keep helpers in its own _module)."""
    mods = modules(root)
    out = []
    for e in edges(root):
        if e.name is not None and _is_private(e.name) and e.target != e.source:
            out.append(f"{e} takes the private name {e.name!r} from {e.target}")
        owner = _private_owner(e.target)
        if owner is not None and e.source != owner and not e.source.startswith(owner + "."):
            out.append(f"{e} imports {e.target}, private to {owner}")
    for module, path in mods.items():
        out += _private_attributes(module, ast.parse(path.read_text(encoding="utf-8")), mods)
    return out


def _private_attributes(module: str, tree: ast.AST, mods: dict[str, Path]) -> list[str]:
    """`alias._name` where alias is bound to another package module by an import in this module."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods:
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            pkg = _base(module, module in mods and mods[module].name == "__init__.py", node.level) if node.level else ""
            pkg = ".".join(p for p in (pkg, node.module or "") if p)
            for a in node.names:
                if f"{pkg}.{a.name}" in mods:
                    bound[a.asname or a.name] = f"{pkg}.{a.name}"
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        chain, base = [], node.value
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id in bound:
            target = ".".join([bound[base.id], *chain])
            if target in mods and target != module:
                out.append(f"{module} line {node.lineno}: `{ast.unparse(node)}` reaches into {target}'s private "
                           f"name {node.attr!r}")
    return out


def layer_of(module: str) -> str:
    """The subpackage a module belongs to (its layer): BOTTOM for the package's __init__, TOP for __main__."""
    parts = module.split(".")
    return BOTTOM if len(parts) == 1 else parts[1]


def layer_violations(root: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    """Imports from a lower layer into a higher one, imports out of the runtime, and subpackages with no layer."""
    rank = {BOTTOM: -1, **{name: i for i, name in enumerate(layers)}, TOP: len(layers)}
    out = [f"{module} is in no layer: add {layer_of(module)!r} to LAYERS in tests/test_layout.py"
           for module in modules(root) if layer_of(module) not in rank]
    for e in edges(root):
        src, dst = layer_of(e.source), layer_of(e.target)
        if src == layers[0] and dst != layers[0]:
            out.append(f"{e} imports {e.target}: {root.name}/{layers[0]} imports nothing from {root.name} "
                       f"outside {layers[0]}")
        elif src in rank and dst in rank and rank[src] < rank[dst]:
            out.append(f"{e} imports {e.target}: layer {src!r} sits below {dst!r} (order bottom to top: "
                       f"{' < '.join(layers)})")
    return out


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


# -- the real package -----------------------------------------------------------------------------------------
def test_the_graph_sees_the_package():
    graph = edges(ROOT)
    assert len(modules(ROOT)) > 20 and len(graph) > 30
    assert any(e.source == "toolchain.__main__" and e.target.startswith("toolchain.cli") for e in graph)


def test_no_import_cycles():
    problems = find_cycles(edges(ROOT))
    assert not problems, _report(problems)


def test_no_private_names_from_other_modules():
    problems = private_imports(ROOT)
    assert not problems, _report(problems)


def test_imports_point_one_way():
    problems = layer_violations(ROOT)
    assert not problems, _report(problems)


# -- each check can fail ------------------------------------------------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_relative_and_function_level_imports_are_edges(tmp_path):
    root = _package(tmp_path, {
        "runtime/__init__.py": "from .model import load\n",
        "runtime/model.py": "def load():\n    from ..cli import main\n    from . import errors\n",
        "runtime/errors.py": "import pkg.runtime.model as m\n",
        "cli/__init__.py": "from pkg.runtime import load\n",
    })
    got = {(e.source, e.target, e.name) for e in edges(root)}
    assert got == {("pkg.runtime", "pkg.runtime.model", "load"), ("pkg.runtime.model", "pkg.cli", "main"),
                   ("pkg.runtime.model", "pkg.runtime.errors", None), ("pkg.runtime.errors", "pkg.runtime.model", None),
                   ("pkg.cli", "pkg.runtime", "load")}


def test_a_cycle_is_found_and_spelled_out(tmp_path):
    root = _package(tmp_path, {
        "bench/__init__.py": "",
        "bench/core.py": "from pkg.bench.decoder import run\n",
        "bench/decoder.py": "def run():\n    from . import cuda\n",
        "bench/cuda.py": "import pkg.bench.core\n",
        "bench/free.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .core import x\n",
        "bench/chart.py": "from .free import y\n",
    })
    problems = find_cycles(edges(root))
    assert problems == ["import cycle among 3 modules (pkg.bench.core, pkg.bench.cuda, pkg.bench.decoder): "
                        "pkg.bench.core line 1: `from pkg.bench.decoder import run` -> "
                        "pkg.bench.decoder line 2: `from . import cuda` -> pkg.bench.cuda line 1: `import pkg.bench.core`"]


def test_private_names_are_found(tmp_path):
    root = _package(tmp_path, {
        "export/__init__.py": "",
        "export/source.py": "def _read_json(): ...\ndef _own(): ...\nx = _own()\n",
        "export/parity.py": "from .source import _read_json, __doc__\n",
        "export/core.py": "import pkg.export.source\nfrom pkg.export import source as s\n"
                          "a = pkg.export.source._own()\nb = s._read_json\nc = s.__name__\n",
        "export/_helpers.py": "",
        "export/ok.py": "from ._helpers import x\n",
        "cli/__init__.py": "from pkg.export._helpers import x\n",
    })
    problems = private_imports(root)
    assert sorted(problems) == sorted([
        "pkg.export.parity line 1: `from .source import _read_json, __doc__` takes the private name '_read_json' "
        "from pkg.export.source",
        "pkg.cli line 1: `from pkg.export._helpers import x` imports pkg.export._helpers, private to pkg.export",
        "pkg.export.core line 3: `pkg.export.source._own` reaches into pkg.export.source's private name '_own'",
        "pkg.export.core line 4: `s._read_json` reaches into pkg.export.source's private name '_read_json'",
    ])


def test_layer_violations_are_found(tmp_path):
    root = _package(tmp_path, {
        "runtime/__init__.py": "import pkg\nfrom pkg.data import texts\n",
        "data/__init__.py": "", "data/texts.py": "from pkg.runtime import errors\n",
        "runtime/errors.py": "",
        "export/__init__.py": "def f():\n    from pkg.cli import main\n",
        "cli/__init__.py": "from pkg.export import f\n",
        "extra/__init__.py": "",
    })
    problems = layer_violations(root, ("runtime", "data", "export", "cli"))
    assert sorted(problems) == sorted([
        "pkg.extra is in no layer: add 'extra' to LAYERS in tests/test_layout.py",
        "pkg.runtime line 1: `import pkg` imports pkg: pkg/runtime imports nothing from pkg outside runtime",
        "pkg.runtime line 2: `from pkg.data import texts` imports pkg.data.texts: pkg/runtime imports nothing "
        "from pkg outside runtime",
        "pkg.export line 2: `from pkg.cli import main` imports pkg.cli: layer 'export' sits below 'cli' (order "
        "bottom to top: runtime < data < export < cli)",
    ])


@pytest.mark.parametrize("module, layer", [("toolchain", BOTTOM), ("toolchain.__main__", TOP),
                                           ("toolchain.runtime.model", "runtime"), ("toolchain.cli", "cli")])
def test_layer_of(module, layer):
    assert layer_of(module) == layer
