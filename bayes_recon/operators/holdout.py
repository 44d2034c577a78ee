"""Measurements split into folds by a physical scheme, for held-out validation.

A fold keeps most measurements for fitting and holds out the rest. The split
follows how the data were acquired, so that the held-out part is what a
repeated acquisition would measure anew:

==============  ===================================================================
``scheme``      held out in fold ``f`` of ``K``
==============  ===================================================================
``projection``  CT (:class:`~bayes_recon.operators.RayTransform`): every angle ``a``
                with ``a mod K = f`` (every K-th projection, whole projections)
``spoke``       radial MRI: the k-space samples of every spoke ``s`` with
                ``s mod K = f``; samples that several spokes of different folds pass
                through (the centre) are never held out
``line``        Cartesian MRI: the sampled phase-encode lines (columns), dealt to the
                folds in a seeded random order
``random``      any operator: the measurement entries (complex samples count once),
                dealt to the folds in a seeded random order
==============  ===================================================================

The fitting operator is the same kind of operator where one exists (a
``ParallelBeamCT`` on the kept angles keeps its FBP; an ``MRI`` on the kept
mask; an ``Inpainting`` for a denoising ``Identity``), else a
:class:`RangeSubset` of the original.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._validation import check_choice, check_int
from ._buffers import CachedIndex
from .base import LinearOperator
from .ct import ParallelBeamCT, RayTransform
from .fanbeam import FanBeamCT
from .mri import MRI, radial_mask
from .simple import Identity, Inpainting

__all__ = ["HOLDOUT_SCHEMES", "RangeSubset", "MeasurementSplit", "default_scheme",
           "holdout_groups", "split_measurements", "radial_spoke_count"]

HOLDOUT_SCHEMES = ("projection", "spoke", "line", "random")


class RangeSubset(LinearOperator):
    """``S A``: the entries ``index`` of ``A x``, flattened; ``(B, *domain) -> (B, k)``.

    Parameters
    ----------
    op : LinearOperator
    index : torch.Tensor
        1-D integer indices into ``A x`` flattened row-major over ``range_shape``,
        distinct and in increasing order; ``k = len(index)``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Blur, gaussian_kernel, adjointness_error
    >>> from bayes_recon.operators.holdout import RangeSubset
    >>> op = RangeSubset(Blur(8, gaussian_kernel(1.0)), torch.tensor([0, 5, 9, 63]))
    >>> op.range_shape, adjointness_error(op) < 1e-12
    ((4,), True)
    """

    def __init__(self, op: LinearOperator, index: torch.Tensor):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
        index = _check_index("index", index, int(np.prod(op.range_shape)))
        super().__init__(op.domain_shape, (int(index.numel()),), complex_range=op.complex_range)
        self.op = op
        self.index = index
        self._index = CachedIndex(index)

    def _forward(self, x):
        return self.op(x).reshape(x.shape[0], -1).index_select(1, self._index.on(x))

    def _adjoint(self, y):
        full = y.new_zeros(y.shape[0], int(np.prod(self.op.range_shape)))
        full = full.index_copy(1, self._index.on(y), y)
        return self.op.adjoint(full.reshape(y.shape[0], *self.op.range_shape))

    def extra_repr(self):
        return f"{type(self.op).__name__}, kept={self.range_shape[0]}"


def _check_index(name: str, index, size: int) -> torch.Tensor:
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be an integer torch.Tensor")
    index = index.detach().cpu().long().reshape(-1)
    if index.numel() < 1:
        raise ValueError(f"{name} must hold at least one entry, got none")
    if int(index.min()) < 0 or int(index.max()) >= size:
        raise ValueError(f"{name} must lie in [0, {size}), got [{int(index.min())}, "
                         f"{int(index.max())}]")
    if index.numel() > 1 and not bool((index[1:] > index[:-1]).all()):
        raise ValueError(f"{name} must be distinct and increasing")
    return index


@dataclass(frozen=True)
class MeasurementSplit:
    """One fold of a held-out split.

    Attributes
    ----------
    fit_op, held_op : LinearOperator
        The forward models of the kept and of the held-out measurements.
    fit_index, held_index : torch.Tensor
        Flat indices into one measurement (``range_shape`` row-major) of the kept
        and held-out entries, in the order of ``fit_op``'s and ``held_op``'s ranges.
    fold, folds : int
    scheme : str
    """

    fit_op: LinearOperator
    held_op: LinearOperator
    fit_index: torch.Tensor
    held_index: torch.Tensor
    fold: int
    folds: int
    scheme: str

    def fit_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """The kept part of ``y`` ``(B, *range_shape)`` as ``(B, *fit_op.range_shape)``."""
        return _take(y, self.fit_index, self.fit_op)

    def held_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """The held-out part of ``y`` as ``(B, *held_op.range_shape)``."""
        return _take(y, self.held_index, self.held_op)


def _take(y, index, op):
    flat = y.reshape(y.shape[0], -1)
    return flat.index_select(1, index.to(y.device)).reshape(y.shape[0], *op.range_shape)


def radial_spoke_count(mask: torch.Tensor, max_spokes: int | None = None) -> int | None:
    """The ``n`` with ``radial_mask(shape, n) == mask``, or None when there is none."""
    h, w = mask.shape
    top = 2 * (h + w) if max_spokes is None else max_spokes
    count = int(mask.sum())
    for n in range(1, top + 1):
        candidate = radial_mask((h, w), n)
        if int(candidate.sum()) > 1.2 * count + 8:  # counts grow with n: no match further on
            return None
        if torch.equal(candidate, mask):
            return n
    return None


def _spoke_membership(shape, n_spokes: int) -> np.ndarray:
    """``(n_spokes, H, W)`` bool: which k-space cells each spoke of ``radial_mask`` hits."""
    h, w = shape
    hits = np.zeros((n_spokes, h, w), dtype=bool)
    radius = np.hypot(h, w) / 2
    t = np.arange(-radius, radius + 0.5, 0.5)
    for s in range(n_spokes):  # the rasterisation of radial_mask, one spoke at a time
        theta = np.pi * s / n_spokes
        rows = np.rint(h // 2 + np.sin(theta) * t).astype(int)
        cols = np.rint(w // 2 + np.cos(theta) * t).astype(int)
        keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        hits[s, rows[keep], cols[keep]] = True
    return hits


def default_scheme(op: LinearOperator) -> str:
    """The physical scheme for ``op``: projections for CT, spokes or lines for MRI, else random."""
    if isinstance(op, RayTransform):
        return "projection"
    if isinstance(op, MRI):
        mask = op.mask
        if radial_spoke_count(mask) is not None:
            return "spoke"
        if bool((mask == mask[:1]).all()):  # whole columns sampled: Cartesian lines
            return "line"
    return "random"


def holdout_groups(op: LinearOperator, scheme: str, folds: int, seed: int = 0) -> np.ndarray:
    """The fold of every entry of one measurement, ``-1`` for entries never held out.

    Returns
    -------
    numpy.ndarray
        Integer ``(prod(range_shape),)``: fold in ``[0, folds)`` or ``-1``.

    Raises
    ------
    ValueError
        The scheme does not apply to ``op``, or there are fewer hold-out units
        (projections, spokes, lines, entries) than ``folds``.
    """
    check_choice("scheme", scheme, HOLDOUT_SCHEMES)
    check_int("folds", folds, minimum=2)
    size = int(np.prod(op.range_shape))
    rng = np.random.default_rng(seed)
    if scheme == "projection":
        if not isinstance(op, RayTransform):
            raise ValueError(f"scheme 'projection' needs a CT operator (RayTransform), got "
                             f"{type(op).__name__}; use scheme='random'")
        _enough("projection angles", op.n_angles, folds)
        c, a, d = op.range_shape
        fold = np.broadcast_to((np.arange(a) % folds)[None, :, None], (c, a, d))
        return fold.reshape(-1).copy()
    if scheme == "random":
        _enough("measurements", size, folds)
        fold = np.empty(size, dtype=np.int64)
        fold[rng.permutation(size)] = np.arange(size) % folds
        return fold
    if not isinstance(op, MRI):
        raise ValueError(f"scheme {scheme!r} needs an MRI operator, got {type(op).__name__}; "
                         "use scheme='random'")
    mask = op.mask.numpy()
    sampled = np.flatnonzero(mask.reshape(-1))  # the order of op's range
    channels = op.range_shape[0]
    if scheme == "spoke":
        n_spokes = radial_spoke_count(op.mask)
        if n_spokes is None:
            raise ValueError("scheme 'spoke' needs a mask made by radial_mask; this mask is not "
                             "radial: use scheme='line' (Cartesian) or 'random'")
        _enough("spokes", n_spokes, folds)
        hits = _spoke_membership(mask.shape, n_spokes).reshape(n_spokes, -1)[:, sampled]
        spoke_fold = np.arange(n_spokes) % folds
        fold = np.full(sampled.size, -1, dtype=np.int64)
        for f in range(folds):
            only_f = hits[spoke_fold == f].any(0) & ~hits[spoke_fold != f].any(0)
            fold[only_f] = f
    else:
        columns = np.flatnonzero(mask.any(0))
        _enough("sampled lines", columns.size, folds)
        column_fold = np.full(mask.shape[1], -1, dtype=np.int64)
        column_fold[columns[rng.permutation(columns.size)]] = np.arange(columns.size) % folds
        fold = column_fold[sampled % mask.shape[1]]
    return np.tile(fold, channels)


def _enough(what: str, units: int, folds: int) -> None:
    if units < folds:
        raise ValueError(f"folds={folds} needs at least as many {what}, got {units}: "
                         f"use fewer folds")


def split_measurements(op: LinearOperator, fold: int, folds: int = 5, scheme: str | None = None,
                       seed: int = 0) -> MeasurementSplit:
    """Fold ``fold`` of ``folds``: the forward models of the kept and held-out measurements.

    Parameters
    ----------
    op : LinearOperator
    fold : int
        In ``[0, folds)``.
    folds : int
        Number of folds ``K >= 2``; each holds out about ``1/K`` of the hold-out units.
    scheme : str, optional
        One of :data:`HOLDOUT_SCHEMES`; default :func:`default_scheme`.
    seed : int
        Seeds the random schemes (``line``, ``random``).

    Returns
    -------
    MeasurementSplit

    Raises
    ------
    ValueError
        An unknown or inapplicable scheme, too few hold-out units for ``folds``,
        or a fold whose kept part is empty.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import ParallelBeamCT
    >>> from bayes_recon.operators.holdout import split_measurements
    >>> op = ParallelBeamCT(16, n_angles=10)
    >>> split = split_measurements(op, fold=1, folds=5)
    >>> split.scheme, split.fit_op.n_angles, split.held_op.range_shape
    ('projection', 8, (1, 2, 23))
    >>> y = op(torch.rand(1, 1, 16, 16))
    >>> bool(torch.equal(split.held_measurement(y), y[:, :, [1, 6]]))
    True
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
    scheme = default_scheme(op) if scheme is None else scheme
    check_int("folds", folds, minimum=2)
    check_int("fold", fold, minimum=0)
    if fold >= folds:
        raise ValueError(f"fold must lie in [0, folds={folds}), got {fold}")
    groups = holdout_groups(op, scheme, folds, seed)
    held = torch.from_numpy(np.flatnonzero(groups == fold))
    kept = torch.from_numpy(np.flatnonzero(groups != fold))
    if held.numel() == 0 or kept.numel() == 0:
        raise ValueError(f"fold {fold} of {folds} ({scheme}) holds out {held.numel()} and keeps "
                         f"{kept.numel()} measurements; both must be non-empty")
    return MeasurementSplit(_restrict(op, scheme, groups != fold, kept),
                            _restrict(op, scheme, groups == fold, held),
                            kept, held, fold, folds, scheme)


def _restrict(op: LinearOperator, scheme: str, keep: np.ndarray, index: torch.Tensor):
    """The operator of the entries ``keep`` (flat mask), of op's own kind where one exists."""
    if scheme == "projection" and isinstance(op, (ParallelBeamCT, FanBeamCT)):
        c, a, d = op.range_shape
        angles_kept = keep.reshape(c, a, d)[0, :, 0]
        angles = op.angles[angles_kept]
        if isinstance(op, ParallelBeamCT):
            return ParallelBeamCT(op.domain_shape[1:], angles=angles, n_detectors=op.n_detectors,
                                  channels=c)
        if op.scan == "full":  # a short scan's Parker weights assume its contiguous views
            return FanBeamCT(op.domain_shape[1:], None, op.source_distance, op.detector_distance,
                             n_detectors=op.n_detectors, detector_spacing=op.detector_spacing,
                             angles=angles, channels=c)
    if isinstance(op, MRI):
        c = op.range_shape[0]
        positions = np.flatnonzero(op.mask.numpy().reshape(-1))
        if c == 1 or np.array_equal(keep.reshape(c, -1), np.tile(keep.reshape(c, -1)[:1], (c, 1))):
            mask = np.zeros(op.mask.numel(), dtype=bool)
            mask[positions[keep.reshape(c, -1)[0]]] = True
            return MRI(op.domain_shape[1:], torch.from_numpy(mask.reshape(op.mask.shape)),
                       channels=c)
    if isinstance(op, Identity):
        return Inpainting(torch.from_numpy(keep.reshape(op.domain_shape)))
    if isinstance(op, Inpainting):
        mask = op.mask.numpy().reshape(-1).copy()
        mask[np.flatnonzero(mask)[~keep]] = False
        return Inpainting(torch.from_numpy(mask.reshape(op.mask.shape)))
    return RangeSubset(op, index)

