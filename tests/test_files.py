"""The user's own data: images and measurements from files, any geometry as a sparse
matrix from a ``.npz`` file.

References are independent of the readers: arrays written by numpy, Pillow,
tifffile and h5py directly, grey levels from scikit-image's ``rgb2gray``, and
the built-in ``ParallelBeamCT`` for the user matrix.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import tifffile
import torch
from PIL import Image
from skimage.color import rgb2gray

from bayes_recon.data import load_image, load_measurement, shepp_logan, simulate
from bayes_recon.operators import (
    ParallelBeamCT,
    SparseMatrixOperator,
    adjointness_error,
    load_sparse_operator,
    tikhonov,
    tv_reconstruction,
)


@pytest.fixture
def grey8():
    return np.random.default_rng(0).integers(0, 256, (12, 10), dtype=np.uint8)


def _expect(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(arr, dtype=np.float32))[None, None]


def _min_max(arr: np.ndarray) -> np.ndarray:
    """Integer images are scaled by their own range (not their type's maximum)."""
    arr = np.asarray(arr, dtype=np.float64)
    return (arr - arr.min()) / (arr.max() - arr.min())


# ------------------------------------------------------------------ images
def test_grey_png_tiff_npy_round_trips_agree(tmp_path, grey8):
    Image.fromarray(grey8).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", grey8)
    np.save(tmp_path / "a.npy", grey8)
    expected = _expect(_min_max(grey8))
    for name in ("a.png", "a.tif", "a.npy"):
        x = load_image(tmp_path / name)
        assert x.shape == (1, 1, 12, 10) and x.dtype == torch.float32, name
        torch.testing.assert_close(x, expected, rtol=0, atol=0)


def test_sixteen_bit_depth_is_scaled_not_truncated(tmp_path):
    img = np.random.default_rng(1).integers(0, 65536, (9, 7), dtype=np.uint16)
    Image.fromarray(img).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", img)
    expected = _expect(_min_max(img))
    for name in ("a.png", "a.tif"):
        torch.testing.assert_close(load_image(tmp_path / name), expected, rtol=0, atol=0)
    # 8-bit truncation would lose the low byte: 1/255 steps, far above float32 rounding.
    assert len(np.unique(load_image(tmp_path / "a.png").numpy())) > 60


def test_float_tiff_kept_or_min_max_scaled(tmp_path):
    img = np.random.default_rng(2).random((8, 8)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", img)
    torch.testing.assert_close(load_image(tmp_path / "a.tif"), _expect(img), rtol=0, atol=0)
    np.save(tmp_path / "hu.npy", img.astype(np.float64) * 2000 - 1000)  # e.g. HU
    x = load_image(tmp_path / "hu.npy")
    torch.testing.assert_close(x, _expect((img - img.min()) / (img.max() - img.min())))


def test_rgb_and_opaque_rgba_to_grey_match_skimage(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (10, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.concatenate([rgb, np.full((10, 11, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    expected = _expect(_min_max(rgb2gray(rgb)))  # the luma, then its own range
    torch.testing.assert_close(load_image(tmp_path / "rgb.png"), expected)
    torch.testing.assert_close(load_image(tmp_path / "rgba.png"), expected)


def test_transparent_alpha_is_refused(tmp_path):
    rgba = np.full((6, 6, 4), 200, np.uint8)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "see-through.png")
    with pytest.raises(ValueError, match=r"see-through\.png.*transparent alpha"):
        load_image(tmp_path / "see-through.png")


def test_resize_is_anti_aliased(tmp_path):
    # A one-pixel checkerboard has all its energy at Nyquist: shrinking it by 4
    # with anti-aliasing gives flat grey 0.5; plain subsampling would give 0 or 1.
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board).save(tmp_path / "board.png")
    x = load_image(tmp_path / "board.png", size=16)
    assert x.shape == (1, 1, 16, 16)
    assert float((x - 0.5).abs().max()) < 0.05
    # A smooth ramp keeps its values (mean preserved, monotone rows).
    ramp = np.tile(np.linspace(0, 1, 48), (40, 1))
    np.save(tmp_path / "ramp.npy", ramp)
    y = load_image(tmp_path / "ramp.npy", size=(20, 24))[0, 0]
    assert y.shape == (20, 24)
    assert float(y.mean()) == pytest.approx(0.5, abs=0.01)
    assert bool((y.diff(dim=1) > 0).all())


@pytest.mark.parametrize(
    "name, content, exc, match",
    [
        ("missing.png", None, FileNotFoundError, r"missing\.png"),
        ("broken.png", b"not a png at all", ValueError, r"broken\.png.*not a readable PNG"),
        ("broken.tif", b"II*\x00garbage", ValueError, r"broken\.tif.*not a readable"),
        ("broken.npy", b"\x93NUMPY garbage", ValueError, r"broken\.npy.*not a readable NPY"),
        ("image.gif", b"GIF89a", ValueError, r"image\.gif.*unsupported image type"),
    ],
)
def test_bad_image_files(tmp_path, name, content, exc, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(exc, match=match):
        load_image(tmp_path / name)


def test_bad_image_arrays(tmp_path):
    nan = np.zeros((5, 5))
    nan[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match=r"nan\.npy contains NaN or inf"):
        load_image(tmp_path / "nan.npy")
    np.save(tmp_path / "volume.npy", np.zeros((5, 6, 7)))
    with pytest.raises(ValueError, match=r"volume\.npy.*expected a grey.*got shape \(5, 6, 7\)"):
        load_image(tmp_path / "volume.npy")
    np.save(tmp_path / "flat.npy", np.full((4, 4), 7.0))
    with pytest.raises(ValueError, match=r"flat\.npy.*constant"):
        load_image(tmp_path / "flat.npy")


# ------------------------------------------------------------ measurements
@pytest.fixture
def sinogram():
    return np.random.default_rng(4).random((20, 23))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex64, np.complex128])
def test_measurement_round_trips_npy_npz_hdf5(tmp_path, dtype):
    gen = np.random.default_rng(5)
    arr = gen.standard_normal((6, 9)).astype(dtype)
    if np.iscomplexobj(arr):
        arr = arr + 1j * gen.standard_normal((6, 9)).astype(dtype)
    np.save(tmp_path / "m.npy", arr)
    np.savez(tmp_path / "m.npz", kspace=arr)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("entry/data/kspace", data=arr)
        f.create_dataset("entry/meta/angles", data=np.arange(3.0))
    expected = torch.from_numpy(arr)[None]
    for path, dataset in [("m.npy", None), ("m.npz", None), ("m.npz", "kspace"),
                          ("m.h5", "/entry/data/kspace")]:
        y = load_measurement(tmp_path / path, dataset=dataset)
        assert y.dtype == expected.dtype, path
        torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_hdf5_compound_complex_and_integer_data(tmp_path):
    gen = np.random.default_rng(6)
    re, im = gen.standard_normal((4, 5)), gen.standard_normal((4, 5))
    compound = np.zeros((4, 5), dtype=[("r", "<f8"), ("i", "<f8")])
    compound["r"], compound["i"] = re, im
    counts = gen.integers(0, 1000, (3, 7), dtype=np.uint16)  # photon counts
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["k"] = compound
        f["counts"] = counts
    torch.testing.assert_close(load_measurement(tmp_path / "c.h5", "k"),
                               torch.from_numpy(re + 1j * im)[None])
    y = load_measurement(tmp_path / "c.h5", "counts")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.from_numpy(counts.astype(np.float32))[None])


def test_measurement_shape_checked_against_the_operator(tmp_path, sinogram):
    op = ParallelBeamCT(16, 20)  # range (1, 20, 23)
    np.save(tmp_path / "sino.npy", sinogram)
    y = load_measurement(tmp_path / "sino.npy", range_shape=op.range_shape)
    assert y.shape == (1, 1, 20, 23)
    np.save(tmp_path / "t.npy", sinogram.T)
    with pytest.raises(ValueError, match=r"t\.npy.*shape \(23, 20\).*expects \(1, 20, 23\)"
                                         r".*transposed"):
        load_measurement(tmp_path / "t.npy", range_shape=op.range_shape)
    np.save(tmp_path / "short.npy", sinogram[:-1])
    with pytest.raises(ValueError, match=r"short\.npy.*\(19, 23\)"):
        load_measurement(tmp_path / "short.npy", range_shape=op.range_shape)


def test_measurement_from_file_reconstructs_as_in_memory(tmp_path):
    x = shepp_logan(24).double()
    op = ParallelBeamCT(24, 12)
    meas = simulate(op, x, relative_noise=0.05, seed=0)
    np.save(tmp_path / "sino.npy", meas.y[0, 0].numpy())
    y = load_measurement(tmp_path / "sino.npy", range_shape=op.range_shape)
    torch.testing.assert_close(tikhonov(op, y, 0.1), tikhonov(op, meas.y, 0.1), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, write, dataset, match",
    [
        ("two.npz", lambda p: np.savez(p, a=np.ones(3), b=np.ones(3)), None,
         r"two\.npz holds arrays \['a', 'b'\]; choose one"),
        ("one.npz", lambda p: np.savez(p, a=np.ones(3)), "sino", r"one\.npz has no array 'sino'"),
        ("d.h5", lambda p: h5py.File(p, "w").create_dataset("x/y", data=np.ones(3)), "/z",
         r"d\.h5 has no dataset '/z'; it holds \['/x/y'\]"),
        ("nan.npy", lambda p: np.save(p, np.array([1.0, np.inf])), None,
         r"nan\.npy contains NaN or inf"),
        ("bad.h5", lambda p: open(p, "wb").write(b"garbage"), None,
         r"bad\.h5 is not a readable HDF5"),
        ("bad.npz", lambda p: open(p, "wb").write(b"garbage"), None,
         r"bad\.npz is not a readable \.npz"),
        ("text.npy", lambda p: np.save(p, np.array(["a", "b"])), None,
         r"text\.npy: expected a real or complex numeric array"),
        ("m.mat", lambda p: open(p, "wb").write(b""), None, r"m\.mat.*unsupported"),
    ],
)
def test_bad_measurement_files(tmp_path, name, write, dataset, match):
    write(tmp_path / name)
    with pytest.raises(ValueError, match=match):
        load_measurement(tmp_path / name, dataset=dataset)


def test_missing_measurement_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.npy"):
        load_measurement(tmp_path / "nowhere.npy")


# ---------------------------------------------------- user sparse matrices
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_user_matrix_equal_to_parallel_beam_reconstructs_the_same(tmp_path, fmt):
    n, angles = 24, 15
    builtin = ParallelBeamCT(n, angles)
    sp.save_npz(tmp_path / "A.npz", builtin.matrix.scipy.asformat(fmt))
    user = load_sparse_operator(tmp_path / "A.npz", (n, n), range_shape=builtin.range_shape)
    assert adjointness_error(user) < 1e-12
    x = shepp_logan(n).double()
    meas = simulate(builtin, x, relative_noise=0.05, seed=0)
    torch.testing.assert_close(user(x), builtin(x), rtol=0, atol=0)
    torch.testing.assert_close(user.adjoint(meas.y), builtin.adjoint(meas.y), rtol=0, atol=0)
    rec_user = tv_reconstruction(user, meas.y, weight=0.05, iterations=100, progress=False)
    rec_builtin = tv_reconstruction(builtin, meas.y, weight=0.05, iterations=100,
                                    progress=False)
    torch.testing.assert_close(rec_user, rec_builtin, rtol=1e-10, atol=1e-10)
    # The flat layout (default range (m,)) is the same measurement, row-major.
    flat = SparseMatrixOperator.from_npz(tmp_path / "A.npz", (n, n))
    assert flat.range_shape == (angles * builtin.n_detectors,)
    torch.testing.assert_close(tikhonov(flat, meas.y.reshape(1, -1), 0.2),
                               tikhonov(builtin, meas.y, 0.2))


def test_bad_sparse_matrix_files(tmp_path):
    sp.save_npz(tmp_path / "A.npz", sp.random(30, 64, density=0.1, random_state=0))
    with pytest.raises(ValueError, match=r"A\.npz.*image_shape \(9, 9\) has 81 pixels.*64 "
                                         r"columns"):
        load_sparse_operator(tmp_path / "A.npz", (9, 9))
    with pytest.raises(ValueError, match=r"A\.npz.*range_shape \(4, 8\)"):
        load_sparse_operator(tmp_path / "A.npz", (8, 8), range_shape=(4, 8))
    with pytest.raises(FileNotFoundError, match=r"none\.npz"):
        load_sparse_operator(tmp_path / "none.npz", (8, 8))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.npz.*not a readable scipy sparse"):
        load_sparse_operator(tmp_path / "junk.npz", (8, 8))
    np.savez(tmp_path / "dense.npz", a=np.ones((3, 64)))  # a numpy archive, not sparse
    with pytest.raises(ValueError, match=r"dense\.npz.*not a readable scipy sparse"):
        load_sparse_operator(tmp_path / "dense.npz", (8, 8))
    sp.save_npz(tmp_path / "complex.npz", sp.eye(4, 64, format="csr", dtype=complex))
    with pytest.raises(TypeError, match=r"complex\.npz.*matrix must be real"):
        load_sparse_operator(tmp_path / "complex.npz", (8, 8))
    bad = sp.eye(4, 64, format="csr")
    bad.data[1] = np.nan
    sp.save_npz(tmp_path / "nan.npz", bad)
    with pytest.raises(ValueError, match=r"nan\.npz.*NaN or inf"):
        load_sparse_operator(tmp_path / "nan.npz", (8, 8))
    with pytest.raises(TypeError, match="image_shape must be a tuple"):
        load_sparse_operator(tmp_path / "A.npz", 8)
