"""The package's import graph, drawn from its own source (imports inside functions included): no module imports
itself back through others, and the shared plumbing (``asd_repro/core``) never imports the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "asd_repro"
ABOVE_CORE = ("asd_repro.cli", "asd_repro.cli.plugins", "asd_repro.stages", "asd_repro.report", "asd_repro.runner",
              "asd_repro.forkserver", "asd_repro.__main__")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> nx.DiGraph:
    """An edge a -> b for every ``import b`` / ``from b import x`` / ``from pkg import b`` in module a."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    graph.add_edge(name, target)
    return graph


def test_the_import_graph_sees_a_planted_cycle(tmp_path):
    pkg = tmp_path / "asd_repro"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from asd_repro.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    cycles = list(nx.simple_cycles(import_graph(pkg)))
    assert sorted(map(sorted, cycles)) == [["asd_repro.a", "asd_repro.sub.b"]]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 60  # the whole package was read
    cycles = sorted(sorted(c) for c in nx.simple_cycles(graph))
    assert cycles == [], f"import cycles: {cycles}"


def test_the_shared_plumbing_imports_nothing_above_it():
    graph = import_graph()
    upward = sorted((a, b) for a, b in graph.edges if a.startswith("asd_repro.core") and b.startswith(ABOVE_CORE))
    assert upward == []
