"""Execute every notebook top to bottom in fast mode, so they cannot rot.

Each notebook ends in a code cell tagged ``checks`` that asserts what the notebook
claims and prints one JSON line; the tests here parse that line and check the
numbers again (so weakening a notebook's own asserts does not weaken the suite).
Notebooks run with ``BAYES_RECON_FAST=1`` (each well under a minute on one core),
``MPLBACKEND=Agg`` and an empty temporary working directory, which must stay
empty: notebooks write no files.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"01_quickstart", "02_supn_prior", "03_linearised_dip_ct", "04_calibration"}


def _builder():
    """The ``notebooks/build_notebooks.py`` module (not a package: loaded from its path)."""
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checks_json(nb) -> dict:
    """The JSON line printed by the notebook's ``checks`` cell."""
    cells = [c for c in nb.cells if "checks" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'checks', found {len(cells)}"
    text = "".join(o.get("text", "") for o in cells[0].get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "the checks cell printed nothing"
    return json.loads(lines[-1])


def _check_01(c):
    p = c["psnr"]
    assert p["MAP (jpmap)"] > p["FBP"] + 3.0, p        # the learned prior beats FBP clearly
    assert p["MAP (jpmap)"] > p["TV"], p
    assert max(v for k, v in p.items() if k.startswith("posterior mean")) > p["TV"], p
    cov90 = dict(zip(c["levels"], c["coverage"]))[0.9]
    assert abs(cov90 - 0.9) < 0.15, cov90              # roughly calibrated on this digit
    assert c["calibration_error"] < 0.15, c["calibration_error"]
    j = np.asarray(c["map_objective"])
    # jpmap accepts a z-step only if it lowers J and its x-step is exact: J never rises.
    assert (np.diff(j) <= 1e-9 * np.abs(j[1:]).max()).all(), j


def _check_02(c):
    assert c["num_unobserved"] == 28 * 14
    assert c["mean_error_in_se"] < 5.0
    assert abs(c["variance_ratio"] - 1.0) < 0.15


def _check_03(c):
    assert c["psnr_dip"] > c["psnr_fbp"], c
    ev = c["log_evidence"]
    assert ev["mll"] > ev["init"], ev
    # TV-MAP maximises evidence + log prior from the MLL optimum: its evidence cannot be
    # above the MLL optimum by more than the optimiser's tolerance.
    assert ev["tv_map"] <= ev["mll"] + 1e-3 * abs(ev["mll"]), ev
    tll = c["test_log_likelihood"]
    assert tll["lin. DIP (TV-MAP)"] > tll["MC dropout"], tll
    assert c["mean_error_in_se"] < 5.0
    assert c["std_relative_error"] < 0.2


def _check_04(c):
    assert set(c) == {"SUPN (Laplace)", "lin. DIP (TV-MAP)", "fixed-σ DIP"}, set(c)
    for name, r in c.items():
        assert r["num_images"] == 2, (name, r["num_images"])   # fast mode
    assert c["lin. DIP (TV-MAP)"]["calibration_error"] < c["fixed-σ DIP"]["calibration_error"]
    assert c["SUPN (Laplace)"]["test_log_likelihood"] > c["fixed-σ DIP"]["test_log_likelihood"]


CHECKS = {"01_quickstart": _check_01, "02_supn_prior": _check_02,
          "03_linearised_dip_ct": _check_03, "04_calibration": _check_04}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("BAYES_RECON_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "notebook wrote files into its cwd"
    CHECKS[path.stem](_checks_json(nb))


def test_all_four_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert EXPECTED <= names
    assert names <= set(CHECKS), f"notebooks without a check in this file: {names - set(CHECKS)}"


def test_notebooks_match_their_builder():
    """The committed .ipynb files are what build_notebooks.py generates (regenerate if not)."""
    builder = _builder()
    assert set(builder.NOTEBOOKS) == {p.stem for p in NOTEBOOKS}
    for name, cells in builder.NOTEBOOKS.items():
        want = builder.notebook(cells)
        have = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in have.cells] == \
               [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in want.cells], (
            f"{name}.ipynb is out of date: run python notebooks/build_notebooks.py")
        first_code = next(c for c in want.cells if c.cell_type == "code")
        assert "BAYES_RECON_FAST" in first_code.source, name


def test_builder_rejects_unknown_cell_kind():
    with pytest.raises(ValueError, match="cell kind"):
        _builder().notebook([("markdown", "# x")])
