"""The package's layering (README, "Architecture"): no module imports one above it, and no import
cycle between modules. Read from the source with ``ast``, so lazy imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "deep_retrieval"

# Lowest first. A module may import its own layer's modules (within the same package) and any
# layer below it, never one above it.
LAYERS = [
    ("utils", "config"),
    ("data",),
    ("core",),
    ("evaluation",),
    ("baselines",),
    ("index",),
    ("training",),
    ("estimator", "dr_index"),
    ("experiments", "serving"),
    ("cli",),
    ("__main__", "__init__"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported deep_retrieval module, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    here = _module_name(path).split(".")
    package = here[:-1]  # "data.corpus" and "data.__init__" both lie in package "data"
    top_level = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
                names = [target] if node.module else [".".join([*base, a.name]) for a in node.names]
            elif node.module and node.module.startswith("deep_retrieval"):
                names = [node.module.removeprefix("deep_retrieval").lstrip(".")]
            else:
                continue
            out += [(n, id(node) in top_level) for n in names]
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("deep_retrieval").lstrip("."), id(node) in top_level)
                    for a in node.names if a.name.startswith("deep_retrieval")]
    return out


def _layer(module: str) -> str:
    first = module.split(".")[0] if module else "__init__"
    # `from . import __version__` names an object of the package, not a module
    return first if first in RANK else "__init__"


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        for target, _ in _imports(path):
            mine, theirs = _layer(me), _layer(target)
            if RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine] and theirs != mine):
                wrong.append(f"{me} imports {target or 'deep_retrieval'}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    for me, path in files.items():
        deps = set()
        for target, top in _imports(path):
            if not top:
                continue
            # `from .pkg import name` may name a module of the package or an object in it.
            if target not in files and target + ".__init__" in files:
                target = target + ".__init__"
            if target in files and target != me:
                deps.add(target)
        graph[me] = deps
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycles.append(" → ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
