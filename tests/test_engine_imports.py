"""fsseg/engine imports form a one-way graph: every engine module imports what it needs at module level
(no import hidden in a function to break a cycle), and the module-level imports have no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import fsseg

PACKAGE = Path(fsseg.__file__).parent
ENGINE = PACKAGE / "engine"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _fsseg_imports(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsseg"):
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("fsseg")]
    return []


def test_engine_modules_import_fsseg_at_module_level_only():
    late = []
    for path in sorted(ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        late += [
            f"{path.name}:{node.lineno}"
            for node in ast.walk(tree)
            if _fsseg_imports(node) and id(node) not in top
        ]
    assert late == []


def test_engine_import_graph_has_no_cycle():
    modules = {_module(path): path for path in ENGINE.glob("*.py")}
    edges = {
        name: {target for node in ast.parse(path.read_text()).body for target in _fsseg_imports(node)}
        & set(modules)
        for name, path in modules.items()
    }
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, " -> ".join((*trail, name))
        if name in done:
            return
        for target in sorted(edges[name]):
            visit(target, (*trail, name))
        done.add(name)

    for name in sorted(edges):
        visit(name, ())
    assert edges["fsseg.engine.infer"] == set()  # the loop depends on no engine stage
