"""The user's own data on the command line: image and measurement files, a sparse system
matrix, fan-beam CT, 32-bit TIFF outputs and run folders written all or nothing.

:func:`build_problem` turns the parsed ``bayes-recon reconstruct`` arguments into a
:class:`UserProblem` (operator, measurement, truth when known, noise level).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch


__all__ = ["UserProblem", "build_problem", "build_operator", "parse_noise_std", "staged_output",
           "check_output_folder", "write_physical_outputs", "check_noise_level",
           "NoiseLevelWarning", "AspectRatioWarning", "NOISE_TO_RMS_LIMIT", "DEFAULT_SPOKES",
           "DEFAULT_ANGLES", "DEFAULT_RELATIVE_NOISE"]

CT_PROBLEMS = ("ct", "ct-fan")
FAN_FLAGS = ("source_distance", "detector_distance", "detector_spacing")
DEFAULT_ANGLES = 20
DEFAULT_SPOKES = 30
DEFAULT_RELATIVE_NOISE = 0.05
#: Largest plausible estimated σ as a fraction of RMS(y). With y = A x + ε,
#: E[mean y²] = mean (A x)² + σ², so σ ≤ RMS(y) always, and σ = 0.5 RMS(y) says the noise
#: carries a quarter of the measurement's power (SNR 3, 4.8 dB). Simulated data at 20 %
#: relative noise give 0.03-0.23 (CT, fan-beam CT, MRI, deblurring; the FBP-residual
#: estimate included); a sinogram read in the wrong orientation gives ~0.8: the misfit of
#: a wrong geometry is what an estimator then reports as noise.
NOISE_TO_RMS_LIMIT = 0.5
# Aspect ratios closer than this (relative) count as equal: rounding a resize, not a squash.
ASPECT_TOLERANCE = 0.02


class NoiseLevelWarning(UserWarning):
    """The estimated noise σ is implausibly large for the data (see :data:`NOISE_TO_RMS_LIMIT`):
    most likely the geometry does not fit the measurement (orientation, angles, detectors)."""


class AspectRatioWarning(UserWarning):
    """An image file was resized to a shape of another aspect ratio (it is distorted)."""


@dataclass
class UserProblem:
    """What ``reconstruct`` works on.

    Attributes
    ----------
    op : LinearOperator
    y : torch.Tensor
        ``(1, *op.range_shape)``.
    truth : torch.Tensor or None
        ``(1, C, H, W)`` when known (a measurement simulated from an image), else None.
    noise_std : float or None
        The σ handed to the method: the simulated σ or the ``--noise-std VALUE``
        given; None when the method is to estimate it.
    noise_mode : {"known", "estimate"}
        What :class:`~bayes_recon.app.methods.MethodSettings` is told.
    record : dict
        Where the data came from, for ``metrics.json``.
    medical : bayes_recon.data.MedicalImage or None
        The DICOM/NIfTI slice the truth was made from (its map back to physical
        units), for :func:`write_physical_outputs`; None for other images.
    """

    op: object
    y: torch.Tensor
    truth: torch.Tensor | None
    noise_std: float | None
    noise_mode: str
    record: dict = field(default_factory=dict)
    medical: object | None = None


def parse_noise_std(text: str | None, simulated: bool) -> tuple[str, float | None]:
    """``--noise-std``: ``known`` (the simulated σ), ``estimate`` or a positive number.

    Returns ``(mode, value)``: ``("known", None)`` for the simulated σ,
    ``("estimate", None)``, or ``("known", value)``. A measurement read from a file
    has no known σ: its default is ``estimate``.

    Examples
    --------
    >>> parse_noise_std("0.05", simulated=False)
    ('known', 0.05)
    >>> parse_noise_std(None, simulated=False)
    ('estimate', None)
    """
    if text is None:
        text = "known" if simulated else "estimate"
    if text in ("known", "estimate"):
        if text == "known" and not simulated:
            raise ValueError("--noise-std known: a measurement read from a file has no known "
                             "noise level; pass --noise-std VALUE (the noise standard "
                             "deviation, in the measurement's units) or --noise-std estimate")
        return text, None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--noise-std must be 'known', 'estimate' or a positive number, "
                         f"got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"--noise-std must be a finite number > 0, got {text!r}")
    return "known", value


def _given_geometry_flags(args) -> list[str]:
    """The geometry options that were given (their defaults are None or "full")."""
    flags = [f"--{name.replace('_', '-')}" for name in ("angles", "detectors", "spokes", *FAN_FLAGS)
             if getattr(args, name, None) is not None]
    return flags + (["--scan"] if getattr(args, "scan", "full") != "full" else [])


def default_detectors(problem: str, size: int, **fan) -> int:
    """The detector count a CT problem's geometry takes by default for ``size``.

    ``ct``: ``ParallelBeamCT``'s ``ceil(hypot(size, size))``; ``ct-fan``: ``FanBeamCT``'s
    (the circumscribed circle's shadow for the fan flags given). Read off a one-angle
    operator, so it is the geometry's own rule, not a copy of it.
    """
    from ..data.problems import ProblemConfig
    from ..data.problems import build_operator as build_named

    return build_named(ProblemConfig(problem=problem, size=size, angles=1, **fan)).n_detectors


def _ct_counts_from_file(args, size: int, file_shape: tuple, fan: dict) -> tuple[int, int]:
    """``(angles, detectors)`` of a CT ``--measurement``: given, else read off the file where
    that is unambiguous.

    A sinogram is ``(angles, detectors)``; the file alone cannot tell a transposed one
    (skimage's ``radon`` returns ``(detectors, angles)``), so without ``--detectors`` the
    file's second axis must be the geometry's default detector count for ``--size``.
    """
    angles, detectors = args.angles, args.detectors
    if detectors is None:
        expected = default_detectors(args.problem, size, **fan)
        if file_shape[1] != expected:
            hint = ""
            if file_shape[0] == expected:
                hint = (f" It looks transposed: its first axis has {expected} entries (skimage's "
                        "radon returns (detectors, angles)); save its transpose.")
            raise ValueError(
                f"{args.measurement}: the sinogram has shape {tuple(file_shape)}, read as "
                f"(angles, detectors), but --problem {args.problem} --size {size} implies "
                f"{expected} detectors, not {file_shape[1]}.{hint} If the geometry is "
                "different, pass --angles and --detectors")
        detectors = expected
    if angles is None:
        angles = file_shape[0]
    return angles, detectors


def resolved_spokes(args) -> int | None:
    """The radial spokes of ``--problem mri`` (``--spokes``, else 30); None for other problems."""
    if args.operator is not None or args.problem != "mri":
        return None
    return DEFAULT_SPOKES if args.spokes is None else args.spokes


def build_operator(args, size: int, measurement_shape=None):
    """The forward operator of ``--operator`` or ``--problem`` and the geometry flags.

    ``measurement_shape`` is the shape stored in ``--measurement`` (or None); for the CT
    problems it supplies the angle count, and confirms the detector count, that were not
    given (see :func:`_ct_counts_from_file`). A geometry flag the problem does not use is
    refused, not ignored.
    """
    from ..data.files import strip_leading_ones
    from ..data.problems import ProblemConfig
    from ..data.problems import build_operator as build_named
    from ..operators import load_sparse_operator

    fan = {f: getattr(args, f) for f in FAN_FLAGS}
    if args.operator is not None:
        if args.image_shape is None:
            raise ValueError("--operator needs --image-shape H W (the image the matrix's "
                             "columns stand for, row-major)")
        given = _given_geometry_flags(args)
        if given:
            raise ValueError(f"{', '.join(given)}: the geometry is the --operator matrix; "
                             "these options only apply to the built-in --problem geometries")
        range_shape = None
        if measurement_shape is not None and len(strip_leading_ones(measurement_shape)) > 1:
            range_shape = strip_leading_ones(measurement_shape)  # rows in the file's row-major order
        return load_sparse_operator(args.operator, tuple(args.image_shape), range_shape)
    if args.image_shape is not None:
        raise ValueError("--image-shape is only used with --operator; the built-in problems "
                         "take --size")
    given = [f for f, v in fan.items() if v is not None] + (["scan"] if args.scan != "full" else [])
    if args.problem != "ct-fan" and given:
        names = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ValueError(f"{names} only apply to --problem ct-fan, got --problem {args.problem}")
    for flag, value in (("--angles", args.angles), ("--detectors", args.detectors)):
        if value is not None and args.problem not in CT_PROBLEMS:
            raise ValueError(f"{flag} only applies to CT problems (ct, ct-fan), got --problem "
                             f"{args.problem}")
    if args.spokes is not None and args.problem != "mri":
        raise ValueError(f"--spokes only applies to --problem mri, got --problem {args.problem}")
    angles, detectors = args.angles, args.detectors
    file_shape = strip_leading_ones(measurement_shape) if measurement_shape is not None else None
    if args.problem in CT_PROBLEMS and file_shape is not None and len(file_shape) == 2:
        angles, detectors = _ct_counts_from_file(args, size, file_shape, fan)
    config = ProblemConfig(problem=args.problem, size=size,
                           angles=DEFAULT_ANGLES if angles is None else angles,
                           detectors=detectors, spokes=resolved_spokes(args) or DEFAULT_SPOKES,
                           seed=args.seed, scan=args.scan, **fan)
    return build_named(config)


def _check_aspect(args, image: str, file_shape, shape, record: dict) -> None:
    """Refuse, or warn about, resizing an image file to another aspect ratio.

    The built-in problems take square images. Squashing a 64x96 file to the default
    64x64 would distort it without anyone asking for that size, so it is refused; an
    explicit ``--size`` (or ``--image-shape``) is the user's choice, carried out with an
    :class:`AspectRatioWarning`. The shapes go to ``metrics.json`` either way.
    """
    (h0, w0), (h, w) = (int(file_shape[0]), int(file_shape[1])), (int(shape[0]), int(shape[1]))
    record["image_file_shape"], record["image_shape_used"] = [h0, w0], [h, w]
    if abs(math.log((h0 / w0) / (h / w))) <= ASPECT_TOLERANCE:
        return
    explicit = args.size is not None or args.operator is not None
    if not explicit:
        raise ValueError(
            f"--image {image} is {h0}x{w0} (H x W); the problem takes {h}x{w} images, which "
            "would distort it. Crop it to the shape you want, or pass --size N to resize it "
            "to N x N anyway")
    message = (f"--image {image} is {h0}x{w0} (H x W) and is resized to {h}x{w}: its aspect "
               f"ratio changes by a factor {(h / w) / (h0 / w0):.3g} (the image is distorted); "
               "crop it first to keep its proportions")
    warnings.warn(message, AspectRatioWarning, stacklevel=2)
    record.setdefault("warnings", []).append({"category": "AspectRatioWarning",
                                               "message": message})


def check_noise_level(noise_std: float, y: torch.Tensor, source: str) -> dict:
    """Warn with :class:`NoiseLevelWarning` when an estimated σ exceeds
    ``NOISE_TO_RMS_LIMIT · RMS(y)``; the check as a JSON-ready record.

    Parameters
    ----------
    noise_std : float
        The estimated σ.
    y : torch.Tensor
        ``(1, *range_shape)`` the measurement (real or complex).
    source : str
        What estimated σ (recorded), e.g. the method's name.
    """
    rms = float(y.detach().abs().double().pow(2).mean().sqrt())
    ratio = float(noise_std) / rms if rms > 0 else math.inf
    record = {"estimated_noise_std": float(noise_std), "estimated_by": source, "rms_y": rms,
              "ratio": ratio, "limit": NOISE_TO_RMS_LIMIT,
              "implausible": bool(ratio > NOISE_TO_RMS_LIMIT)}
    if record["implausible"]:
        message = (f"the estimated noise std {noise_std:.4g} is {ratio:.2f} x RMS(y) = {rms:.4g}, "
                   f"above the plausible {NOISE_TO_RMS_LIMIT} x RMS(y) (noise carrying over a "
                   "quarter of the measurement's power): the geometry probably does not fit the "
                   "measurement (orientation, --angles, --detectors, --size), or the method's "
                   "estimate has not converged; check them, or pass --noise-std VALUE if the "
                   "data really are this noisy")
        warnings.warn(message, NoiseLevelWarning, stacklevel=2)
        record["warning"] = message
    return record


def build_problem(args, size: int, builtin_images: tuple, load_builtin) -> UserProblem:
    """Operator, measurement and (when known) truth of ``reconstruct``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``reconstruct`` arguments.
    size : int
        Image side length of the built-in problems.
    builtin_images : tuple of str
        Names ``--image`` takes besides a file path.
    load_builtin : callable
        ``(name, size, index) -> (1, 1, size, size)`` for those names.
    """
    from ..data import load_measurement, simulate
    from ..data.files import load_image_with_record, load_medical, match_range_shape
    from ..data.medical import medical_format

    # --window/--frame/--slice choose and map a slice of a scanner image file.
    scanner = {flag: getattr(args, flag, None) for flag in ("window", "frame", "slice")}
    scanner_given = ", ".join(f"--{flag}" for flag, value in scanner.items() if value is not None)
    if args.measurement is not None:
        if args.image is not None:
            raise ValueError("give either --measurement (reconstruct measured data) or --image "
                             "(simulate a measurement from an image), not both")
        if scanner_given:
            raise ValueError(f"{scanner_given}: only for a DICOM/NIfTI --image, not for "
                             "--measurement")
        if args.relative_noise is not None:
            raise ValueError("--relative-noise sets the noise of a simulated measurement; "
                             "--measurement is measured data (give its noise with --noise-std "
                             "VALUE, or let it be estimated)")
        raw = load_measurement(args.measurement, dataset=args.dataset)  # read once
        op = build_operator(args, size, measurement_shape=raw.shape[1:])
        y = match_range_shape(raw, op.range_shape, str(args.measurement))
        if op.complex_range != y.is_complex():
            kind = "complex k-space" if op.complex_range else "a real sinogram"
            raise ValueError(f"{args.measurement}: --problem {args.problem} expects {kind}, "
                             f"got dtype {y.dtype}")
        y = y.to(torch.complex64 if y.is_complex() else torch.float32)
        mode, value = parse_noise_std(args.noise_std, simulated=False)
        record = {"measurement": str(args.measurement), "dataset": args.dataset}
        return UserProblem(op, y, None, value, mode, record)
    if args.dataset is not None:
        raise ValueError("--dataset names an array inside a --measurement file; no "
                         "--measurement given")
    mode, value = parse_noise_std(args.noise_std, simulated=True)
    image = "shepp_logan" if args.image is None else args.image
    if args.operator is not None and args.image_shape is None:
        raise ValueError("--operator needs --image-shape H W (the image the matrix's "
                         "columns stand for, row-major)")
    shape = (size, size) if args.operator is None else tuple(args.image_shape)[-2:]
    medical = None
    is_scanner = image not in builtin_images and medical_format(image) is not None
    if scanner_given and not is_scanner:
        raise ValueError(f"{scanner_given}: only for a DICOM (.dcm) or NIfTI (.nii, .nii.gz) "
                         f"--image, not for --image {image}")
    record = {"image": image}
    if image in builtin_images:
        if shape[0] != shape[1]:
            raise ValueError(f"--image {image} is square; --image-shape {shape} is not: pass "
                             "an image file")
        truth = load_builtin(image, shape[0], args.index)
    elif is_scanner:
        truth, medical = load_medical(image, size=shape, **scanner)
        _check_aspect(args, image, medical.values.shape, shape, record)
    else:
        truth, image_record = load_image_with_record(image, size=shape)
        _check_aspect(args, image, image_record["shape"], shape, record)
        record["image_file"] = image_record  # how its values map to [0, 1], to map back
    op = build_operator(args, size)
    relative = DEFAULT_RELATIVE_NOISE if args.relative_noise is None else args.relative_noise
    meas = simulate(op, truth, relative_noise=relative, seed=args.seed)
    noise = meas.noise_std if value is None else value
    record.update(relative_noise=relative, simulated_noise_std=meas.noise_std)
    if medical is not None:
        record["medical"] = medical.record(shape=tuple(truth.shape[-2:]))
    return UserProblem(op, meas.y, truth, noise if mode == "known" else None, mode, record,
                       medical)


def write_physical_outputs(stage, medical, x: torch.Tensor, posterior=None,
                           truth: torch.Tensor | None = None) -> list[Path]:
    """The run's images in the scanner file's physical units, as 32-bit float TIFFs.

    Writes ``reconstruction_hu.tif``, ``truth_hu.tif`` and, for a posterior,
    ``mean_hu.tif`` and ``std_hu.tif`` into ``stage`` when ``medical.units`` is
    ``"HU"`` (CT); the same names with ``_physical`` instead of ``_hu`` otherwise.
    Values are ``medical.to_physical`` of the ``[0, 1]`` images (the std through
    ``medical.std_to_physical``, the scale only); with a window, pixels beyond it
    are at its edges.

    Parameters
    ----------
    stage : str or Path
        Folder (the staged ``--out``).
    medical : bayes_recon.data.MedicalImage
    x : torch.Tensor
        ``(1, 1, H, W)`` reconstruction on the ``[0, 1]`` scale.
    posterior : Posterior, optional
        Its ``mean``/``std`` ``(1, H, W)``.
    truth : torch.Tensor, optional
        ``(1, 1, H, W)`` the image the measurement was simulated from; default
        ``medical.image`` when it has ``x``'s size (no resizing).

    Returns
    -------
    list of Path
        The files written.
    """
    from ._io import write_tiff

    stage = Path(stage)
    suffix = "_hu" if medical.units == "HU" else "_physical"
    if truth is None and tuple(medical.image.shape[-2:]) == tuple(x.shape[-2:]):
        truth = medical.image
    images = {"reconstruction": medical.to_physical(x[0, 0].detach().double())}
    if truth is not None:
        images["truth"] = medical.to_physical(truth[0, 0].detach().double())
    if posterior is not None:
        images["mean"] = medical.to_physical(posterior.mean[0].detach().double())
        images["std"] = medical.std_to_physical(posterior.std[0].detach().double())
    return [write_tiff(stage / f"{name}{suffix}.tif", image.cpu().numpy())
            for name, image in images.items()]


def check_output_folder(out, overwrite: bool = False) -> Path:
    """``out`` as a Path, refused when it already holds files and ``overwrite`` is False.

    A run into a folder of an earlier run would leave that run's files beside the
    new ones (a point-estimate run beside an old ``posterior.nc``, which
    ``calibrate`` would then score), so the folder is replaced whole or not at all.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_dir() and not overwrite:
        present = sorted(p.name for p in out.iterdir())
        if present:
            shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
            raise ValueError(f"--out {out} already holds files ({shown}); pass --overwrite to "
                             "replace that folder whole, or choose another --out")
    return out


@contextlib.contextmanager
def staged_output(out, overwrite: bool = False):
    """A fresh folder beside ``out`` that becomes ``out`` only on success.

    On an exception nothing is written to ``out`` (it is not even created) and the
    staging folder is removed. On success the staging folder is renamed to ``out``;
    with ``overwrite`` an existing ``out`` is replaced whole (its old files do not
    survive beside the new ones). Folders are made with the process's umask.

    Raises
    ------
    ValueError
        ``out`` already holds files and ``overwrite`` is False (see
        :func:`check_output_folder`).
    """
    out = check_output_folder(out, overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    stage = parent / f".{out.name}.staging-{uuid.uuid4().hex[:12]}"
    stage.mkdir()  # os.mkdir honours the umask (tempfile.mkdtemp would force 0700)
    old = None
    try:
        yield stage
        if out.exists():
            old = parent / f".{out.name}.replaced-{uuid.uuid4().hex[:12]}"
            os.replace(out, old)
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
