"""The package's import graph has no cycle: dependencies point one way.

Every ``import`` and ``from ... import`` a module runs counts, at module level and inside
functions alike: a lazy import still ties two modules together. Imports under
``if TYPE_CHECKING:`` never run (annotations are not evaluated), so they are left out of the
cycle check; metrics and tracing may not even name a type of the bus that way.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import events_celery

PACKAGE = Path(events_celery.__file__).resolve().parent
ROOT = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                inside.update(id(n) for n in ast.walk(statement))
    return inside


def imported(path: Path, modules: set[str], *, type_checking: bool = False) -> Iterator[str]:
    """The package's modules that ``path`` imports.

    ``from a import b`` imports ``a.b`` when that is a module, else ``a`` (whose ``b`` it
    reads). With ``type_checking``, imports under ``if TYPE_CHECKING:`` count too.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = set() if type_checking else type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # The deepest module of the package the target names (a.b.c -> a.b if c is a name).
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def import_graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    """Module → the package's modules it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): set(imported(p, modules, type_checking=type_checking)) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_lazy_import_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_function_level_and_type_checking_imports() -> None:
    graph = import_graph()

    # The worker imports the consumer step at module level; the step imports the checks
    # inside a function; the Django app imports the bus's worker wiring inside ready().
    assert "events_celery.bus.consume.step" in graph["events_celery.bus.worker"]
    assert "events_celery.checks" in graph["events_celery.bus.consume.step"]
    assert "events_celery.bus.worker" in graph["events_celery.apps"]
    assert "events_celery.conf" not in graph["events_celery.bus.hooks"]  # TYPE_CHECKING only
    assert "events_celery.conf" in import_graph(type_checking=True)["events_celery.bus.hooks"]


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_metrics_and_tracing_import_nothing_of_the_bus_but_its_hook_points() -> None:
    graph = import_graph(type_checking=True)

    for observer in ("events_celery.bus.metrics", "events_celery.bus.tracing"):
        bus = {m for m in graph[observer] if m.startswith("events_celery.bus")}
        assert bus <= {"events_celery.bus", "events_celery.bus.hooks"}, observer
