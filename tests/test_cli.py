"""The bayes-recon command line: help on every subcommand, reconstruct end to end.

Bayesian methods run on 28x28 CT of a test digit at 10 angles with few
iterations and draws (options on the command line), so each run takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bayes_recon.app.cli import build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"reconstruct", "demo", "train-prior", "calibrate", "benchmark"} <= set(sub.choices)
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
    result = subprocess.run([sys.executable, "-m", "bayes_recon.app.cli", "--version"],
                            capture_output=True, text=True, check=True)
    assert "bayes_recon" in result.stdout


def _write_gaussian_run(tmp_path):
    """A Bayesian run whose samples and truth come from the same N(0.5, 0.1²) per pixel."""
    import torch

    from bayes_recon.inference import Posterior
    from bayes_recon.app.runs import write_run

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


# --------------------------------------------------------------- Bayesian methods
SMALL = ["reconstruct", "--problem", "ct", "--size", "28", "--angles", "10", "--image", "digit",
         "--no-progress"]
PRIOR = ["--prior", "digits-supn"]
# Tiny U-Net and a short, fast fit: enough for a sensible digit, seconds per run.
DIP = ["--dip-iterations", "100", "--dip-lr", "1e-2", "--dip-channels", "8"]
POSTERIOR_FILES = ("posterior.nc", "mean.npy", "mean.png", "std.npy", "std.png", "samples.npy",
                   "metrics.json", "reconstruction.npy", "truth.npy")


def _run(out, *args) -> dict:
    assert main([*SMALL, *args, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


def _psnr(x, truth) -> float:
    return float(10 * np.log10(1.0 / ((x - truth) ** 2).mean()))


def _check_posterior_run(out, metrics, chains, draws):
    """Files present; mean/std/PSNR agree with samples.npy; posterior.nc holds the same draws."""
    import arviz as az

    for name in POSTERIOR_FILES:
        assert (out / name).is_file(), name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (chains, draws, 1, 28, 28)
    flat = samples.reshape(-1, 1, 28, 28)
    # float32 samples: means agree to rounding.
    np.testing.assert_allclose(np.load(out / "mean.npy"), flat.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.load(out / "std.npy"), flat.std(0, ddof=1), atol=1e-5)
    np.testing.assert_allclose(np.load(out / "reconstruction.npy"), flat.mean(0), atol=1e-5)
    truth = np.load(out / "truth.npy")
    assert metrics["psnr"] == pytest.approx(_psnr(flat.mean(0), truth), abs=1e-3)
    assert metrics["num_chains"] == chains and metrics["num_draws"] == draws
    idata = az.from_netcdf(str(out / "posterior.nc"))
    np.testing.assert_allclose(idata.posterior["x"].values, samples, atol=1e-6)
    np.testing.assert_allclose(idata.constant_data["x_true"].values, truth, atol=1e-6)
    assert metrics["wall_time_s"] > 0


@pytest.fixture(scope="module")
def laplace_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("laplace")
    metrics = _run(out, "--method", "laplace", *PRIOR, "--num-samples", "6", "--num-chains", "2",
                   "--map-steps", "10")
    return out, metrics


def test_laplace_writes_a_posterior_run(laplace_run):
    out, metrics = laplace_run
    _check_posterior_run(out, metrics, chains=2, draws=6)
    assert metrics["method"] == "laplace" and metrics["prior"] == "digits-supn"
    assert metrics["sampling_config"]["map_steps"] == 10  # the settings are recorded
    assert metrics["noise_std_used"] == pytest.approx(metrics["noise_std"])


# 12 draws are too few for the 4x4-patch likelihood; the warning says so and is expected.
@pytest.mark.filterwarnings("ignore::bayes_recon.diagnostics.CalibrationWarning")
def test_calibrate_a_posterior_run(laplace_run):
    out, _ = laplace_run
    assert main(["calibrate", str(out)]) == 0
    report = json.loads((out / "calibration.json").read_text())
    assert 0.9 in report["levels"]
    # Coverage against an independent count from the saved draws and truth (numpy quantiles).
    flat = np.load(out / "samples.npy").reshape(-1, 1, 28, 28)
    truth = np.load(out / "truth.npy")
    for level, reported in zip(report["levels"], report["coverage"]):
        lo, hi = np.quantile(flat, [(1 - level) / 2, (1 + level) / 2], axis=0)
        assert reported == pytest.approx(float(((truth >= lo) & (truth <= hi)).mean()),
                                         abs=1.5 / truth.size), level
    assert (out / "calibration.md").is_file()


def test_nuts_with_estimated_noise(tmp_path):
    metrics = _run(tmp_path, "--method", "nuts", *PRIOR, "--num-samples", "4", "--warmup", "2",
                   "--max-tree-depth", "2", "--num-chains", "1", "--map-steps", "10",
                   "--noise-std", "estimate")
    _check_posterior_run(tmp_path, metrics, chains=1, draws=4)
    assert metrics["noise_std_mode"] == "estimate"
    # Type-II estimate of sigma from one 10-angle sinogram: within a factor 2 of the truth.
    assert 0.5 < metrics["noise_std_used"] / metrics["noise_std"] < 2.0


def test_jpmap_beats_fbp(tmp_path):
    fbp = _run(tmp_path / "fbp", "--method", "fbp")
    jp = _run(tmp_path / "jpmap", "--method", "jpmap", *PRIOR, "--map-iterations", "2",
              "--z-steps", "5")
    truth = np.load(tmp_path / "jpmap" / "truth.npy")
    assert jp["psnr"] == pytest.approx(_psnr(np.load(tmp_path / "jpmap" / "reconstruction.npy"),
                                             truth), abs=1e-3)
    # A learned digit prior against FBP at 10 angles: expect several dB (about 10 measured).
    assert jp["psnr"] > fbp["psnr"] + 3.0
    assert jp["map_config"]["max_iterations"] == 2 and jp["map_config"]["z_steps"] == 5
    assert not (tmp_path / "jpmap" / "posterior.nc").exists()  # a point estimate


def test_prior_from_a_checkpoint_path(tmp_path):
    from bayes_recon.models import load_pretrained, save_model

    path = save_model(load_pretrained("digits-identity"), tmp_path / "prior.safetensors")
    out = tmp_path / "svi"
    # No --size: it defaults to the prior's image size (28), not the classical default 64.
    assert main(["reconstruct", "--problem", "ct", "--angles", "10", "--image", "digit",
                 "--method", "svi", "--prior", str(path), "--map-iterations", "2",
                 "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prior"] == str(path) and metrics["method"] == "svi"
    assert metrics["size"] == 28
    # The checkpoint round trip loses nothing: the shipped prior by name gives the same run.
    by_name = tmp_path / "svi_by_name"
    assert main(["reconstruct", "--problem", "ct", "--angles", "10", "--image", "digit",
                 "--method", "svi", "--prior", "digits-identity", "--map-iterations", "2",
                 "--no-progress", "--out", str(by_name)]) == 0
    np.testing.assert_allclose(np.load(out / "reconstruction.npy"),
                               np.load(by_name / "reconstruction.npy"), rtol=0, atol=1e-6)


def test_dip_point_estimate(tmp_path):
    metrics = _run(tmp_path, "--method", "dip", *DIP)
    assert not (tmp_path / "posterior.nc").exists()
    assert metrics["dip_config"]["iterations"] == 100 and metrics["dip_config"]["network"]["channels"] == 8
    # TV weight follows the documented rule: dip_tv_scale (3) times the known sigma.
    assert metrics["info"]["tv_weight"] == pytest.approx(3.0 * metrics["noise_std"])


@pytest.mark.parametrize("method", ["linearised-dip", "mc-dropout-dip", "fixed-sigma-dip"])
def test_dip_posteriors(tmp_path, method):
    if method == "linearised-dip":
        from bayes_recon.inference import EvidenceConvergenceWarning

        # 10 evidence iterations stop before the tolerance by design (speed): the run
        # must say so, and record it.
        with pytest.warns(EvidenceConvergenceWarning):
            metrics = _run(tmp_path, "--method", method, *DIP, "--evidence-iterations", "10",
                           "--num-samples", "40")
        assert metrics["info"]["evidence_converged"] is False
        # The default calibration fitted a discrepancy on held-out projections; no factor applied.
        assert metrics["info"]["discrepancy_std"] >= 0.0
        assert metrics["info"]["bootstrap_factor"] is None and metrics["info"]["std_scale"] is None
    else:
        metrics = _run(tmp_path, "--method", method, *DIP, "--num-samples", "40")
    _check_posterior_run(tmp_path, metrics, chains=1, draws=40)
    if method == "mc-dropout-dip":
        assert metrics["dropout"] == pytest.approx(0.1)


def test_dip_from_a_checkpoint_init(tmp_path):
    # --dip-init FILE: the fit starts from that network (its architecture, not --dip-channels),
    # and the run records where it started.
    import torch

    from bayes_recon.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    UNet(UNetConfig(channels=4, skip_channels=(0, 4, 4))).save(tmp_path / "init")
    metrics = _run(tmp_path / "run", "--method", "dip", *DIP, "--dip-init", str(tmp_path / "init.safetensors"))
    assert metrics["dip_config"]["init"] == str(tmp_path / "init.safetensors")
    assert metrics["info"]["dip_best_iteration"] >= 0


@pytest.mark.parametrize("args, names", [
    (["--method", "jpmap", "--prior", "no-such-prior"], ["--prior", "digits-supn"]),
    (["--method", "jpmap", "--prior", "digits-supn", "--size", "32"], ["--prior", "--size", "28"]),
    (["--method", "jpmap", "--prior", "missing.safetensors"], ["--prior", "missing.safetensors"]),
    (["--method", "jpmap"], ["--prior"]),
    (["--method", "tv", "--prior", "digits-supn"], ["--prior"]),
    (["--method", "no-such-method"], ["--method", "no-such-method"]),
    (["--method", "mc-dropout-dip", "--dropout", "1.5"], ["--dropout"]),
    (["--method", "linearised-dip", "--dip-init", "missing.safetensors"], ["--dip-init", "missing.safetensors"]),
    (["--method", "mc-dropout-dip", "--dip-init", "ellipses-ct-dip"], ["--dip-init", "mc-dropout-dip"]),
    (["--method", "tv", "--dip-init", "ellipses-ct-dip"], ["--dip-init", "'tv'"]),
    (["--method", "jpmap", "--prior", "digits-supn", "--map-iterations", "0"],
     ["--map-iterations", ">= 1"]),
    (["--method", "fbp", "--image", "digit", "--size", "28", "--index", "100000"], ["--index"]),
    (["--method", "laplace", "--prior", "digits-supn", "--num-samples", "1", "--num-chains", "1"],
     ["--num-samples"]),
])
def test_reconstruct_bad_options_exit_2(tmp_path, capsys, args, names):
    cmd = ["reconstruct", "--problem", "ct", "--no-progress", *args, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main(cmd)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for name in names:
        assert name in err
    assert not (tmp_path / "o").exists()  # nothing written before the check


def test_benchmark_quick(tmp_path, capsys):
    assert main(["benchmark", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 4  # header + CT forward, log-density, MAP vs TV
    results = json.loads((tmp_path / "benchmark.json").read_text())
    refs = {m["reference"] for m in results["measurements"]}
    assert {"skimage.transform.radon", "diagonal Normal.log_prob"} <= refs
    # The printed table and the JSON report the same ratios (3 significant digits printed).
    printed = [float(row.strip("| ").split("|")[-1]) for row in rows[1:]]
    assert printed == pytest.approx([m["ratio"] for m in results["measurements"]], rel=0.01)


def test_median_time_measures_wall_time_and_call_count():
    # An independent clock: a function that sleeps a known time, and a call counter.
    import time

    from bayes_recon.app.benchmarking import median_time

    calls = []

    def sleeper():
        calls.append(1)
        time.sleep(0.02)

    t = median_time(sleeper, repeats=5, warmup=2)
    assert len(calls) == 7
    assert 0.02 <= t < 0.2  # sleep never returns early; the upper bound allows a loaded machine


def test_dae_method_denoises_and_refuses_other_problems(tmp_path, capsys):
    # The shipped DAE against the noisy input itself: denoising must raise PSNR clearly,
    # and the registry refuses it where it is undefined (not A = I).
    out = tmp_path / "dae"
    assert main(["reconstruct", "--problem", "denoise", "--size", "28", "--image", "digit",
                 "--noise", "0.4", "--method", "dae", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    noisy_psnr = 10 * np.log10(1.0 / metrics["noise_std"] ** 2)  # E||y - x||² / N = σ²
    assert metrics["psnr"] > noisy_psnr + 3.0, (metrics["psnr"], noisy_psnr)
    with pytest.raises(SystemExit) as exc:
        main([*SMALL, "--method", "dae", "--out", str(tmp_path / "ct")])
    assert exc.value.code == 2 and "needs --problem denoise" in capsys.readouterr().err
