"""Settings and results of the linearised Laplace model (dataclasses and their checks, no numerics)."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from ..._validation import check_choice, check_int, check_positive

__all__ = ["LaplaceConfig", "EvidenceResult", "EvidenceConvergenceWarning", "AdjointMismatchWarning",
           "NumericalRecord", "LOG_LENGTHSCALE_BOUNDS", "check_lengthscale"]

#: Open interval of ``log ℓ_b`` (filter pixel units). Outside it the 9x9 filter
#: covariances are numerically the identity (ℓ → 0) or rank one (ℓ → ∞).
LOG_LENGTHSCALE_BOUNDS = (-4.0, 4.0)


class AdjointMismatchWarning(RuntimeWarning):
    """The operator's adjoint is not the exact transpose of its forward (the measured error is in the message)."""


class EvidenceConvergenceWarning(RuntimeWarning):
    """The evidence optimisation stopped without meeting its tolerance (the reason is in the message)."""


@dataclass
class LaplaceConfig:
    """Settings of :class:`LinearisedLaplace`.

    Attributes
    ----------
    path : {"auto", "exact", "subspace", "scalable"}
        ``"auto"``: the fastest path whose estimated peak memory fits
        ``memory_budget`` (see :mod:`.resources`); exact also needs
        ``N · P <= max_dense_entries``. ``"subspace"``: the exact machinery on
        the leading rank-``subspace_rank`` range of ``J`` (:mod:`.subspace`);
        ``"scalable"``: matrix-free ``J`` with CG/SLQ.
    include_1x1 : bool
        Also linearise the 1x1 convs (iid normal prior per block).
    expansion : {"fit", "linearised"}
        ``"fit"`` (default; measured better calibrated on held-out digits, see
        docs/scaling.md) or ``"linearised"``: MacKay evidence at ``θ*`` and the Laplace posterior centred at
        ``x*``. ``"linearised"``: the exact evidence and posterior of the
        linear model ``x = x* + J (θ - θ*)``, ``θ ~ N(0, Σ_θ)``
        (``log N(y - A x* + A J θ*; 0, K_yy)``; posterior mean
        ``x* - J θ* + K Aᵀ K_yy⁻¹ (y - A x* + A J θ*)``).
    init_lengthscale : float
        Initial ``ℓ_b`` (filter pixel units), inside
        ``exp(LOG_LENGTHSCALE_BOUNDS)`` (open interval).
    init_variance : float or None
        Initial ``σ_b²``; None uses the mean squared fitted weight of the block.
    max_dense_entries : int
    jacobian_chunk : int
        Vectors per vmapped Jacobian batch (16: fastest measured at 64² and 128² on a CPU).
    num_probes, cg_tolerance, max_cg_iterations, lanczos_iterations, preconditioner_rank, probe_seed
        Scalable path: Hutchinson probes, CG tolerance/iterations, Lanczos
        quadrature steps, Nyström rank, seed of the fixed probes and sketch.
    predcp_samples, predcp_seed : int
        Fixed probes of the TV-PredCP expectation.
    predcp_normalisation : {"sum", "mean"}
        What the TV-PredCP's exponential prior (rate ``κ``) is put on: ``"sum"``
        (default, as before) the expected TV of a block's prior draws summed over
        the ``N = C·H·W`` pixels, so the same ``κ`` is about ``N`` times stronger
        per pixel on a larger image (21x from 28² to 128²); ``"mean"`` the
        expected TV per pixel ``E_b / N``, so ``κ`` means the same at every size.
        ``κ_mean = κ_sum · N`` gives the same prior at one size: the default
        ``κ = 20`` at 28² (``N = 784``) is ``κ = 20 · 784 = 15680`` with ``"mean"``.
    min_log_variance : float or None
        Floor on each block's ``log σ_b²`` (None: no floor, as before). The
        evidence is evaluated at ``max(log σ_b², floor)`` on every path, so
        L-BFGS sees a function that is flat below the floor, and EM clamps its
        update to it; blocks that end on the floor are listed in
        ``EvidenceResult.floored_blocks`` and ``hyperparameters["floored_blocks"]``.
        Without it the evidence can switch blocks off (``σ_b² < 1e-7`` seen with
        EM at 28²), which removes their directions from the posterior altogether.
    hyperparameter_method : {"auto", "lbfgs", "em"}
        ``"lbfgs"``: L-BFGS on the (deterministic) evidence; ``"em"``: sample-based
        EM with MacKay updates (``expansion="linearised"`` only); ``"auto"``: EM on
        the scalable path, L-BFGS on the exact one.
    em_iterations, em_samples : int
        EM iterations (maximum) and Matheron probe samples per E-step.
    em_tolerance : float
        EM stops when every log-hyperparameter moved less than this in one iteration
        (twice in a row).
    em_lengthscale_step : float
        Largest change of a ``log ℓ_b`` per EM iteration.
    g_prior : bool
        Scale the Jacobian's columns by ``(d_i / mean_b d)^{-1/2}``, ``d_i =
        ‖(A J)_{:, i}‖²`` (estimated with ``g_prior_probes`` Gaussian probes), so that
        each weight of group ``b`` has the same data-space scale (Antorán et al. 2023).
    g_prior_probes : int
    subspace_rank : int
        ``r`` of the subspace path (clipped to ``N``): ``2 r`` network products and
        ``r x r`` linear algebra. 1024 leaves ~5e-5 of the prior variance of the
        default U-Net at 64² (docs/scaling.md).
    subspace_power_iterations : int
        Subspace iterations of the range finder (``2 r`` products each).
    subspace_test_probes : int
        Fresh prior draws that estimate the missed prior variance.
    subspace_tolerance : float
        Missed fraction above which :class:`~.subspace.SubspaceTruncationWarning` is warned.
    memory_budget : float or None
        Bytes the path may use; None: half of the currently available memory.
    sample_batch_size : int
        Matheron samples per CG batch.
    adjoint_tolerance : float
        Largest ``adjointness_error(op)`` (relative, measured on three random
        pairs) accepted as an exact adjoint.
    adjoint_mismatch : {"raise", "warn"}
        What a larger error does: ``"raise"`` (default) a ``ValueError``;
        ``"warn"`` an :class:`AdjointMismatchWarning` with the measured error,
        which is kept in ``LinearisedLaplace.adjointness_error`` and the
        posterior's ``extras`` — for unmatched projector pairs (e.g. a
        ray-driven forward and a pixel-driven back projector), whose evidence
        and posterior are then those of the model with ``Aᵀ`` replaced by the
        given back-projector, not exact.
    """

    path: str = "auto"
    include_1x1: bool = False
    expansion: str = "fit"
    init_lengthscale: float = 1.0
    init_variance: float | None = None
    max_dense_entries: int = 150_000_000
    jacobian_chunk: int = 16
    num_probes: int = 32
    cg_tolerance: float = 1e-4
    max_cg_iterations: int = 1000
    lanczos_iterations: int = 100
    preconditioner_rank: int = 64
    probe_seed: int = 0
    predcp_samples: int = 32
    predcp_seed: int = 0
    predcp_normalisation: str = "sum"
    min_log_variance: float | None = None
    hyperparameter_method: str = "auto"
    em_iterations: int = 40
    em_samples: int = 32
    em_tolerance: float = 0.02
    em_lengthscale_step: float = 0.5
    g_prior: bool = False
    g_prior_probes: int = 64
    subspace_rank: int = 1024
    subspace_power_iterations: int = 0
    subspace_test_probes: int = 16
    subspace_tolerance: float = 1e-3
    memory_budget: float | None = None
    sample_batch_size: int = 64
    adjoint_tolerance: float = 1e-6
    adjoint_mismatch: str = "raise"


# Jitter is reported in CholeskyJitterWarning's text ("added jitter <value>").
_JITTER_MESSAGE = re.compile(r"added jitter ([-+0-9.eE]+)")
# linear_operator reports CG trouble only through this warning text (no public result object).
_CG_MESSAGE = re.compile(r"CG terminated in (\d+) iterations with average residual norm\s*"
                         r"(?:tensor\()?\s*([-+0-9.eE]+|nan|inf)")


def _worse(a, b):
    """The larger of two optional numbers; NaN counts as the largest."""
    if a is None or b is None:
        return b if a is None else a
    if not math.isfinite(b) or not math.isfinite(a):
        return b if not math.isfinite(b) and not (a != a) else a
    return max(a, b)


@dataclass
class NumericalRecord:
    """Numerical trouble met by the linear algebra of some evaluations (all zero: none).

    Attributes
    ----------
    evaluations : int
        Evidence evaluations or sampling runs covered.
    warning_count : int
        Numerical warnings (``RuntimeWarning`` subclasses, e.g. linear_operator's
        ``NumericalWarning``, ``CholeskyJitterWarning``) caught and re-emitted.
    warnings : list of str
        ``"Category: message"`` of the first 20 of them.
    cg_converged : bool
        False if any conjugate-gradient solve stopped short of its tolerance.
    cg_failures : int
        How many solves stopped short.
    cg_iterations : int or None
        Largest iteration count among the solves that reported one.
    cg_residual : float or None
        Largest (relative) residual norm reported.
    max_jitter : float
        Largest absolute diagonal jitter a Cholesky factorisation needed (0: none).
    """

    evaluations: int = 0
    warning_count: int = 0
    warnings: list = field(default_factory=list)
    cg_converged: bool = True
    cg_failures: int = 0
    cg_iterations: int | None = None
    cg_residual: float | None = None
    max_jitter: float = 0.0

    @property
    def converged(self) -> bool:
        """Every solve met its tolerance."""
        return self.cg_converged

    def add_warning(self, message: warnings.WarningMessage) -> None:
        """Record one caught warning; CG warnings of linear_operator also set the CG fields."""
        text = str(message.message)
        self.warning_count += 1
        if len(self.warnings) < 20:
            self.warnings.append(f"{message.category.__name__}: {text}")
        hit = _CG_MESSAGE.search(text)
        if hit:
            self.add_cg(False, int(hit.group(1)), float(hit.group(2)))
        jit = _JITTER_MESSAGE.search(text)
        if jit:
            self.add_jitter(float(jit.group(1)))

    def add_cg(self, converged: bool, iterations: int | None = None, residual: float | None = None) -> None:
        """Record one CG solve (``converged``, iterations used, relative residual)."""
        if not converged:
            self.cg_converged = False
            self.cg_failures += 1
        self.cg_iterations = _worse(self.cg_iterations, None if iterations is None else int(iterations))
        self.cg_residual = _worse(self.cg_residual, None if residual is None else float(residual))

    def add_jitter(self, jitter: float) -> None:
        self.max_jitter = max(self.max_jitter, float(jitter))

    def merge(self, other: "NumericalRecord") -> None:
        """Fold ``other`` into this record."""
        self.evaluations += other.evaluations
        self.warning_count += other.warning_count
        self.warnings.extend(other.warnings[: max(0, 20 - len(self.warnings))])
        self.cg_failures += other.cg_failures
        self.cg_converged = self.cg_converged and other.cg_converged
        self.cg_iterations = _worse(self.cg_iterations, other.cg_iterations)
        self.cg_residual = _worse(self.cg_residual, other.cg_residual)
        self.max_jitter = max(self.max_jitter, other.max_jitter)

    def to_dict(self) -> dict:
        """Plain-Python copy (JSON-serialisable), with ``converged``."""
        return {**asdict(self), "converged": self.converged}


@dataclass
class EvidenceResult:
    """Outcome of :meth:`LinearisedLaplace.optimise_evidence`.

    Attributes
    ----------
    trace : numpy.ndarray
        ``(evaluations,)`` objective (log evidence, plus the log PredCP prior when
        used) at every function evaluation.
    log_evidence : float
        Evidence at the final hyperparameters.
    objective : float
        Objective at the final hyperparameters.
    iterations, evaluations : int
        Accepted L-BFGS steps and objective evaluations (counted here).
    converged : bool
        ``optimiser_converged`` and ``numerics.converged``.
    seconds : float
    hyperparameters : dict
    optimiser_converged : bool
        The gradient or change tolerance was met (not a budget or a stalled line search).
    stop_reason : str
        Why the optimiser stopped.
    gradient_max : float
        ``max |∂(-objective / m)/∂φ|`` at the final point (the ``tolerance_grad`` scaling;
        lengthscales in their unconstrained parameterisation).
    numerics : NumericalRecord
        CG/Lanczos warnings and Cholesky jitter over all evaluations.
    history : list of dict
        EM only: per iteration the largest log-hyperparameter change (``step``), the
        estimated effective dimension ``gamma`` and the hyperparameters.
    min_log_variance : float or None
        ``config.min_log_variance`` of the fit.
    floored_blocks : list of str
        Blocks whose fitted ``log σ_b²`` is on the floor (the floor was active;
        empty without a floor).
    """

    trace: np.ndarray
    log_evidence: float
    objective: float
    iterations: int
    evaluations: int
    converged: bool
    seconds: float
    hyperparameters: dict = field(default_factory=dict)
    optimiser_converged: bool = True
    stop_reason: str = ""
    gradient_max: float = float("nan")
    numerics: NumericalRecord = field(default_factory=NumericalRecord)
    history: list = field(default_factory=list)
    min_log_variance: float | None = None
    floored_blocks: list = field(default_factory=list)


def check_lengthscale(name: str, value: float) -> None:
    """``ValueError`` naming ``name`` unless ``log value`` is inside ``LOG_LENGTHSCALE_BOUNDS``."""
    lo, hi = LOG_LENGTHSCALE_BOUNDS
    if not lo < math.log(value) < hi:
        raise ValueError(f"{name} must lie in (exp({lo:g}), exp({hi:g})) = ({math.exp(lo):.4g}, "
                         f"{math.exp(hi):.4g}) filter pixels, got {value:g}")


def _check_config(cfg: LaplaceConfig) -> None:
    check_choice("config.path", cfg.path, ("auto", "exact", "subspace", "scalable"))
    check_choice("config.expansion", cfg.expansion, ("fit", "linearised"))
    check_choice("config.hyperparameter_method", cfg.hyperparameter_method, ("auto", "lbfgs", "em"))
    check_positive("config.init_lengthscale", cfg.init_lengthscale)
    check_lengthscale("config.init_lengthscale", cfg.init_lengthscale)
    if cfg.init_variance is not None:
        check_positive("config.init_variance", cfg.init_variance)
    if cfg.memory_budget is not None:
        check_positive("config.memory_budget", cfg.memory_budget)
    for name in ("max_cg_iterations", "lanczos_iterations", "em_iterations", "em_samples",
                 "sample_batch_size", "g_prior_probes", "jacobian_chunk", "subspace_rank"):
        check_int(f"config.{name}", getattr(cfg, name), minimum=1)
    check_int("config.subspace_power_iterations", cfg.subspace_power_iterations, minimum=0)
    check_int("config.subspace_test_probes", cfg.subspace_test_probes, minimum=0)
    check_positive("config.subspace_tolerance", cfg.subspace_tolerance)
    check_positive("config.em_tolerance", cfg.em_tolerance)
    check_positive("config.em_lengthscale_step", cfg.em_lengthscale_step)
    check_choice("config.predcp_normalisation", cfg.predcp_normalisation, ("sum", "mean"))
    check_choice("config.adjoint_mismatch", cfg.adjoint_mismatch, ("raise", "warn"))
    if cfg.min_log_variance is not None:
        if isinstance(cfg.min_log_variance, bool) or not isinstance(cfg.min_log_variance, (int, float)):
            raise TypeError(f"config.min_log_variance must be a float or None, got "
                            f"{type(cfg.min_log_variance).__name__}")
        if not math.isfinite(cfg.min_log_variance):
            raise ValueError(f"config.min_log_variance must be finite (a log variance) or None, got "
                             f"{cfg.min_log_variance}")
    if cfg.lanczos_iterations > cfg.max_cg_iterations:
        # linear_operator builds the Lanczos tridiagonal matrices from the CG iterations.
        raise ValueError(f"config.lanczos_iterations must be <= config.max_cg_iterations = "
                         f"{cfg.max_cg_iterations}, got {cfg.lanczos_iterations}")
