"""The bayes-recon command line: help on every subcommand, reconstruct end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bayes_recon.cli import build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"reconstruct", "demo", "train-prior"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: bayes-recon" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["fbp", "tikhonov", "tv"])
def test_reconstruct_ct_writes_outputs(tmp_path, method):
    out = tmp_path / method
    code = main(["reconstruct", "--problem", "ct", "--angles", "20", "--method", method,
                 "--image", "shepp_logan", "--size", "32", "--tv-iterations", "200",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    x = np.load(out / "reconstruction.npy")
    truth = np.load(out / "truth.npy")
    assert x.shape == truth.shape == (1, 32, 32)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["angles"] == 20
    mse = float(((x - truth) ** 2).mean())
    assert metrics["psnr"] == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-3)
    assert (out / "reconstruction.png").stat().st_size > 0


def test_reconstruct_bad_method_is_a_clean_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reconstruct", "--problem", "mri", "--method", "fbp", "--size", "16",
              "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "fbp" in capsys.readouterr().err


def test_console_script_runs():
    # The installed entry point, as a user would call it.
    result = subprocess.run([sys.executable, "-m", "bayes_recon.cli", "--version"],
                            capture_output=True, text=True, check=True)
    assert "bayes_recon" in result.stdout


def _write_gaussian_run(tmp_path):
    """A Bayesian run whose samples and truth come from the same N(0.5, 0.1²) per pixel."""
    import torch

    from bayes_recon.inference import Posterior
    from bayes_recon.runs import write_run

    gen = torch.Generator().manual_seed(0)
    samples = 0.5 + 0.1 * torch.randn(2, 200, 1, 16, 16, generator=gen, dtype=torch.float64)
    truth = 0.5 + 0.1 * torch.randn(1, 1, 16, 16, generator=gen, dtype=torch.float64)
    post = Posterior(samples, method="exact-gaussian")
    return write_run(tmp_path / "run", truth, post.mean[None], {"method": "exact-gaussian"},
                     posterior=post)


def test_calibrate_saved_run(tmp_path):
    run = _write_gaussian_run(tmp_path)
    assert main(["calibrate", str(run)]) == 0
    report = json.loads((run / "calibration.json").read_text())
    cov = dict(zip(report["levels"], report["coverage"]))
    # 256 pixels, truth and samples from one distribution: binomial sd at 0.9 is 0.019.
    assert cov[0.9] == pytest.approx(0.9, abs=4 * 0.019)
    for name in ("calibration.md", "calibration_curve.png", "pit.png", "sparsification.png"):
        assert (run / name).is_file()


def test_calibrate_missing_files_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", str(tmp_path / "empty")])
    assert exc.value.code == 2 and "posterior.nc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", str(tmp_path / "nowhere")])
    run = _write_gaussian_run(tmp_path)
    (run / "posterior.nc").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", str(run)])
    assert "could not be read" in capsys.readouterr().err
