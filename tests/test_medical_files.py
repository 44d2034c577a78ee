"""Scanner images in: DICOM (pydicom) and NIfTI (nibabel) slices in physical units, their
map to [0, 1] and back, and ``bayes-recon reconstruct --image FILE.dcm`` with HU outputs.

References are independent of the readers: pydicom's own ``pixel_array`` and header
fields, nibabel's ``get_fdata()`` and ``get_zooms()``, scikit-image's ``rgb2gray`` and
``resize``, numpy counts. Only files shipped with pydicom and nibabel (or written here)
are read; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pydicom.examples
import pytest
import tifffile
import torch
from PIL import Image
from skimage.color import rgb2gray
from skimage.transform import resize

from bayes_recon.app.cli import main
from bayes_recon.data import MedicalImage, load_image, read_dicom, read_medical, read_nifti

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
NIBABEL_FILES = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data")
CT = str(pydicom.examples.get_path("ct"))
MR = str(pydicom.examples.get_path("mr"))
RT_DOSE = str(pydicom.examples.get_path("rt_dose"))  # 15 frames
RT_PLAN = str(pydicom.examples.get_path("rt_plan"))  # no pixel data


def _shipped(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    # pydicom lists some files it downloads on demand; those may be absent or stubs.
    stub = folder == PYDICOM_FILES and os.path.isfile(path) and os.path.getsize(path) < 1000
    if not os.path.isfile(path) or stub:
        pytest.skip(f"{name} is not on disk")
    return path


def _hu(path: str) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# ------------------------------------------------------------------ DICOM
def test_ct_in_hounsfield_units_as_pydicom_computes_them():
    ds = pydicom.dcmread(CT)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    expected = ds.pixel_array.astype(np.float64) * slope + intercept
    ct = read_dicom(CT)
    assert isinstance(ct, MedicalImage)
    assert ct.units == "HU" and ct.modality == "CT" and ct.window is None
    np.testing.assert_array_equal(ct.values, expected)
    assert ct.values.dtype == np.float64 and expected.min() < -500  # air in HU, not raw counts
    assert ct.spacing_mm == tuple(float(v) for v in ds.PixelSpacing) == (0.661468, 0.661468)
    assert ct.image.shape == (1, 1, 128, 128) and ct.image.dtype == torch.float32
    assert float(ct.image.min()) == 0.0 and float(ct.image.max()) == 1.0
    # The min-max map is lossless: the [0, 1] image maps back to the HU values.
    span = expected.max() - expected.min()
    assert ct.intensity_offset == expected.min() and ct.intensity_scale == span
    back = ct.to_physical(ct.image[0, 0].double()).numpy()
    np.testing.assert_allclose(back, expected, rtol=0, atol=1e-6 * span)
    np.testing.assert_allclose(ct.to_physical(ct.image.numpy())[0, 0], expected, rtol=0,
                               atol=1e-6 * span)  # arrays too, any shape
    assert ct.to_physical(ct.image).dtype == torch.float32  # a tensor keeps its dtype


def test_mr_in_scanner_units_with_spacing():
    ds = pydicom.dcmread(MR)
    assert "RescaleSlope" not in ds
    mr = read_dicom(MR)
    assert mr.units == "scanner units" and mr.modality == "MR"
    np.testing.assert_array_equal(mr.values, ds.pixel_array.astype(np.float64))
    assert mr.spacing_mm == (0.3125, 0.3125) == tuple(float(v) for v in ds.PixelSpacing)


def test_window_maps_inside_exactly_and_counts_clipped_pixels():
    hu = _hu(CT)
    center, width = 40.0, 400.0
    lo, hi = center - width / 2, center + width / 2
    soft = read_dicom(CT, window=(center, width))
    expected = np.clip((hu - lo) / width, 0, 1)
    np.testing.assert_allclose(soft.image[0, 0].numpy(), expected, rtol=0, atol=1e-7)
    clipped = np.count_nonzero((hu < lo) | (hu > hi)) / hu.size
    assert 0.05 < clipped < 0.95  # the window really cuts both ways on this slice
    assert soft.clipped_fraction == clipped
    assert (soft.intensity_offset, soft.intensity_scale, soft.window) == (lo, width, (40.0, 400.0))
    back = soft.to_physical(soft.image[0, 0].double()).numpy()
    inside = (hu >= lo) & (hu <= hi)
    np.testing.assert_allclose(back[inside], hu[inside], rtol=0, atol=1e-6 * width)
    np.testing.assert_allclose(back, np.clip(hu, lo, hi), rtol=0, atol=1e-6 * width)
    np.testing.assert_array_equal(soft.values, hu)  # the values themselves are not windowed


def test_std_maps_with_the_scale_only():
    soft = read_dicom(CT, window=(40.0, 400.0))
    std = torch.tensor([[0.0, 0.01], [0.1, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(soft.std_to_physical(std), std * 400.0)
    np.testing.assert_allclose(soft.std_to_physical(np.array([0.25])), [100.0])
    with pytest.raises(ValueError, match="std must be >= 0"):
        soft.std_to_physical(-std)


def test_multi_frame_needs_a_frame():
    ds = pydicom.dcmread(RT_DOSE)
    frames = int(ds.NumberOfFrames)
    assert frames == 15
    with pytest.raises(ValueError, match=r"rtdose\.dcm holds 15 frames.*frame=.*--frame"):
        read_dicom(RT_DOSE)
    dose = read_dicom(RT_DOSE, frame=3)
    np.testing.assert_array_equal(dose.values, ds.pixel_array[3].astype(np.float64))
    assert not np.array_equal(ds.pixel_array[3], ds.pixel_array[7])  # the frame matters
    assert dose.frame == 3 and dose.record()["number_of_frames"] == 15
    assert dose.file_shape == (15, 10, 10)
    with pytest.raises(ValueError, match=r"rtdose\.dcm: frame 15 is out of range.*15 frames"):
        read_dicom(RT_DOSE, frame=15)
    with pytest.raises(ValueError, match=r"CT_small\.dcm: frame 1 is out of range.*1 frame"):
        read_dicom(CT, frame=1)


def test_rgb_frame_turns_grey_as_skimage():
    path = _shipped(PYDICOM_FILES, "SC_rgb_rle_2frame.dcm")
    rgb = pydicom.dcmread(path).pixel_array[1]
    grey = read_dicom(path, frame=1)
    np.testing.assert_allclose(grey.values, rgb2gray(rgb) * 255, rtol=1e-12, atol=1e-9)


def test_spacing_and_rescale_from_enhanced_functional_groups(tmp_path):
    seg = _shipped(PYDICOM_FILES, "liver_1frame.dcm")
    ds = pydicom.dcmread(seg)
    assert "PixelSpacing" not in ds
    shared = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert read_dicom(seg).spacing_mm == tuple(float(v) for v in shared)
    # An enhanced-style CT: the rescale lives in the Pixel Value Transformation.
    ds = pydicom.dcmread(CT)
    raw = ds.pixel_array.astype(np.float64)
    del ds.RescaleSlope, ds.RescaleIntercept
    item, transform = pydicom.Dataset(), pydicom.Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 2, -1000
    item.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [item]
    ds.save_as(tmp_path / "enhanced.dcm")
    enhanced = read_dicom(tmp_path / "enhanced.dcm")
    np.testing.assert_array_equal(enhanced.values, raw * 2 - 1000)
    assert enhanced.units == "HU"


def test_dicom_without_file_meta_or_suffix(tmp_path):
    ds = pydicom.dcmread(CT)
    ds.preamble = None
    del ds.file_meta
    pydicom.dcmwrite(tmp_path / "headerless.dcm", ds, enforce_file_format=False,
                     implicit_vr=True, little_endian=True)
    assert (tmp_path / "headerless.dcm").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_dicom(tmp_path / "headerless.dcm").values, _hu(CT))
    # Scanners often write DICOM without a suffix: the DICM marker identifies it.
    (tmp_path / "IM0001").write_bytes(Path(CT).read_bytes())
    np.testing.assert_array_equal(read_medical(tmp_path / "IM0001").values, _hu(CT))
    torch.testing.assert_close(load_image(tmp_path / "IM0001"), read_dicom(CT).image)


# ------------------------------------------------------------------ NIfTI
def test_nifti_default_slice_is_the_middle_of_the_last_axis():
    path = _shipped(NIBABEL_FILES, "anatomical.nii")
    img = nibabel.load(path)
    assert img.shape == (33, 41, 25)
    mid = read_nifti(path)
    np.testing.assert_array_equal(mid.values, img.get_fdata()[..., 12])
    assert mid.slice == (2, 12) and mid.frame is None and mid.units == "scanner units"
    assert mid.spacing_mm == tuple(float(z) for z in img.header.get_zooms()[:2])
    assert mid.image.shape == (1, 1, 33, 41)


def test_nifti_slice_along_another_axis_with_its_spacing():
    path = _shipped(NIBABEL_FILES, "standard.nii.gz")
    img = nibabel.load(path)
    zooms = img.header.get_zooms()
    assert len(set(zooms)) == 3  # distinct spacings: the axes cannot be mixed up unseen
    side = read_nifti(path, slice=(1, 2))
    np.testing.assert_array_equal(side.values, img.get_fdata()[:, 2, :])
    assert side.spacing_mm == (float(zooms[0]), float(zooms[2]))
    torch.testing.assert_close(load_image(path, slice=(1, 2)), side.image)  # .nii.gz dispatch


def test_nifti_4d_needs_a_frame():
    path = _shipped(NIBABEL_FILES, "functional.nii")
    img = nibabel.load(path)
    assert img.shape == (17, 21, 3, 20)
    with pytest.raises(ValueError, match=r"functional\.nii holds 20 volumes.*frame=.*--frame"):
        read_nifti(path)
    vol = read_nifti(path, frame=7, slice=(2, 1))
    np.testing.assert_array_equal(vol.values, img.get_fdata()[:, :, 1, 7])
    assert vol.frame == 7 and vol.slice == (2, 1)
    with pytest.raises(ValueError, match=r"functional\.nii: frame 20 is out of range.*20 volumes"):
        read_nifti(path, frame=20)


def test_nifti_scaling_and_spacing_units(tmp_path):
    raw = np.arange(30, dtype=np.int16).reshape(5, 6)
    img = nibabel.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    img.header.set_zooms((0.0007, 0.0009))
    img.header.set_xyzt_units("meter")
    nibabel.save(img, tmp_path / "scaled.nii.gz")
    flat = read_nifti(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(flat.values, raw * 0.5 + 10.0, rtol=0, atol=1e-12)
    assert flat.slice is None
    np.testing.assert_allclose(flat.spacing_mm, (0.7, 0.9), rtol=1e-6)


# ------------------------------------------------------------ load_image and record
def test_load_image_reads_dicom_resized():
    ct = read_dicom(CT)
    x = load_image(CT, size=32)
    expected = resize(ct.image[0, 0].double().numpy(), (32, 32), order=1, anti_aliasing=True,
                      mode="reflect")
    np.testing.assert_allclose(x[0, 0].numpy(), expected, rtol=0, atol=1e-6)
    rec = ct.record(shape=(32, 64))
    json.dumps(rec)  # JSON-ready
    assert rec["units"] == "HU" and rec["mapping"] == "min-max"
    np.testing.assert_allclose(rec["resized_spacing_mm"], [0.661468 * 4, 0.661468 * 2])


def test_medical_arguments_refused_for_other_images(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    for kwargs, name in (({"window": (0, 1)}, "window"), ({"frame": 0}, "frame"),
                         ({"slice": (0, 0)}, "slice")):
        with pytest.raises(ValueError, match=rf"a\.png: {name}= only for DICOM"):
            load_image(tmp_path / "a.png", **kwargs)
    with pytest.raises(ValueError, match=r"CT_small\.dcm: slice= \(--slice\).*NIfTI"):
        load_image(CT, slice=(0, 0))


def _nan_nifti(tmp_path):
    data = np.ones((4, 5, 3), np.float32)
    data[1, 1, 2] = np.nan
    data[..., 0] = np.arange(20, dtype=np.float32).reshape(4, 5)
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    return tmp_path / "nan.nii"


def test_non_finite_values_only_matter_in_the_slice(tmp_path):
    path = _nan_nifti(tmp_path)
    with pytest.raises(ValueError, match=r"nan\.nii: slice \(2, 2\) has 1 NaN or inf"):
        read_nifti(path, slice=(2, 2))
    np.testing.assert_array_equal(read_nifti(path, slice=(2, 0)).values,
                                  np.arange(20.0).reshape(4, 5))


def _jpeg_ls_decodable() -> bool:
    return any(importlib.util.find_spec(m) for m in ("jpeg_ls", "libjpeg", "gdcm"))


@pytest.mark.parametrize("case", ["no pixels", "jpeg-ls", "truncated", "not dicom",
                                  "not nifti", "cifti", "axis", "index", "constant", "window",
                                  "3-D frame", "2-D slice"])
def test_bad_input_is_named(tmp_path, case):
    if case == "no pixels":
        call, match = lambda: read_dicom(RT_PLAN), r"rtplan\.dcm: the DICOM file holds no pixel"
    elif case == "jpeg-ls":
        if _jpeg_ls_decodable():
            pytest.skip("a JPEG-LS decoder is installed")
        path = _shipped(PYDICOM_FILES, "MR_small_jpeg_ls_lossless.dcm")
        call = lambda: read_dicom(path)  # noqa: E731
        match = (r"MR_small_jpeg_ls_lossless\.dcm: .*'JPEG-LS Lossless Image Compression' "
                 r"\(1\.2\.840\.10008\.1\.2\.4\.80\) cannot be decoded.*install pyjpegls")
    elif case == "truncated":
        path = _shipped(PYDICOM_FILES, "MR_truncated.dcm")
        call, match = lambda: read_dicom(path), r"MR_truncated\.dcm: corrupt .*pixel data"
    elif case == "not dicom":
        (tmp_path / "fake.dcm").write_text("hello, I am text\n" * 20)
        call, match = lambda: read_dicom(tmp_path / "fake.dcm"), r"fake\.dcm is not a DICOM file"
    elif case == "not nifti":
        (tmp_path / "fake.nii").write_bytes(b"\x00" * 400)
        call = lambda: read_nifti(tmp_path / "fake.nii")  # noqa: E731
        match = r"fake\.nii is not a readable NIfTI"
    elif case == "cifti":
        path = _shipped(NIBABEL_FILES, "row_major.dconn.nii")
        call, match = lambda: read_nifti(path), r"row_major\.dconn\.nii: expected a NIfTI-1/2"
    elif case == "axis":
        path = _shipped(NIBABEL_FILES, "anatomical.nii")
        call = lambda: read_nifti(path, slice=(3, 0))  # noqa: E731
        match = r"anatomical\.nii: slice axis 3 is out of range.*axes 0, 1, 2"
    elif case == "index":
        path = _shipped(NIBABEL_FILES, "anatomical.nii")
        call = lambda: read_nifti(path, slice=(1, 41))  # noqa: E731
        match = r"anatomical\.nii: slice index 41 is out of range: axis 1 has length 41"
    elif case == "constant":
        nibabel.save(nibabel.Nifti1Image(np.full((4, 4), 3.0), np.eye(4)), tmp_path / "flat.nii")
        call = lambda: read_nifti(tmp_path / "flat.nii")  # noqa: E731
        match = r"flat\.nii: the image is constant \(3 scanner units\).*--window"
        assert read_nifti(tmp_path / "flat.nii", window=(0, 10)).intensity_offset == -5.0
    elif case == "window":
        call, match = lambda: read_dicom(CT, window=(40, 0)), r"window.*width > 0"
    elif case == "3-D frame":
        path = _shipped(NIBABEL_FILES, "anatomical.nii")
        call, match = lambda: read_nifti(path, frame=0), r"anatomical\.nii: frame= .*4-D.*3-D"
    else:
        path = tmp_path / "flat2d.nii"
        nibabel.save(nibabel.Nifti1Image(np.eye(3), np.eye(4)), path)
        call, match = lambda: read_nifti(path, slice=(0, 0)), r"flat2d\.nii: slice= .*2-D"
    with pytest.raises(ValueError, match=match):
        call()


def test_missing_file():
    with pytest.raises(FileNotFoundError, match=r"nowhere\.dcm"):
        read_dicom("nowhere.dcm")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.nii\.gz"):
        load_image("nowhere.nii.gz")


# ------------------------------------------------------------------ command line
def _run(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["reconstruct", *argv]))
    out = capsys.readouterr()
    return info.value.code, out.out + out.err


def test_cli_ct_file_writes_hounsfield_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    code, text = _run(capsys, "--image", CT, "--problem", "ct", "--angles", "20", "--size", "32",
                      "--method", "tikhonov", "--out", str(out), "--no-progress")
    assert code == 0, text
    medical = json.loads((out / "metrics.json").read_text())["medical"]
    hu = _hu(CT)
    assert medical["units"] == "HU" and medical["modality"] == "CT"
    assert medical["window"] is None and medical["mapping"] == "min-max"
    assert medical["spacing_mm"] == [0.661468, 0.661468]
    np.testing.assert_allclose(medical["resized_spacing_mm"], [0.661468 * 128 / 32] * 2)
    offset, scale = medical["intensity_offset"], medical["intensity_scale"]
    assert (offset, scale) == (hu.min(), hu.max() - hu.min())
    rec = np.load(out / "reconstruction.npy")[0].astype(np.float64)
    rec_hu = tifffile.imread(out / "reconstruction_hu.tif")
    assert rec_hu.dtype == np.float32 and rec_hu.shape == (32, 32)
    np.testing.assert_allclose(rec_hu, offset + scale * rec, rtol=1e-6, atol=1e-6 * scale)
    # The truth in HU is pydicom's HU slice resized (the map is linear, so it commutes).
    truth_hu = tifffile.imread(out / "truth_hu.tif")
    np.testing.assert_allclose(truth_hu, resize(hu, (32, 32), order=1, anti_aliasing=True,
                                                mode="reflect"), rtol=0, atol=1e-4 * scale)
    assert not (out / "mean_hu.tif").exists()


def test_cli_ct_posterior_in_hounsfield_units_with_a_window(tmp_path, capsys):
    out = tmp_path / "run"
    code, text = _run(capsys, "--image", CT, "--problem", "ct", "--angles", "20", "--size", "32",
                      "--method", "fixed-sigma-dip", "--dip-iterations", "20", "--num-samples",
                      "8", "--dip-channels", "8", "--window", "40", "400", "--out", str(out),
                      "--no-progress")
    assert code == 0, text
    medical = json.loads((out / "metrics.json").read_text())["medical"]
    hu = _hu(CT)
    assert medical["window"] == [40.0, 400.0] and medical["mapping"] == "window"
    assert medical["clipped_fraction"] == np.count_nonzero((hu < -160) | (hu > 240)) / hu.size
    assert (medical["intensity_offset"], medical["intensity_scale"]) == (-160.0, 400.0)
    for name in ("reconstruction", "mean"):
        np.testing.assert_allclose(tifffile.imread(out / f"{name}_hu.tif"),
                                   -160.0 + 400.0 * np.load(out / f"{name}.npy")[0], rtol=1e-6,
                                   atol=1e-4)
    std = np.load(out / "std.npy")[0]
    assert std.max() > 0
    np.testing.assert_allclose(tifffile.imread(out / "std_hu.tif"), 400.0 * std, rtol=1e-6,
                               atol=1e-6)


def test_cli_nifti_uses_physical_suffix(tmp_path, capsys):
    path = _shipped(NIBABEL_FILES, "functional.nii")
    out = tmp_path / "run"
    code, text = _run(capsys, "--image", path, "--frame", "2", "--slice", "2", "1", "--size", "16",
                      "--angles", "8", "--method", "fbp", "--out", str(out), "--no-progress")
    assert code == 0, text
    medical = json.loads((out / "metrics.json").read_text())["medical"]
    assert (medical["frame"], medical["slice"], medical["units"]) == (2, [2, 1], "scanner units")
    rec = np.load(out / "reconstruction.npy")[0]
    np.testing.assert_allclose(tifffile.imread(out / "reconstruction_physical.tif"),
                               medical["intensity_offset"] + medical["intensity_scale"] * rec,
                               rtol=1e-6, atol=1e-6 * medical["intensity_scale"])
    assert (out / "truth_physical.tif").exists() and not (out / "reconstruction_hu.tif").exists()


@pytest.mark.parametrize("argv, match", [
    (["--image", "shepp_logan", "--window", "0", "1"], r"--window: only for a DICOM"),
    (["--image", "PNG", "--slice", "0", "1"], r"--slice: only for a DICOM .* --image .*a\.png"),
    (["--measurement", "NPY", "--frame", "0"], r"--frame: only for a DICOM/NIfTI --image, not for "
                                               r"--measurement"),
    (["--image", RT_DOSE], r"rtdose\.dcm holds 15 frames.*--frame"),
    (["--image", CT, "--window", "40", "0"], r"--window CENTER WIDTH.*width > 0"),
])
def test_cli_bad_medical_flags_write_nothing(tmp_path, capsys, argv, match):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "y.npy", np.zeros((20, 23), np.float32))
    argv = [str(tmp_path / "a.png") if a == "PNG" else str(tmp_path / "y.npy") if a == "NPY"
            else a for a in argv]
    out = tmp_path / "run"
    code, text = _run(capsys, *argv, "--size", "16", "--method", "fbp", "--out", str(out),
                      "--no-progress")
    assert code == 2
    assert re.search(match, text), text
    assert not out.exists()
