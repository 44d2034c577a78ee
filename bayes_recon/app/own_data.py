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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch


__all__ = ["UserProblem", "build_problem", "build_operator", "parse_noise_std", "staged_output"]

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
    """

    op: object
    y: torch.Tensor
    truth: torch.Tensor | None
    noise_std: float | None
    noise_mode: str
    record: dict = field(default_factory=dict)


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
    from ..data.files import match_range_shape

    if args.measurement is not None:
        if args.image is not None:
            raise ValueError("give either --measurement (reconstruct measured data) or --image "
                             "(simulate a measurement from an image), not both")
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
    if image in builtin_images:
        if shape[0] != shape[1]:
            raise ValueError(f"--image {image} is square; --image-shape {shape} is not: pass "
                             "an image file")
        truth = load_builtin(image, shape[0], args.index)
    else:
        truth = load_image(image, size=shape)
    op = build_operator(args, size)
    meas = simulate(op, truth, relative_noise=args.noise, seed=args.seed)
    noise = meas.noise_std if value is None else value
    record = {"image": image, "simulated_noise_std": meas.noise_std}
    return UserProblem(op, meas.y, truth, noise if mode == "known" else None, mode, record)


@contextlib.contextmanager
def staged_output(out):
    """A fresh temporary folder beside ``out``; its files move into ``out`` only on success.

    On an exception nothing is written to ``out`` (it is not even created) and the
    temporary folder is removed.
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.staging-"))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(stage.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
