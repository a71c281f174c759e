"""The module import graph of the project: no cycles, and apps import only downwards.

Every project module is parsed with ``ast`` and every import counts, the ones inside functions
included: a function-local import that only hides a cycle is still an edge. The app order is read
from docs/architecture.md (section 2), so the doc and this test cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
# Below every app, importing no project package: plumbing, and the statistics (not a Django app:
# numpy, scipy and pandas only) that governance's gates and monitoring's checks share.
BASE = ("platform_core", "analytics")
# Above every app: wiring, pages and scripts, which no app may import.
TOP = ("config", "console", "demo", "bench")


def layered_apps() -> list[str]:
    """The apps in the doc's order, lowest first: ``registry  <-  governance  <-  ...``."""
    lines = [line for line in DOC.read_text().splitlines() if re.match(r"^\w+\s+<-\s+\w+", line)]
    assert len(lines) == 1, "docs/architecture.md states the app order on one line"
    return [name.strip() for name in lines[0].split("<-")]


def packages() -> list[str]:
    return [*BASE, *layered_apps(), *TOP]


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in packages():
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _targets(module: str, path: Path, node: ast.AST, known: dict[str, Path]) -> Iterator[str]:
    """Project modules an import statement names (``from a import b`` is ``a.b`` when that is
    a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        names = [
            f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix
            for alias in node.names
        ]
    else:
        return
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            yield name


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            graph[module].update(_targets(module, path, node, known))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def app_of(module: str) -> str:
    return module.split(".")[0]


def test_the_doc_names_the_five_apps_lowest_first():
    assert layered_apps() == ["registry", "governance", "monitoring", "serving", "incidents"]


def test_the_graph_sees_function_local_imports(graph):
    # incidents/tasks.py imports its services inside the task functions
    assert "incidents.rollback" in graph["incidents.tasks"]
    assert "incidents.playbook_engine" in graph["incidents.tasks"]


def test_no_module_imports_itself_through_others(graph):
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_apps_import_only_apps_below_them(graph):
    rank = {app: n for n, app in enumerate(layered_apps(), start=1)}
    rank.update(dict.fromkeys(BASE, 0))
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if app_of(module) in rank
        for target in targets
        if app_of(target) != app_of(module)
        and rank.get(app_of(target), len(rank) + 1) > rank[app_of(module)]
    )
    assert upward == []


def test_the_base_packages_import_nothing_of_the_project(graph):
    for module, targets in graph.items():
        if app_of(module) in BASE:
            assert {app_of(t) for t in targets} <= {app_of(module)}, f"{module} imports {targets}"


def test_no_module_chooses_a_queue_settings_route_every_task():
    """``CELERY_TASK_ROUTES`` is the one place a queue is chosen (docs/architecture.md, 5)."""
    chosen = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(k.arg == "queue" for k in node.keywords):
                chosen.append(f"{module}:{node.lineno}")
    assert chosen == []


def test_no_service_imports_its_apps_tasks(graph):
    """Services enqueue tasks by name (``platform_core.tasking``); only Celery imports tasks."""
    importers = sorted(
        module
        for module, targets in graph.items()
        if app_of(module) not in TOP
        for target in targets
        if target.endswith(".tasks") and not module.endswith(".tasks")
    )
    assert importers == []
