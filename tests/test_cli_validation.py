"""`bayes-recon validate` / `reconstruct --validate`, and run folders that are not mixed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayes_recon.app.cli import main
from bayes_recon.app.methods import MethodSettings
from bayes_recon.app.validation import ValidationSettings, validate_method
from bayes_recon.data import shepp_logan, simulate
from bayes_recon.operators import ParallelBeamCT

SMALL = ["--problem", "ct", "--angles", "10", "--size", "16", "--image", "shepp_logan",
         "--dip-iterations", "30", "--num-samples", "32", "--no-progress"]


def test_validate_writes_the_truth_free_report(tmp_path):
    out = tmp_path / "run"
    assert main(["validate", *SMALL, "--method", "fixed-sigma-dip", "--out", str(out)]) == 0
    record = json.loads((out / "validation.json").read_text())
    assert record["scheme"] == "projection" and record["folds"] == 5
    assert record["folds_run"] == [0, 1, 2, 3, 4]
    assert set(record["coverage"]) >= {"0.5", "0.9", "0.95"}
    cov = [record["coverage"][k] for k in ("0.5", "0.9", "0.95")]
    assert all(0 <= c <= 1 for c in cov) and cov == sorted(cov)
    # Every projection held out once: 10 angles x 23 detectors.
    assert record["num_heldout"] == 10 * 23
    assert np.isfinite(record["heldout_log_likelihood"])
    assert "elpd_loo" in record["loo"]  # the full-data posterior.nc has the predictive groups
    for name in ("validation.md", "heldout_calibration.png", "heldout_pit.png", "ppc.png",
                 "loo_pit.png", "posterior.nc"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"].startswith("bayes-recon validate")


def test_reconstruct_validate_one_fold_and_scheme(tmp_path):
    out = tmp_path / "run"
    assert main(["reconstruct", *SMALL, "--method", "fixed-sigma-dip", "--validate",
                 "--one-fold", "--folds", "2", "--holdout-scheme", "random",
                 "--out", str(out)]) == 0
    record = json.loads((out / "validation.json").read_text())
    assert record["folds_run"] == [0] and record["folds"] == 2 and record["scheme"] == "random"
    assert record["num_heldout"] in (115, 115 + 1)  # half of 230 entries, dealt round-robin


@pytest.mark.parametrize("extra, match", [
    (["--method", "tv", "--validate"], "posterior samples"),
    (["--method", "fixed-sigma-dip", "--folds", "3"], "only apply with --validate"),
    (["--method", "fixed-sigma-dip", "--validate", "--folds", "11"], "folds=11 needs at least"),
    (["--method", "fixed-sigma-dip", "--validate", "--holdout-scheme", "spoke"], "needs an MRI"),
])
def test_validate_bad_input_writes_nothing(tmp_path, capsys, extra, match):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        main(["reconstruct", *SMALL, *extra, "--out", str(out)])
    assert err.value.code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_existing_run_folder_is_refused_then_replaced_whole(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reconstruct", *SMALL, "--method", "fixed-sigma-dip", "--out", str(out)]) == 0
    assert (out / "posterior.nc").is_file()
    with pytest.raises(SystemExit):
        main(["reconstruct", *SMALL, "--method", "tv", "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "posterior.nc").is_file()  # untouched
    assert main(["reconstruct", *SMALL, "--method", "tv", "--out", str(out), "--overwrite"]) == 0
    # The earlier posterior run's files are gone: calibrate cannot score a stale posterior.
    assert not (out / "posterior.nc").exists() and not (out / "samples.npy").exists()
    assert json.loads((out / "metrics.json").read_text())["method"] == "tv"


def test_validate_method_refuses_point_estimates():
    op = ParallelBeamCT(8, 6)
    y = simulate(op, shepp_logan(8), seed=0).y
    with pytest.raises(ValueError, match="posterior samples"):
        validate_method(MethodSettings("tikhonov"), op, y, 0.1)
    with pytest.raises(ValueError, match="--folds"):
        ValidationSettings(folds=1)
