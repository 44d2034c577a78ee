"""Write the example notebooks from the cell sources in ``sources/`` (run after editing).

Usage: python notebooks/build_notebooks.py

Each notebook reads ``BAYES_RECON_FAST`` (set by the test suite) to shrink its
loops, so CI executes every notebook top to bottom in seconds. A cell of kind
``"checks"`` is a code cell tagged ``checks``: it asserts what the notebook
claims and prints one JSON line that ``tests/test_notebooks.py`` checks again.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import nbformat

HERE = Path(__file__).parent
FAST = "import os\nFAST = os.environ.get('BAYES_RECON_FAST', '0') == '1'"
# The diagnostics return matplotlib Figures without touching pyplot; the inline backend's
# display hook is what renders a returned Figure as an image in Jupyter.
INLINE = "%matplotlib inline\n"
CHECKS_TAG = "checks"


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook from ``(kind, source)`` pairs; kind is ``"md"``, ``"code"`` or ``"checks"``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(src))
        elif kind == "checks":
            nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"tags": [CHECKS_TAG]}))
        else:
            raise ValueError(f"cell kind must be 'md', 'code' or 'checks', got {kind!r}")
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating gives no spurious diff
    return nb


THREADS = """
import torch
# The problems here are tiny (784 pixels). On a busy 2-core machine one thread ran the
# dense float64 linear algebra several times faster than two (oversubscription), so we
# pin it; raise it on a machine of your own.
torch.set_num_threads(1)
"""


SOURCES = HERE / "sources"


def load_cells(name: str) -> list[tuple[str, str]]:
    """The cells of ``sources/{name}.py``, run with the shared preambles in scope."""
    namespace = runpy.run_path(str(SOURCES / f"{name}.py"),
                               init_globals={"FAST": FAST, "INLINE": INLINE, "THREADS": THREADS})
    return namespace["CELLS"]


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    path.stem: load_cells(path.stem) for path in sorted(SOURCES.glob("[0-9]*.py"))
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(notebook(cells), HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
