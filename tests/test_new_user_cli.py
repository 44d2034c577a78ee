"""What a new user hit on the command line (issue 26): no silent wrong results.

Each test reproduces one case through ``bayes_recon.app.cli.main`` on tiny problems
(16 px, classical methods) and checks the error message, the warning class or what
``metrics.json`` records. References are independent of the code under test: shapes and
counts written here, min-max scaling computed with numpy, ``ParallelBeamCT``/``FanBeamCT``
for the geometry.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bayes_recon.app.cli import build_parser, main, settings_from_args
from bayes_recon.app.own_data import AspectRatioWarning, NoiseLevelWarning
from bayes_recon.data import load_image, shepp_logan, simulate
from bayes_recon.operators import FanBeamCT, ParallelBeamCT

FAST = ["--method", "tv", "--tv-iterations", "50", "--no-progress"]


def _run(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``bayes-recon reconstruct ARGV``."""
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["reconstruct", *argv]))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sinogram():
    """A 16 px parallel-beam sinogram, (angles, detectors) = (10, 23)."""
    op = ParallelBeamCT(16, 10)
    assert op.range_shape == (1, 10, 23)  # 23 = ceil(16 * sqrt(2)), the default detectors
    return simulate(op, shepp_logan(16), relative_noise=0.05, seed=0).y[0, 0].numpy()


# --------------------------------------------- 1. geometry inferred only where unambiguous
def test_transposed_sinogram_is_refused(tmp_path, capsys, sinogram):
    np.save(tmp_path / "sino_T.npy", sinogram.T)  # skimage radon's (detectors, angles)
    out = tmp_path / "run"
    code, _, err = _run(capsys, "--measurement", str(tmp_path / "sino_T.npy"), "--problem", "ct",
                        "--size", "16", "--out", str(out), *FAST)
    assert code == 2, err
    assert re.search(r"sino_T\.npy.*shape \(23, 10\).*--size 16 implies 23 detectors", err), err
    assert "looks transposed" in err and "--angles" in err and "--detectors" in err
    assert not out.exists()


def test_fan_beam_detector_count_must_match_its_default(tmp_path, capsys):
    # FanBeamCT's own default for 16 px at source 32, detector 16 (not parallel beam's 23).
    detectors = FanBeamCT(16, 1, source_distance=32, detector_distance=16).n_detectors
    np.save(tmp_path / "fan.npy", np.ones((12, detectors + 3), np.float32))
    code, _, err = _run(capsys, "--measurement", str(tmp_path / "fan.npy"), "--problem", "ct-fan",
                        "--size", "16", "--out", str(tmp_path / "run"), *FAST)
    assert code == 2
    assert f"implies {detectors} detectors, not {detectors + 3}" in err, err
    assert "transposed" not in err  # (12, n) reversed does not fit either


def test_sinogram_of_the_default_geometry_is_read_and_recorded(tmp_path, capsys, sinogram):
    np.save(tmp_path / "sino.npy", sinogram)
    out = tmp_path / "run"
    code, _, err = _run(capsys, "--measurement", str(tmp_path / "sino.npy"), "--problem", "ct",
                        "--size", "16", "--out", str(out), *FAST)
    assert code == 0, err
    m = _metrics(out)
    assert (m["angles"], m["detectors"]) == (10, 23)
    assert m["noise_check"]["implausible"] is False and m["warnings"] == []
    assert 0 < m["noise_check"]["ratio"] < 0.5


def test_implausible_noise_estimate_warns_and_is_recorded(tmp_path, capsys, sinogram):
    # The user insists on a transposed geometry: the misfit is what σ is estimated from.
    np.save(tmp_path / "sino_T.npy", sinogram.T)
    out = tmp_path / "run"
    with pytest.warns(NoiseLevelWarning, match=r"x RMS\(y\)"):
        code, _, err = _run(capsys, "--measurement", str(tmp_path / "sino_T.npy"), "--problem",
                            "ct", "--size", "16", "--angles", "23", "--detectors", "10",
                            "--out", str(out), *FAST)
    assert code == 0, err
    m = _metrics(out)
    check = m["noise_check"]
    rms = float(np.sqrt(np.mean(sinogram.astype(np.float64) ** 2)))
    assert check["rms_y"] == pytest.approx(rms, rel=1e-6)
    assert check["ratio"] == pytest.approx(check["estimated_noise_std"] / rms, rel=1e-6)
    assert check["ratio"] > check["limit"] == 0.5 and check["implausible"] is True
    assert [w["category"] for w in m["warnings"]] == ["NoiseLevelWarning"]


# ------------------------------------------------ 2. integer images scaled by their range
def test_raw_int16_image_spans_its_range_and_the_map_back_is_recorded(tmp_path, capsys):
    raw = np.random.default_rng(0).integers(128, 2192, (16, 16)).astype(np.int16)
    raw[0, 0], raw[-1, -1] = 128, 2191  # a DICOM's raw pixels, saved as .npy
    np.save(tmp_path / "ct_raw.npy", raw)
    out = tmp_path / "run"
    code, _, err = _run(capsys, "--image", str(tmp_path / "ct_raw.npy"), "--size", "16",
                        "--angles", "8", "--out", str(out), *FAST)
    assert code == 0, err
    truth = np.load(out / "truth.npy")[0]
    np.testing.assert_allclose(truth, (raw - 128.0) / 2063.0, rtol=0, atol=1e-6)
    record = _metrics(out)["image_file"]
    assert record["mapping"] == "min-max" and record["dtype"] == "int16"
    assert (record["intensity_offset"], record["intensity_scale"]) == (128.0, 2063.0)
    np.testing.assert_allclose(record["intensity_offset"] + record["intensity_scale"] * truth,
                               raw, rtol=0, atol=1e-3)


def test_sixteen_bit_png_with_a_small_range_and_constant_images(tmp_path):
    img = np.random.default_rng(1).integers(1000, 3001, (9, 7)).astype(np.uint16)
    Image.fromarray(img).save(tmp_path / "small.png")
    x = load_image(tmp_path / "small.png")[0, 0].numpy()
    lo, hi = img.min(), img.max()
    np.testing.assert_allclose(x, (img - float(lo)) / float(hi - lo), rtol=0, atol=1e-7)
    assert (x.min(), x.max()) == (0.0, 1.0)
    np.save(tmp_path / "flat.npy", np.full((5, 5), 7, np.uint8))
    with pytest.raises(ValueError, match=r"flat\.npy: a constant integer image.*every pixel 7"):
        load_image(tmp_path / "flat.npy")


# ------------------------------------------------- 4. options ignored or distorting
@pytest.mark.parametrize("argv, match", [
    (["--problem", "ct", "--spokes", "12"], r"--spokes only applies to --problem mri"),
    (["--problem", "mri", "--angles", "12"], r"--angles only applies to CT problems"),
    (["--problem", "deblur", "--spokes", "12"], r"--spokes only applies to --problem mri"),
])
def test_geometry_flags_of_other_problems_are_refused(tmp_path, capsys, argv, match):
    out = tmp_path / "run"
    code, _, err = _run(capsys, *argv, "--size", "16", "--out", str(out), *FAST)
    assert code == 2 and re.search(match, err), err
    assert not out.exists()


def test_spokes_and_angles_recorded_as_used(tmp_path, capsys):
    code, _, err = _run(capsys, "--problem", "mri", "--size", "16", "--out",
                        str(tmp_path / "mri"), *FAST)
    assert code == 0, err
    m = _metrics(tmp_path / "mri")
    assert (m["spokes"], m["angles"]) == (30, None)  # the MRI default, applied for MRI only
    code, _, err = _run(capsys, "--problem", "ct", "--size", "16", "--angles", "8", "--out",
                        str(tmp_path / "ct"), *FAST)
    assert code == 0, err
    m = _metrics(tmp_path / "ct")
    assert (m["spokes"], m["angles"], m["detectors"]) == (None, 8, 23)


def test_non_square_image_refused_by_default_and_warned_with_size(tmp_path, capsys):
    img = (np.random.default_rng(2).random((16, 24)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "wide.png")
    code, _, err = _run(capsys, "--image", str(tmp_path / "wide.png"), "--angles", "8",
                        "--out", str(tmp_path / "a"), *FAST)
    assert code == 2 and re.search(r"wide\.png is 16x24.*64x64.*--size", err), err
    out = tmp_path / "b"
    with pytest.warns(AspectRatioWarning, match=r"16x24 .* resized to 16x16"):
        code, _, err = _run(capsys, "--image", str(tmp_path / "wide.png"), "--size", "16",
                            "--angles", "8", "--out", str(out), *FAST)
    assert code == 0, err
    m = _metrics(out)
    assert (m["image_file_shape"], m["image_shape_used"]) == ([16, 24], [16, 16])
    assert [w["category"] for w in m["warnings"]] == ["AspectRatioWarning"]


# ----------------------------------------------------------------------- 9. the CLI itself
def _option_help(text: str, flag: str) -> str:
    """The help entry of ``flag`` in ``--help`` output (up to the next option)."""
    match = re.search(rf"\n  {re.escape(flag)}[ \n](.*?)(?=\n  -|\n\n|\Z)", text, re.S)
    assert match, flag
    return match.group(1)


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag, default in (("--relative-noise", "0.05"), ("--tv-weight", "0.05"),
                          ("--tikhonov-weight", "0.01"), ("--spokes", "30"),
                          ("--num-chains", "2"), ("--seed", "0"), ("--index", "0")):
        entry = " ".join(_option_help(text, flag).split())
        assert re.search(rf"default: {re.escape(default)}\b", entry), (flag, entry)
    assert "default: None" not in text


def test_usage_error_is_short(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", "--method", "no-such", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 3, err
    assert err[0].startswith("bayes-recon reconstruct: error: argument --method")
    assert err[-1] == "see bayes-recon reconstruct --help"


def test_noise_is_a_deprecated_alias_of_relative_noise(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(capsys, "--noise", "0.2", "--size", "16", "--angles", "8",
                        "--out", str(out), *FAST)
    assert code == 0, err
    assert re.search(r"--noise is deprecated; use --relative-noise", err), err
    m = _metrics(out)
    op = ParallelBeamCT(16, 8)
    expected = simulate(op, shepp_logan(16), relative_noise=0.2, seed=0).noise_std
    assert m["relative_noise"] == 0.2 and m["noise_std"] == pytest.approx(expected, rel=1e-6)
    code, _, err = _run(capsys, "--relative-noise", "0.2", "--measurement", "y.npy", "--size",
                        "16", "--out", str(tmp_path / "m"), *FAST)
    assert code == 2 and "--relative-noise sets the noise of a simulated" in err, err


def test_progress_bars_follow_the_terminal(tmp_path, monkeypatch):
    base = ["reconstruct", "--out", str(tmp_path / "o")]
    parser = build_parser(study=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert settings_from_args(parser.parse_args(base)).progress is False  # a redirected log
    assert settings_from_args(parser.parse_args([*base, "--progress"])).progress is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert settings_from_args(parser.parse_args(base)).progress is True
    assert settings_from_args(parser.parse_args([*base, "--no-progress"])).progress is False
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--progress", "--no-progress"])


def test_help_does_not_import_the_heavy_stack():
    code = ("import sys\nfrom bayes_recon.app.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['reconstruct', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pyro', 'arviz') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_light_name_lists_match_the_registries():
    from bayes_recon.app import argtypes, cli, methods
    from bayes_recon.data.problems import PROBLEMS
    from bayes_recon.inference.linearised.pipeline import CALIBRATIONS, LinearisedDIPConfig
    from bayes_recon.operators.holdout import HOLDOUT_SCHEMES

    for name in ("CLASSICAL_METHODS", "SUPN_MAP_METHODS", "SUPN_POSTERIOR_METHODS",
                 "DIP_METHODS", "GMRF_METHODS", "DENOISER_METHODS", "ALL_METHODS"):
        assert getattr(argtypes, name) == getattr(methods, name), name
    assert argtypes.PROBLEMS == PROBLEMS and argtypes.HOLDOUT_SCHEMES == HOLDOUT_SCHEMES
    assert argtypes.DIP_DEFAULTS == {k: getattr(LinearisedDIPConfig, k)
                                     for k in argtypes.DIP_DEFAULTS}
    assert argtypes.DIP_CALIBRATIONS == CALIBRATIONS
    real = next(a for a in build_parser()._actions if a.dest == "command")
    stub = next(a for a in build_parser(study=False)._actions if a.dest == "command")
    assert ([(c.dest, c.help) for c in real._choices_actions]
            == [(c.dest, c.help) for c in stub._choices_actions])
    assert cli.classical_reconstruction is methods.classical_reconstruction
