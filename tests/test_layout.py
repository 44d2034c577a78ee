"""The package's import layers (docs/design.md): no cycle, no layer importing one above it.

Layers, bottom up::

    0 ground        bayes_recon, _validation, _atomic, metrics (image quality), posterior
    1 operators, distributions  (independent of each other)
    2 data
    3 models, pretrained
    4 inference
    5 diagnostics
    6 app

Every ``import`` in every module is read with :mod:`ast` (module level and inside
functions). A module may import from its own layer or below; the one exception is
``Posterior.to_arviz``, a call-time convenience into ``diagnostics``. Cycles are
looked for among the imports that run at import time (module level).

Run ``python tests/test_layout.py`` to print the layer table and the edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "bayes_recon"

LAYERS = {
    "bayes_recon": 0,
    "bayes_recon._validation": 0,
    "bayes_recon._atomic": 0,
    "bayes_recon.metrics": 0,
    "bayes_recon.posterior": 0,
    "bayes_recon.operators": 1,
    "bayes_recon.distributions": 1,
    "bayes_recon.data": 2,
    "bayes_recon.models": 3,
    "bayes_recon.pretrained": 3,
    "bayes_recon.inference": 4,
    "bayes_recon.diagnostics": 5,
    "bayes_recon.app": 6,
}
# Imports made at call time that knowingly point upwards: (importer, imported).
ALLOWED_UPWARD = {("bayes_recon.posterior", "bayes_recon.diagnostics.arviz_export")}
# operators and distributions are both layer 1 but must not know each other.
INDEPENDENT = {("bayes_recon.operators", "bayes_recon.distributions"),
               ("bayes_recon.distributions", "bayes_recon.operators")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> tuple[str, int]:
    """The longest registered prefix of ``name`` and its layer."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in LAYERS:
            return prefix, LAYERS[prefix]
    raise KeyError(f"{name} belongs to no layer; add it to LAYERS in tests/test_layout.py")


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports() -> dict[str, list[tuple[str, bool]]]:
    """``module -> [(imported bayes_recon module, at_module_level)]`` for every module."""
    modules = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    edges: dict[str, list[tuple[str, bool]]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        top_level = {id(n) for n in tree.body}
        # Imports nested in if/try blocks at module level also run at import time.
        for n in tree.body:
            if isinstance(n, (ast.If, ast.Try)):
                top_level |= {id(m) for m in ast.walk(n)}
        found = []
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                # `from pkg import sub` imports the submodule when it is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                if t == "bayes_recon" or t.startswith("bayes_recon."):
                    found.append((t, id(node) in top_level))
        edges[name] = found
    return edges


def _import_time_graph(edges) -> dict[str, set[str]]:
    """Import-time edges, including the package ``__init__``s an import runs."""
    graph: dict[str, set[str]] = {}
    for importer, targets in edges.items():
        own_ancestors = {".".join(importer.split(".")[:i])
                         for i in range(1, importer.count(".") + 2)}
        out = set()
        for target, at_top in targets:
            if not at_top:
                continue
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                t = ".".join(parts[:i])
                if t in edges and t not in own_ancestors:
                    out.add(t)
        graph[importer] = out
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(edges) -> list[str]:
    bad = []
    for importer, targets in edges.items():
        src, src_layer = layer_of(importer)
        for target, _ in targets:
            dst, dst_layer = layer_of(target)
            if (importer, target) in ALLOWED_UPWARD:
                continue
            if dst_layer > src_layer or (src, dst) in INDEPENDENT:
                bad.append(f"{importer} (layer {src_layer}) imports {target} (layer {dst_layer})")
    return sorted(set(bad))


def test_every_module_has_a_layer():
    for name in package_imports():
        layer_of(name)


def test_no_layer_imports_one_above_it():
    assert layer_violations(package_imports()) == []


def test_no_import_cycle():
    assert find_cycle(_import_time_graph(package_imports())) is None


def test_checker_catches_a_cycle_and_an_upward_import():
    # The checks themselves must be able to fail.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    edges = {"bayes_recon.operators.ct": [("bayes_recon.inference.map", True)],
             "bayes_recon.operators.mri": [("bayes_recon.distributions.stencil", False)]}
    assert len(layer_violations(edges)) == 2


@pytest.mark.parametrize("module, forbidden", [
    ("bayes_recon.diagnostics", ("pyro", "linear_operator", "gpytorch", "bayes_recon.inference")),
    ("bayes_recon.operators", ("pyro", "arviz", "bayes_recon.distributions")),
    ("bayes_recon.posterior", ("pyro", "arviz", "bayes_recon.diagnostics")),
])
def test_importing_a_layer_loads_nothing_above_it(module, forbidden):
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {forbidden!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


if __name__ == "__main__":  # pragma: no cover - the report the closing note quotes
    edges = package_imports()
    by_layer: dict[int, set[str]] = {}
    for name in edges:
        prefix, layer = layer_of(name)
        by_layer.setdefault(layer, set()).add(prefix)
    for layer in sorted(by_layer):
        print(f"layer {layer}: {', '.join(sorted(by_layer[layer]))}")
    n_edges = sum(len(t) for t in edges.values())
    print(f"{len(edges)} modules, {n_edges} package imports")
    print("layer violations:", layer_violations(edges) or "none")
    print("import cycle:", find_cycle(_import_time_graph(edges)) or "none")
