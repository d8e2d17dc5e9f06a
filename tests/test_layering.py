"""The package's imports point one way: no circle, and core modules never import upward.

Core is every module of `faceptor_edge` except `bench/` and `cli.py`; above it sit
`distill/`, `quantize/` and `targets/` (installed as `faceptor_edge.distill`, `.quantize`
and `.targets`), then `bench/`, then the CLI. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"faceptor_edge": "faceptor_edge", "distill": "faceptor_edge.distill",
            "quantize": "faceptor_edge.quantize", "targets": "faceptor_edge.targets"}  # fmt: skip
UPPER = ("faceptor_edge.distill", "faceptor_edge.targets", "faceptor_edge.bench", "faceptor_edge.cli")
NOT_CORE = (*UPPER, "faceptor_edge.quantize")


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            modules[name] = path
    return modules


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, if there is any (Tarjan-free DFS with colours).

    A package `__init__` that re-exports its own submodules is not a circle: importing
    `a.b` always runs `a/__init__` first, so edges from a submodule to its own package
    are left out.
    """
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_package_has_no_import_circle():
    assert _cycle(import_graph()) is None, " -> ".join(_cycle(import_graph()) or [])


def test_core_modules_never_import_distill_targets_bench_or_the_cli():
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if not _within(module, NOT_CORE)
        for target in targets
        if _within(target, UPPER)
    )
    assert upward == []


def test_the_walk_sees_real_edges_and_would_catch_a_circle():
    graph = import_graph()
    assert "faceptor_edge.backends" in graph["faceptor_edge.predictor"]
    assert "faceptor_edge.targets.base" in graph["faceptor_edge.targets.export"]
    assert _cycle({**graph, "faceptor_edge.tasks": {"faceptor_edge.predictor"}}) is not None
