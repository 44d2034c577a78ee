"""``Posterior``: the container every inference method returns.

A posterior is a tensor of image samples ``(chains, draws, C, H, W)`` plus what
is known about how it was made (latent draws, sampler statistics, method and
operator names, noise level, seed, evidence trace, hyperparameters). It knows
nothing about diagnostics; ``to_arviz`` imports ``bayes_recon.diagnostics``
lazily because diagnostics sits above this module (the one upward import, made at call time).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from ._validation import check_int, check_tensor

__all__ = ["Posterior"]


def _as_tensor(value):
    """Accept a numpy array for convenience; everything else goes through check_tensor."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    return value


def _stat_array(name: str, value, chains: int, draws: int) -> np.ndarray:
    """One sampler statistic as a numpy array of shape (chains, draws)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.shape != (chains, draws):
        raise ValueError(
            f"sample_stats[{name!r}] must have shape (chains, draws) = ({chains}, {draws}), "
            f"got {arr.shape}"
        )
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"sample_stats[{name!r}] must be numeric or boolean, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"sample_stats[{name!r}] contains NaN or inf entries")
    return arr


def _sorted_quantile(sorted_flat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear-interpolation quantiles (numpy's default) of data sorted along dim 0.

    Avoids ``torch.quantile``'s input-size limit; ``sorted_flat`` is ``(S, ...)``,
    ``q`` is 1-D; returns ``(len(q), ...)``.
    """
    n = sorted_flat.shape[0]
    pos = q.to(sorted_flat.dtype) * (n - 1)
    lo = pos.floor().long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo.to(pos.dtype)).view(-1, *([1] * (sorted_flat.dim() - 1)))
    return sorted_flat[lo] * (1 - frac) + sorted_flat[hi] * frac


class Posterior:
    """Posterior image samples with their provenance.

    A posterior describes ONE image: samples are ``(chains, draws, C, H, W)`` and
    ``mean``, ``std`` and ``quantile`` are ``(C, H, W)``, without the batch axis of
    the ``(B, C, H, W)`` image convention (``post.mean[None]`` is the batch form).
    A truth for ``to_arviz`` may be ``(C, H, W)``, ``(1, C, H, W)`` or, for one
    channel, ``(H, W)``.

    Parameters
    ----------
    samples : torch.Tensor, shape (chains, draws, C, H, W)
        Real, finite image samples (a numpy array is converted).
    z : torch.Tensor, shape (chains, draws, latent_dim), optional
        Latent draws, for methods that have them (the SUPN program).
    sample_stats : dict of str to array of shape (chains, draws), optional
        Sampler statistics, e.g. ``diverging``, ``step_size``, ``tree_depth``,
        ``accepted`` (stored as numpy arrays).
    method : str, optional
        Name of the inference method, e.g. ``"nuts"`` or ``"linearised_laplace"``.
    operator : str or object, optional
        Name of the forward operator; a non-string object is recorded by its
        class name.
    noise_std : float, optional
        Measurement noise standard deviation.
    seed : int, optional
        Seed the samples were drawn with.
    evidence_trace : 1-D array, optional
        Log evidence over hyperparameter-optimisation iterations.
    hyperparameters : dict, optional
        Fitted hyperparameters (name -> float or small array).
    **extras
        Anything else (free-form), kept in ``.extras``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.posterior import Posterior
    >>> post = Posterior(torch.randn(2, 50, 1, 8, 8), method="toy", seed=0)
    >>> post.mean.shape, post.num_chains, post.num_draws
    (torch.Size([1, 8, 8]), 2, 50)
    >>> post.quantile([0.05, 0.95]).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        samples,
        *,
        z=None,
        sample_stats: Mapping[str, Any] | None = None,
        method: str | None = None,
        operator=None,
        noise_std: float | None = None,
        seed: int | None = None,
        evidence_trace=None,
        hyperparameters: Mapping[str, Any] | None = None,
        **extras,
    ):
        samples = check_tensor("samples", _as_tensor(samples), ndim=5)
        self._samples = samples
        chains, draws = samples.shape[:2]
        if chains < 1 or draws < 1 or min(samples.shape[2:]) < 1:
            raise ValueError(f"samples must have non-empty dimensions, got shape {tuple(samples.shape)}")

        if z is not None:
            z = check_tensor("z", _as_tensor(z), ndim=3)
            if tuple(z.shape[:2]) != (chains, draws):
                raise ValueError(
                    f"z must have shape (chains, draws, latent_dim) = ({chains}, {draws}, L), "
                    f"got {tuple(z.shape)}"
                )
        self.z: torch.Tensor | None = z

        if sample_stats is not None and not isinstance(sample_stats, Mapping):
            raise TypeError(f"sample_stats must be a dict, got {type(sample_stats).__name__}")
        self.sample_stats: dict[str, np.ndarray] = {
            str(k): _stat_array(str(k), v, chains, draws) for k, v in (sample_stats or {}).items()
        }

        if method is not None and not isinstance(method, str):
            raise TypeError(f"method must be a str, got {type(method).__name__}")
        self.method: str | None = method
        if operator is not None and not isinstance(operator, str):
            operator = type(operator).__name__
        self.operator: str | None = operator

        if noise_std is not None:
            if isinstance(noise_std, torch.Tensor):
                noise_std = float(noise_std)
            if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)):
                raise TypeError(f"noise_std must be a number, got {type(noise_std).__name__}")
            if not (math.isfinite(noise_std) and noise_std >= 0):
                raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
            noise_std = float(noise_std)
        self.noise_std: float | None = noise_std

        if seed is not None:
            check_int("seed", seed)
        self.seed: int | None = seed

        if evidence_trace is not None:
            if isinstance(evidence_trace, torch.Tensor):
                evidence_trace = evidence_trace.detach().cpu().numpy()
            evidence_trace = np.asarray(evidence_trace, dtype=np.float64)
            if evidence_trace.ndim != 1:
                raise ValueError(
                    f"evidence_trace must be 1-D (iterations,), got shape {evidence_trace.shape}"
                )
            if not np.isfinite(evidence_trace).all():
                raise ValueError("evidence_trace contains NaN or inf entries")
        self.evidence_trace: np.ndarray | None = evidence_trace

        if hyperparameters is not None and not isinstance(hyperparameters, Mapping):
            raise TypeError(f"hyperparameters must be a dict, got {type(hyperparameters).__name__}")
        self.hyperparameters: dict[str, Any] = dict(hyperparameters or {})
        self.extras: dict[str, Any] = dict(extras)

    @classmethod
    def from_flat(cls, samples, num_chains: int = 1, **kwargs) -> "Posterior":
        """Build from independent draws ``(S, C, H, W)`` split into ``num_chains`` chains.

        ``S`` must be divisible by ``num_chains``; draws ``k * S/num_chains ...``
        form chain ``k``.
        """
        samples = check_tensor("samples", _as_tensor(samples), ndim=4)
        check_int("num_chains", num_chains, minimum=1)
        s = samples.shape[0]
        if s % num_chains:
            raise ValueError(f"samples count {s} must be divisible by num_chains={num_chains}")
        return cls(samples.reshape(num_chains, s // num_chains, *samples.shape[1:]), **kwargs)

    # ------------------------------------------------------------ properties
    @property
    def samples(self) -> torch.Tensor:
        """Samples, shape ``(chains, draws, C, H, W)``."""
        return self._samples

    @property
    def num_chains(self) -> int:
        return int(self._samples.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self._samples.shape[1])

    @property
    def num_samples(self) -> int:
        """Total number of samples, ``chains * draws``."""
        return self.num_chains * self.num_draws

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(int(s) for s in self._samples.shape[2:])

    @property
    def flat_samples(self) -> torch.Tensor:
        """Samples with chains merged, shape ``(chains * draws, C, H, W)``."""
        return self._samples.reshape(-1, *self._samples.shape[2:])

    @property
    def mean(self) -> torch.Tensor:
        """Posterior mean, shape ``(C, H, W)``: one image, no batch axis.

        A posterior describes one image, so its summaries have no batch axis;
        ``post.mean[None]`` is the batch form ``(1, C, H, W)`` that operators
        and ``metrics`` batches take.
        """
        return self.flat_samples.mean(dim=0)

    @property
    def std(self) -> torch.Tensor:
        """Posterior standard deviation (``ddof=1``), shape ``(C, H, W)`` (``std[None]``: batch form).

        Raises ``ValueError`` when there is only one sample in total.
        """
        if self.num_samples < 2:
            raise ValueError(
                "samples must hold at least 2 draws in total for a standard deviation, "
                f"got shape {tuple(self._samples.shape)}"
            )
        return self.flat_samples.std(dim=0, unbiased=True)

    def quantile(self, q) -> torch.Tensor:
        """Pixelwise sample quantiles (linear interpolation, as ``numpy.quantile``).

        Parameters
        ----------
        q : float or sequence of float in [0, 1]

        Returns
        -------
        torch.Tensor
            ``(C, H, W)`` for a scalar ``q``, else ``(len(q), C, H, W)``.
        """
        scalar = isinstance(q, (int, float)) and not isinstance(q, bool)
        qs = torch.as_tensor([q] if scalar else list(q), dtype=torch.float64)
        if qs.dim() != 1 or qs.numel() == 0:
            raise ValueError(f"q must be a float or a non-empty 1-D sequence, got {q!r}")
        if not bool(((qs >= 0) & (qs <= 1)).all()):
            raise ValueError(f"q must lie in [0, 1], got {qs.tolist()}")
        flat = self.flat_samples
        sorted_flat = flat.sort(dim=0).values
        out = _sorted_quantile(sorted_flat, qs.to(flat.device))
        return out[0] if scalar else out

    # ------------------------------------------------------------------ export
    def to_arviz(self, truth=None, y=None, name: str = "x", *, op=None, noise_std=None,
                 predictive: bool = False, max_measurements: int | None = None, seed: int = 0):
        """Export to ``arviz.InferenceData``; see ``bayes_recon.diagnostics.to_arviz``.

        ``truth`` is ``(C, H, W)``, ``(1, C, H, W)`` or, for one channel, ``(H, W)``.

        ``max_measurements=None`` means that function's default (4096 real entries).
        """
        from .diagnostics.arviz_export import to_arviz  # lazy: diagnostics is a layer above

        extra = {} if max_measurements is None else {"max_measurements": max_measurements}
        return to_arviz(self, truth=truth, y=y, name=name, op=op, noise_std=noise_std,
                        predictive=predictive, seed=seed, **extra)

    def __repr__(self) -> str:
        parts = [f"chains={self.num_chains}", f"draws={self.num_draws}", f"image_shape={self.image_shape}"]
        if self.method is not None:
            parts.append(f"method={self.method!r}")
        if self.z is not None:
            parts.append(f"latent_dim={self.z.shape[-1]}")
        if self.noise_std is not None:
            parts.append(f"noise_std={self.noise_std:.4g}")
        return f"Posterior({', '.join(parts)})"
