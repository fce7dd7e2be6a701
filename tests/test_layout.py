"""The layout shows the architecture: no import cycle between our modules (lazy imports inside functions
count too), and the shared contracts in `perpwatch/` import nothing else of ours."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("perpwatch", "bot", "watchers", "storage")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of ours this one imports at run time (imports under `if TYPE_CHECKING:` do not run)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    out.add(full if full in known else child.module)
            elif isinstance(child, ast.Import):
                out.update(alias.name for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in out if name in known}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph = {name: _imports(path, known) for name, path in known.items()}
    for name, targets in graph.items():  # importing a.b.c runs a and a.b first
        for target in list(targets):
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in known and not name.startswith(parent + ".") and parent != name:
                    targets.add(parent)
    return graph


def test_no_module_imports_itself_back_through_others() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        for target in sorted(graph[node]):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                walk(target, [*path, target])
        done.add(node)

    for name in sorted(graph):
        walk(name, [name])
    assert cycles == []


def test_the_shared_contracts_depend_on_nothing_else_of_ours() -> None:
    graph = _graph()
    outside = {
        (m, t) for m, ts in graph.items() if m.startswith("perpwatch") for t in ts if not t.startswith("perpwatch")
    }
    assert outside == set()
