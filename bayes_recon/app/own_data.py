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
from dataclasses import dataclass, field
from pathlib import Path

import torch


__all__ = ["UserProblem", "build_problem", "build_operator", "parse_noise_std", "staged_output",
           "check_output_folder", "write_physical_outputs"]

CT_PROBLEMS = ("ct", "ct-fan")
FAN_FLAGS = ("source_distance", "detector_distance", "detector_spacing")


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


def build_operator(args, size: int, measurement_shape=None):
    """The forward operator of ``--operator`` or ``--problem`` and the geometry flags.

    ``measurement_shape`` is the shape stored in ``--measurement`` (or None); for the CT
    problems it supplies the angle and detector counts that were not given.
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
    angles, detectors = args.angles, args.detectors
    file_shape = strip_leading_ones(measurement_shape) if measurement_shape is not None else None
    if args.problem in CT_PROBLEMS and file_shape is not None and len(file_shape) == 2:
        angles = file_shape[0] if angles is None else angles
        detectors = file_shape[1] if detectors is None else detectors
    if detectors is not None and args.problem not in CT_PROBLEMS:
        raise ValueError(f"--detectors only applies to CT problems, got --problem {args.problem}")
    config = ProblemConfig(problem=args.problem, size=size, angles=20 if angles is None else angles,
                           detectors=detectors, spokes=args.spokes, seed=args.seed,
                           scan=args.scan, **fan)
    return build_named(config)


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
    from ..data import load_image, load_measurement, simulate
    from ..data.files import load_medical, match_range_shape
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
    if image in builtin_images:
        if shape[0] != shape[1]:
            raise ValueError(f"--image {image} is square; --image-shape {shape} is not: pass "
                             "an image file")
        truth = load_builtin(image, shape[0], args.index)
    elif is_scanner:
        truth, medical = load_medical(image, size=shape, **scanner)
    else:
        truth = load_image(image, size=shape)
    op = build_operator(args, size)
    meas = simulate(op, truth, relative_noise=args.noise, seed=args.seed)
    noise = meas.noise_std if value is None else value
    record = {"image": image, "simulated_noise_std": meas.noise_std}
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
