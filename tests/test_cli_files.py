"""``bayes-recon reconstruct`` on the user's own files: images, measurements, a sparse
system matrix, fan-beam CT; TIFF outputs; nothing written to --out on failure.

Tiny sizes and few iterations: these test the plumbing; the numerics are tested in
test_fanbeam.py and test_files.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import tifffile
import torch
from PIL import Image

from bayes_recon.app.cli import main
from bayes_recon.app.methods import (ALL_METHODS, DENOISER_METHODS, DIFFUSION_METHODS, HVAE_METHODS,
                                     PRIOR_METHODS)
from bayes_recon.data import shepp_logan, simulate
from bayes_recon.operators import FanBeamCT, ParallelBeamCT, tikhonov

FAST = ["--no-progress", "--tv-iterations", "20", "--dip-iterations", "3", "--dip-channels",
        "4", "--evidence-iterations", "2", "--num-samples", "4", "--num-chains", "1",
        "--warmup", "2", "--map-iterations", "2", "--z-steps", "2", "--x-steps", "2",
        "--restarts", "1", "--map-steps", "2", "--max-tree-depth", "2", "--diffusion-steps", "3",
        "--pnp-iterations", "2", "--svi-steps", "3"]


def _run(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        code = main(["reconstruct", *argv])
        raise SystemExit(code)
    out = capsys.readouterr()
    return info.value.code, out.out + out.err


@pytest.fixture
def fan_sino(tmp_path):
    op = FanBeamCT(28, 12, source_distance=56.0, detector_distance=28.0)
    meas = simulate(op, shepp_logan(28), relative_noise=0.05, seed=0)
    path = tmp_path / "fan.npy"
    np.save(path, meas.y[0, 0].numpy())
    return path, op, meas


def test_image_file_simulated_and_tiff_outputs(tmp_path, capsys):
    img = (shepp_logan(40)[0, 0].numpy() * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "mine.png")
    out = tmp_path / "run"
    code, text = _run(capsys, "--image", str(tmp_path / "mine.png"), "--size", "16",
                      "--problem", "ct", "--angles", "8", "--method", "tikhonov",
                      "--out", str(out), *FAST)
    assert code == 0, text
    rec = np.load(out / "reconstruction.npy")
    tif = tifffile.imread(out / "reconstruction.tif")
    assert tif.dtype == np.float32 and tif.shape == (16, 16)
    np.testing.assert_array_equal(tif, rec[0].astype(np.float32))
    truth = np.load(out / "truth.npy")[0]
    assert truth.shape == (16, 16) and 0 <= truth.min() and truth.max() <= 1


def test_measurement_file_reconstructs_as_in_memory(tmp_path, capsys):
    op = ParallelBeamCT(16, 10)
    meas = simulate(op, shepp_logan(16), relative_noise=0.05, seed=0)
    np.save(tmp_path / "sino.npy", meas.y[0, 0].numpy())
    out = tmp_path / "run"
    code, text = _run(capsys, "--measurement", str(tmp_path / "sino.npy"), "--size", "16",
                      "--problem", "ct", "--method", "tikhonov", "--noise-std", "0.1",
                      "--tikhonov-weight", "0.01", "--out", str(out), *FAST)
    assert code == 0, text
    expected = tikhonov(op, meas.y, 0.01 * op.norm() ** 2)
    np.testing.assert_allclose(np.load(out / "reconstruction.npy"), expected[0].numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not (out / "truth.npy").exists()  # no truth for measured data


def test_sparse_matrix_operator_from_file(tmp_path, capsys):
    op = ParallelBeamCT(16, 10)
    sp.save_npz(tmp_path / "A.npz", op.matrix.scipy)
    meas = simulate(op, shepp_logan(16), relative_noise=0.05, seed=0)
    np.save(tmp_path / "y.npy", meas.y.reshape(-1).numpy())  # flat, row-major
    out_user, out_builtin = tmp_path / "user", tmp_path / "builtin"
    np.save(tmp_path / "sino.npy", meas.y[0, 0].numpy())
    code, text = _run(capsys, "--operator", str(tmp_path / "A.npz"), "--image-shape", "16", "16",
                      "--measurement", str(tmp_path / "y.npy"), "--method", "tv",
                      "--noise-std", "0.2", "--out", str(out_user), *FAST)
    assert code == 0, text
    code, text = _run(capsys, "--measurement", str(tmp_path / "sino.npy"), "--problem", "ct",
                      "--size", "16", "--method", "tv", "--noise-std", "0.2",
                      "--out", str(out_builtin), *FAST)
    assert code == 0, text
    np.testing.assert_allclose(np.load(out_user / "reconstruction.npy"),
                               np.load(out_builtin / "reconstruction.npy"), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m not in DENOISER_METHODS])
def test_every_method_runs_on_a_fan_beam_measurement(tmp_path, capsys, fan_sino, method):
    path, op, _ = fan_sino
    prior = (["--prior", "digits-diffusion"] if method in DIFFUSION_METHODS else
             ["--prior", "digits-hvae"] if method in HVAE_METHODS else
             ["--prior", "digits-supn"] if method in PRIOR_METHODS else [])
    out = tmp_path / "run"
    code, text = _run(capsys, "--measurement", str(path), "--problem", "ct-fan", "--size", "28",
                      "--source-distance", "56", "--detector-distance", "28", "--method",
                      method, "--noise-std", "estimate", "--out", str(out), *prior, *FAST)
    assert code == 0, text
    rec = np.load(out / "reconstruction.npy")
    assert rec.shape == (1, 28, 28)
    # The 32-bit TIFFs hold exactly what the .npy files hold (no truth for measured data).
    np.testing.assert_array_equal(tifffile.imread(out / "reconstruction.tif"),
                                  rec[0].astype(np.float32))
    assert not (out / "truth.npy").exists()
    if (out / "posterior.nc").exists():
        for name in ("mean", "std"):
            tif = tifffile.imread(out / f"{name}.tif")
            assert tif.dtype == np.float32
            np.testing.assert_array_equal(tif, np.load(out / f"{name}.npy")[0].astype(np.float32))


@pytest.mark.parametrize("method", ["fbp", "tv", "jpmap", "linearised-dip", "dps"])
def test_methods_run_on_a_parallel_beam_measurement(tmp_path, capsys, method):
    op = ParallelBeamCT(28, 12)
    np.save(tmp_path / "s.npy", simulate(op, shepp_logan(28), 0.05, seed=0).y[0, 0].numpy())
    prior = (["--prior", "digits-diffusion"] if method in DIFFUSION_METHODS else
             ["--prior", "digits-hvae"] if method in HVAE_METHODS else
             ["--prior", "digits-supn"] if method in PRIOR_METHODS else [])
    code, text = _run(capsys, "--measurement", str(tmp_path / "s.npy"), "--problem", "ct",
                      "--size", "28", "--method", method, "--out", str(tmp_path / "run"),
                      *prior, *FAST)
    assert code == 0, text


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--problem", "ct", "--size", "28", "--angles", "13"], r"fan\.npy.*shape \(12, \d+\)"),
        (["--problem", "ct-fan", "--size", "28", "--noise-std", "known"],
         "has no known noise level"),
        (["--problem", "ct-fan", "--size", "28", "--source-distance", "10"],
         "source_distance must exceed"),
        (["--problem", "ct-fan", "--size", "16", "--method", "jpmap", "--prior", "digits-supn"],
         r"--prior digits-supn models 28x28 images but --size is 16"),
        (["--problem", "ct", "--size", "28", "--source-distance", "50"],
         "only apply to --problem ct-fan"),
        (["--problem", "ct-fan", "--size", "28", "--image", "shepp_logan"],
         "either --measurement .* or --image"),
    ],
)
def test_bad_measurement_runs_write_nothing(tmp_path, capsys, fan_sino, argv, match):
    path, _, _ = fan_sino
    out = tmp_path / "run"
    code, text = _run(capsys, "--measurement", str(path), "--out", str(out), *argv, *FAST)
    assert code == 2
    assert __import__("re").search(match, text), text
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fan.npy"]  # no staging left behind


def test_bad_files_write_nothing(tmp_path, capsys):
    rgba = np.full((8, 8, 4), 100, np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    sp.save_npz(tmp_path / "A.npz", sp.random(10, 49, density=0.3, random_state=0))
    np.save(tmp_path / "y.npy", np.ones(10))
    cases = [
        (["--image", str(tmp_path / "alpha.png")], r"alpha\.png has a transparent alpha"),
        (["--operator", str(tmp_path / "A.npz"), "--image-shape", "8", "8", "--measurement",
          str(tmp_path / "y.npy"), "--noise-std", "0.1"], r"A\.npz.*64 pixels.*49 columns"),
        (["--measurement", str(tmp_path / "none.npy")], r"none\.npy"),
    ]
    for argv, match in cases:
        out = tmp_path / "run"
        code, text = _run(capsys, *argv, "--size", "8", "--out", str(out), *FAST)
        assert code == 2, text
        assert __import__("re").search(match, text), text
        assert not out.exists()
