"""The package's import rules, checked by parsing every module of ``fl_async`` (nothing is imported).

Layers, lowest first (a module may import its own layer and the layers below it, never one above):

0. ``fl_async.errors``, ``fl_async.common``, ``fl_async._net``, ``fl_async._digest``, ``fl_async._loading``,
   ``fl_async._threads``, ``fl_async._credentials``, ``fl_async._link_limits``
1. ``fl_async.proto`` (generated), ``fl_async.codec``, ``fl_async._fastwire``, ``fl_async._fastparse``, ``fl_async._grpc``
2. ``fl_async.blobs``
3. ``fl_async.client``; then ``fl_async.superlink``, ``fl_async.supernode``, ``fl_async.server``, which do not
   import each other (the node runs a ClientApp, so ``supernode`` may import ``client``)
4. ``fl_async.testing``; newest Flower's names: ``fl_async.app``, ``fl_async.clientapp``, ``fl_async.serverapp``
5. ``fl_async.cli``, ``fl_async._ray_backend`` (the ``run --backend ray`` nodes)

and no import cycle between modules (imports inside ``if TYPE_CHECKING:`` are annotations only and not counted
for cycles; function-level imports are counted: a cycle hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fl_async"

LAYERS: dict[str, int] = {
    "fl_async.errors": 0,
    "fl_async.common": 0,
    "fl_async._net": 0,
    "fl_async._digest": 0,
    "fl_async._loading": 0,
    "fl_async._threads": 0,
    "fl_async._credentials": 0,
    "fl_async._keys": 0,
    "fl_async._link_limits": 0,
    "fl_async.proto": 1,
    "fl_async.codec": 1,
    "fl_async._fastwire": 1,
    "fl_async._fastparse": 1,
    "fl_async._grpc": 1,
    "fl_async.blobs": 2,
    "fl_async.client": 3,
    "fl_async.superlink": 3,
    "fl_async.supernode": 3,
    "fl_async.server": 3,
    "fl_async.testing": 4,
    "fl_async.app": 4,
    "fl_async.clientapp": 4,
    "fl_async.serverapp": 4,
    "fl_async.cli": 5,
    "fl_async._ray_backend": 5,
    "fl_async.__main__": 6,
}
SIBLINGS_APART = {"fl_async.superlink", "fl_async.supernode", "fl_async.server", "fl_async.client"}
ALLOWED_SIBLING = {("fl_async.supernode", "fl_async.client")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _area(module: str) -> str:
    """The layer key of a module (``fl_async.superlink.state`` -> ``fl_async.superlink``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _resolve(name: str) -> str | None:
    """The fl_async module an imported name refers to (``fl_async.x.y`` -> the longest existing module prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> list[tuple[str, bool]]:
    """``(imported fl_async module, under TYPE_CHECKING)`` for every import statement of ``module``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_stmt(sub, True)
                for sub in child.orelse:
                    visit_stmt(sub, typing_only)
            else:
                visit_stmt(child, typing_only)

    def visit_stmt(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    found.append((target, typing_only))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                if target:
                    found.append((target, typing_only))
        else:
            visit(node, typing_only)

    visit(tree, False)
    return [(t, typing_only) for t, typing_only in found if t != module]


GRAPH: dict[str, list[tuple[str, bool]]] = {m: _imports(m) for m in MODULES if not m.startswith("fl_async.proto.")}


def test_imports_point_one_way() -> None:
    """No module imports a layer above its own, and superlink / supernode / server / client stay apart."""
    problems = []
    for module, imports in GRAPH.items():
        src = _area(module)
        if src not in LAYERS:
            continue
        for target, _ in imports:
            dst = _area(target)
            if dst == src or dst not in LAYERS:
                continue
            if LAYERS[dst] > LAYERS[src]:
                problems.append(f"{module} imports {target} (layer {LAYERS[dst]} above {LAYERS[src]})")
            elif src in SIBLINGS_APART and dst in SIBLINGS_APART and (src, dst) not in ALLOWED_SIBLING:
                problems.append(f"{module} imports {target} (sibling packages stay apart)")
    assert not problems, "\n".join(problems)


def test_every_package_has_a_layer() -> None:
    """A new top-level module or package must be placed in the layers above (so the rule keeps covering it)."""
    areas = {_area(m) for m in GRAPH} - {"fl_async"}
    assert areas <= set(LAYERS), sorted(areas - set(LAYERS))


def test_no_import_cycles() -> None:
    """No cycle among the modules' imports (TYPE_CHECKING-only imports excepted)."""
    edges = {m: sorted({t for t, typing_only in imps if not typing_only and t in GRAPH}) for m, imps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            dfs(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_errors_module_imports_no_grpclib() -> None:
    """The exception tree is plain Python: the grpclib mapping lives in fl_async._grpc."""
    tree = ast.parse(MODULES["fl_async.errors"].read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith("grpclib")]
