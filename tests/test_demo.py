"""`bayes-recon demo --quick`: every method runs, every posterior is exported and calibrated."""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pytest

from bayes_recon.app.cli import main
from bayes_recon.app.demo import DemoConfig, demo_methods, run_demo

METHODS = list(demo_methods(DemoConfig(quick=True)))


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_demo_writes_report_and_every_posterior(quick_demo):
    out, summary = quick_demo
    rows = {r["method"]: r for r in summary["results"]}
    assert set(rows) == set(METHODS)
    report = (out / "report.md").read_text()
    for name in METHODS:
        assert f"| {name} |" in report
    bayesian = [n for n, r in rows.items() if r["coverage_90"] is not None]
    # SUPN posterior, linearised DIP, both DIP baselines, DPS and the HVAE SVI carry posteriors.
    assert len(bayesian) == 6, bayesian
    assert (out / "calibration_curves.png").stat().st_size > 0
    nc_files = sorted(out.glob("*.nc"))
    assert len(nc_files) == len(bayesian)
    for path in nc_files:
        idata = az.from_netcdf(path)
        x = idata.posterior["x"]
        assert x.dims == ("chain", "draw", "channel", "row", "col")
        assert x.shape[-2:] == (28, 28)
        truth = idata.constant_data["x_true"].values
        assert truth.shape == (1, 28, 28)
        cal = json.loads(path.with_name(path.stem + "_calibration.json").read_text())
        # The report's coverage against an independent count from the exported samples:
        # the truth inside the central interval of the pooled draws (numpy's quantiles).
        draws = x.values.reshape(-1, *x.shape[2:])
        for level, reported in zip(cal["levels"], cal["coverage"]):
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
            inside = float(((truth >= lo) & (truth <= hi)).mean())
            assert reported == pytest.approx(inside, abs=1.5 / truth.size), (path.name, level)
    # The fixed-σ baseline reuses the linearised DIP's fit instead of fitting again.
    assert rows["DIP + fixed σ"]["info_dip_fit_shared"] is True


def test_quick_demo_learned_priors_beat_classical_baselines(quick_demo):
    # A held-out digit at 20 angles: the learned prior and the DIP must beat FBP and
    # Tikhonov by a margin (measured: FBP 25.6 dB, SUPN MAP 34.6 dB, linearised DIP 34.0 dB).
    _, summary = quick_demo
    psnr = {r["method"]: r["psnr"] for r in summary["results"]}
    best_classical = max(psnr["FBP"], psnr["Tikhonov"])
    assert psnr["SUPN MAP (JPMAP)"] > best_classical + 3.0, psnr
    assert psnr["SUPN posterior"] > best_classical + 3.0, psnr
    assert psnr["Linearised DIP (TV-PredCP)"] > best_classical + 3.0, psnr
    assert psnr["Hierarchical VAE MAP (PnP-HVAE)"] > best_classical + 3.0, psnr


def test_unknown_demo_method_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="methods must name entries"):
        run_demo(DemoConfig(out=tmp_path, methods=("FBP", "Magic"), progress=False))
    assert not any(tmp_path.iterdir())  # nothing written before the check
