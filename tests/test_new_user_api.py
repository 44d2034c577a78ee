"""Issue 26, "no silent wrong results": what a new user hit, one test per case.

Metrics reduce as scikit-image does; output files get the umask's mode; every
documented truth shape is accepted; results print short; the README runs as
written; run folders hold PNGs a user can read.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from bayes_recon.metrics import psnr, rmse, ssim

ROOT = Path(__file__).resolve().parents[1]


def _pair(shape, seed=0):
    g = np.random.default_rng(seed)
    truth = g.uniform(0, 1, size=shape)
    return truth, np.clip(truth + g.normal(0, 0.1, size=shape), 0, 1)


def _skimage(name, t, e):
    """scikit-image's value for ONE image (H, W) or (C, H, W)."""
    if name == "psnr":
        return peak_signal_noise_ratio(t, e, data_range=1.0)
    if name == "rmse":
        return np.sqrt(mean_squared_error(t, e))
    return structural_similarity(t, e, data_range=1.0, channel_axis=0 if t.ndim == 3 else None)


def _ours(name, t, e):
    if name == "rmse":
        return rmse(t, e)
    return {"psnr": psnr, "ssim": ssim}[name](t, e, data_range=1.0)


# ------------------------------------------------------------ item 3: metrics
@pytest.mark.parametrize("name", ["psnr", "ssim", "rmse"])
@pytest.mark.parametrize("shape", [(28, 28), (3, 16, 16), (1, 12, 12)])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_metric_of_one_image_is_a_scalar_like_skimage(name, shape, kind):
    t, e = _pair(shape)
    ref = _skimage(name, t, e)
    if kind == "torch":
        value = _ours(name, torch.from_numpy(t), torch.from_numpy(e))
        assert isinstance(value, torch.Tensor) and value.shape == () \
            and value.dtype == torch.float64
        value = float(value)
    else:
        value = _ours(name, t, e)
        assert isinstance(value, float) and np.ndim(value) == 0
    assert value == pytest.approx(float(ref), rel=1e-12)


@pytest.mark.parametrize("name", ["psnr", "ssim", "rmse"])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_metric_of_a_batch_is_one_value_per_image(name, kind):
    t, e = _pair((4, 2, 10, 10), seed=1)
    ref = np.array([_skimage(name, ti, ei) for ti, ei in zip(t, e)])
    if kind == "torch":
        value = _ours(name, torch.from_numpy(t), torch.from_numpy(e))
        assert isinstance(value, torch.Tensor) and value.dtype == torch.float64
        value = value.numpy()
    else:
        value = _ours(name, t, e)
        assert isinstance(value, np.ndarray)
    assert value.shape == (4,)
    np.testing.assert_allclose(value, ref, rtol=1e-12)


def test_metric_integer_images_and_bad_input():
    t, e = _pair((16, 16), seed=2)
    t8, e8 = (t * 255).astype(np.uint8), (e * 255).astype(np.uint8)
    assert psnr(t8, e8, data_range=255) == pytest.approx(
        peak_signal_noise_ratio(t8, e8, data_range=255), rel=1e-12)
    with pytest.raises(ValueError, match=r"image_test must have shape \(H, W\) or \(C, H, W\)"):
        psnr(np.zeros(5), np.zeros(5), data_range=1.0)
    with pytest.raises(ValueError, match="image_test must have shape"):
        rmse(np.zeros((2, 2, 1, 4, 4)), np.zeros((2, 2, 1, 4, 4)))
    with pytest.raises(ValueError, match="image_test must have the shape of image_true"):
        ssim(t, t[None], data_range=1.0)  # no silent broadcasting
    with pytest.raises(TypeError, match="image_true must be a torch.Tensor or a numpy.ndarray"):
        psnr(t.tolist(), e, data_range=1.0)
    with pytest.raises(TypeError, match="image_test"):
        rmse(t, e.astype(np.complex128))


# ------------------------------------------------------- item 6: file modes
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_gives_the_umask_mode(tmp_path, umask_022):
    from bayes_recon._atomic import atomic_write, current_umask

    assert current_umask() == 0o022
    assert _mode(atomic_write(tmp_path / "a.bin", lambda fh: fh.write(b"x"))) == 0o644

    def by_name(name):
        Path(name).write_bytes(b"y")

    assert _mode(atomic_write(tmp_path / "b.nc", by_name, by_name=True)) == 0o644
    os.umask(0o077)  # the mode follows the umask of the moment, not one read at import
    assert _mode(atomic_write(tmp_path / "c.bin", lambda fh: fh.write(b"z"))) == 0o600


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A point-estimate run folder written by the CLI under umask 022."""
    from bayes_recon.app.cli import main

    out = tmp_path_factory.mktemp("cli") / "r"
    old = os.umask(0o022)
    try:
        assert main(["reconstruct", "--problem", "ct", "--angles", "10", "--size", "16",
                     "--method", "tikhonov", "--out", str(out), "--no-progress"]) == 0
    finally:
        os.umask(old)
    return out


def test_cli_run_folder_modes(cli_run):
    assert _mode(cli_run) == 0o755
    files = sorted(p for p in cli_run.iterdir())
    assert files and all(p.is_file() for p in files)
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: oct(0o644) for p in files}


# ------------------------------------------ item 7: shapes of truths, reprs
def _posterior(c=1, seed=0):
    from bayes_recon.posterior import Posterior

    g = torch.Generator().manual_seed(seed)
    return Posterior(torch.randn(2, 40, c, 8, 8, generator=g, dtype=torch.float64),
                     method="toy", noise_std=0.05)


def test_every_documented_truth_shape_is_accepted():
    from bayes_recon.diagnostics import calibration, to_arviz

    post = _posterior()
    truth = torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    def report(*args):  # JSON text: NaN entries compare equal
        return json.dumps(calibration(*args).to_dict(include_pit=False), sort_keys=True)

    ref = report(post, truth[None])
    for shaped in (truth, truth[None], truth[None, None], truth.numpy()):
        assert report(post, shaped) == ref
        stored = to_arviz(post, truth=shaped).constant_data["x_true"]
        assert stored.dims == ("channel", "row", "col")
        np.testing.assert_array_equal(stored.values, truth[None].numpy())
        np.testing.assert_array_equal(post.to_arviz(truth=shaped).constant_data["x_true"].values,
                                      truth[None].numpy())
    # a list of posteriors with an (N, H, W) truth array: one (H, W) truth each
    pooled = calibration([post, post], torch.stack([truth, truth]))
    assert pooled.coverage == calibration(post, truth).coverage


def test_truth_shape_errors_name_the_argument():
    from bayes_recon.diagnostics import calibration, to_arviz

    rgb = _posterior(c=3)
    with pytest.raises(ValueError, match=r"truth must have shape \(3, 8, 8\) or \(1, 3, 8, 8\)"):
        calibration(rgb, torch.zeros(8, 8))  # (H, W) is only unambiguous for one channel
    with pytest.raises(ValueError, match=r"truth must have shape \(8, 8\) or \(1, 8, 8\)"):
        to_arviz(_posterior(), truth=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="truth"):
        to_arviz(_posterior(), truth=torch.zeros(8, 9))


def test_posterior_mean_shape_is_documented():
    from bayes_recon.posterior import Posterior

    post = _posterior()
    assert post.mean.shape == (1, 8, 8) and post.std.shape == (1, 8, 8)
    for doc in (Posterior.__doc__, Posterior.mean.__doc__):
        assert "(C, H, W)" in doc and "mean[None]" in doc
    index = (ROOT / "docs" / "index.md").read_text()
    assert "mean[None]" in index


def test_short_reprs():
    from bayes_recon.inference import Reconstruction

    rec = Reconstruction(x=torch.rand(1, 1, 28, 28), z=torch.rand(1, 16),
                         objective_history=[3.0, 2.0, 1.5], converged=True, method="jpmap",
                         noise_std=0.25)
    text = repr(rec)
    assert "tensor(" not in text and len(text) < 200
    for part in ("method='jpmap'", "(1, 1, 28, 28)", "(1, 16)", "converged=True",
                 "noise_std=0.25", "iterations=3"):
        assert part in text
    text = repr(_posterior())
    assert "tensor(" not in text and len(text) < 200
    for part in ("chains=2", "draws=40", "image_shape=(1, 8, 8)", "method='toy'",
                 "noise_std=0.05"):
        assert part in text


# -------------------------------------------------------------- item 8: docs
def _readme_snippets():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_snippets_run_standalone(capsys):
    """Every ```python block of README.md, each on its own in a fresh namespace."""
    snippets = _readme_snippets()
    assert len(snippets) >= 3
    threads = torch.get_num_threads()
    # One thread, as the notebooks: on a shared 2-core machine two threads make the
    # small dense float64 solves slower, not faster.
    torch.set_num_threads(1)
    times = []
    try:
        for i, code in enumerate(snippets):
            start = time.perf_counter()
            exec(compile(code, f"README.md python block {i}", "exec"), {"__name__": "__readme__"})
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    with capsys.disabled():
        print(f"\nREADME snippets: {', '.join(f'{t:.1f} s' for t in times)}")


def test_readme_and_guide_method_lists_are_complete():
    from bayes_recon.app.methods import ALL_METHODS
    from bayes_recon.data import PROBLEMS

    readme = (ROOT / "README.md").read_text()
    listing = readme[readme.index("`--method` takes"):readme.index("Shipped priors")]
    index = (ROOT / "docs" / "index.md").read_text()
    reconstruct_row = next(line for line in index.splitlines()
                           if line.startswith("| `bayes-recon reconstruct"))
    for method in ALL_METHODS:
        assert re.search(rf"[`|]{re.escape(method)}[`|]", listing), method
        assert re.search(rf"[`|]{re.escape(method)}[`|]", reconstruct_row), method
    for problem in PROBLEMS:  # in "`--problem ct|ct-fan|...`"
        assert re.search(rf"[ |]{re.escape(problem)}[`|]", reconstruct_row), problem
    assert "DESIGN.md" not in index
    for target in re.findall(r"\]\(([^)#]+\.md)", index):
        assert (ROOT / "docs" / target).is_file(), target
    assert "(design.md)" in index


def test_readme_mri_example_is_undersampled():
    from bayes_recon.operators import radial_mask

    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "--problem mri" in line and "--spokes" in line]
    assert lines
    for line in lines:
        spokes = int(re.search(r"--spokes (\d+)", line).group(1))
        kept = int(radial_mask(28, spokes).sum())
        assert kept / 28**2 < 0.5, (spokes, kept)
        assert f"{kept} of the 784" in readme


# ---------------------------------------------------- item 5: run outputs
def _grey_levels(path) -> int:
    from PIL import Image

    return len(np.unique(np.asarray(Image.open(path).convert("L"))))


def test_cli_run_folder_has_a_panel(cli_run):
    from PIL import Image

    with Image.open(cli_run / "panel.png") as im:
        assert im.width > 600  # truth, FBP, reconstruction, |error|, with colour bars
    metrics = json.loads((cli_run / "metrics.json").read_text())
    assert set(metrics["png_ranges"]) == {"truth.png", "reconstruction.png"}
    assert metrics["png_ranges"]["truth.png"] == [0.0, 1.0]  # built-in image in [0, 1]


def test_png_of_an_image_in_other_units_is_not_saturated(tmp_path):
    from bayes_recon.app.runs import write_run
    from bayes_recon.operators import ParallelBeamCT
    from bayes_recon.posterior import Posterior

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1000, 256, dtype=torch.float64).reshape(1, 1, 16, 16)
    op = ParallelBeamCT(16, n_angles=8)
    y = op(ramp)
    post = Posterior(ramp + 20 * torch.randn(2, 10, 1, 16, 16, generator=g, dtype=torch.float64),
                     method="toy", noise_std=1.0)
    write_run(tmp_path / "b", ramp, post.mean[None], {}, posterior=post, y=y, op=op,
              noise_std=1.0)
    write_run(tmp_path / "p", None, ramp, {}, y=y, op=op)
    for name in ("reconstruction.png", "mean.png", "truth.png", "sample_0.png", "std.png"):
        assert _grey_levels(tmp_path / "b" / name) > 50, name
    assert _grey_levels(tmp_path / "p" / "reconstruction.png") > 50
    ranges = json.loads((tmp_path / "b" / "metrics.json").read_text())["png_ranges"]
    lo, hi = ranges["reconstruction.png"]
    assert 0 <= lo < 20 and 980 < hi <= 1000
    for folder in ("b", "p"):
        assert _grey_levels(tmp_path / folder / "panel.png") > 50
