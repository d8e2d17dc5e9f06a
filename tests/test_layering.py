"""The package's imports point one way: no circle, and core modules never import upward.

Core is every module of `faceptor_edge` except `bench/` and `cli.py`; above it sit
`distill/`, `quantize/` and `targets/` (installed as `faceptor_edge.distill`, `.quantize`
and `.targets`), then `bench/`, then the CLI. Imports inside functions count too, and so do a
submodule's imports of its own package: `from a import x` in `a.b` needs `a/__init__` to have
defined `x`, a circle when `a/__init__` imports `a.b`.
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
    """Module -> the package modules it imports (anywhere in the file).

    `from a import b` imports the module `a.b` where there is one; only a name that is not a
    module makes it an import of the package `a` itself.
    """
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
                names = {f"{base}.{alias.name}" for alias in node.names}
                targets.update(names & modules.keys())
                if not names <= modules.keys():
                    targets.add(base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, if there is any (Tarjan-free DFS with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
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


def test_a_submodule_importing_its_own_package_is_an_edge():
    graph = import_graph()
    # `from faceptor_edge import decode` imports the module, not the package's namespace
    assert "faceptor_edge.decode" in graph["faceptor_edge.metrics"]
    assert "faceptor_edge" not in graph["faceptor_edge.metrics"]
    assert "faceptor_edge" in graph["faceptor_edge.cli"]  # `from faceptor_edge import __version__`
    teachers = "faceptor_edge.backends.teachers"
    assert teachers in graph["faceptor_edge.backends"]
    assert _cycle({**graph, teachers: graph[teachers] | {"faceptor_edge.backends"}}) is not None
