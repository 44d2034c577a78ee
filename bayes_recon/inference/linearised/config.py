"""Settings and results of the linearised Laplace model (dataclasses, no logic)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LaplaceConfig", "EvidenceResult", "EvidenceConvergenceWarning"]


class EvidenceConvergenceWarning(RuntimeWarning):
    """The evidence optimisation used all its iterations without meeting its tolerance."""


@dataclass
class LaplaceConfig:
    """Settings of :class:`LinearisedLaplace`.

    Attributes
    ----------
    path : {"auto", "exact", "scalable"}
        ``"auto"`` is exact when ``N · P <= max_dense_entries``.
    include_1x1 : bool
        Also linearise the 1x1 convs (iid normal prior per block).
    expansion : {"fit", "linearised"}
        ``"fit"``: MacKay evidence at ``θ*``. ``"linearised"``: the exact
        evidence of the linear model, i.e. at the MAP weights of the
        linearised model (``log N(y - A x* + A J θ*; 0, K_yy)``).
    init_lengthscale : float
        Initial ``ℓ_b`` (filter pixel units).
    init_variance : float or None
        Initial ``σ_b²``; None uses the mean squared fitted weight of the block.
    max_dense_entries : int
    jacobian_chunk : int
        Vectors per vmapped Jacobian batch.
    num_probes, cg_tolerance, max_cg_iterations, lanczos_iterations, preconditioner_rank, probe_seed
        Scalable path: Hutchinson probes, CG tolerance/iterations, Lanczos
        quadrature steps, Nyström rank, seed of the fixed probes and sketch.
    predcp_samples, predcp_seed : int
        Fixed probes of the TV-PredCP expectation.
    """

    path: str = "auto"
    include_1x1: bool = False
    expansion: str = "fit"
    init_lengthscale: float = 1.0
    init_variance: float | None = None
    max_dense_entries: int = 150_000_000
    jacobian_chunk: int = 64
    num_probes: int = 32
    cg_tolerance: float = 1e-4
    max_cg_iterations: int = 1000
    lanczos_iterations: int = 100
    preconditioner_rank: int = 64
    probe_seed: int = 0
    predcp_samples: int = 32
    predcp_seed: int = 0


@dataclass
class EvidenceResult:
    """Outcome of :meth:`LinearisedLaplace.optimise_evidence`.

    ``trace`` is the objective (log evidence, plus the log PredCP prior when
    used) at every function evaluation; ``log_evidence`` the final evidence.
    """

    trace: np.ndarray
    log_evidence: float
    objective: float
    iterations: int
    evaluations: int
    converged: bool
    seconds: float
    hyperparameters: dict = field(default_factory=dict)
