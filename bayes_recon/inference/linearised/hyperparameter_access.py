"""Named access to the hyperparameters of :class:`~.laplace.LinearisedLaplace` (read, set, priors).

Mixed into the model class (kept apart so each module stays short).
"""

from __future__ import annotations

import math

import gpytorch
import torch

from ..._validation import check_positive
from .config import LOG_LENGTHSCALE_BOUNDS
from .gp import predcp_closure

__all__ = ["HyperparameterAccessMixin", "check_lengthscale"]


class HyperparameterAccessMixin:
    """Hyperparameters by block name; expects ``hyper``, ``likelihood``, ``prior``, ``groups``, ``y``."""

    @property
    def block_names(self) -> list[str]:
        """Names of the prior groups (``"inc"``, ``"down_0"``, ..., ``"skip_0:1x1"``)."""
        return self.prior.names

    @property
    def log_lengthscale(self) -> torch.Tensor:
        return self.hyper.log_lengthscale.detach().clone()

    @property
    def log_variance(self) -> torch.Tensor:
        return self.hyper.log_variance.detach().clone()

    @property
    def log_noise_variance(self) -> torch.Tensor:
        return self.likelihood.log_noise_variance.detach().clone()

    @property
    def lengthscale_constraint(self):
        """The registered ``gpytorch.constraints.Interval`` on ``log ℓ``."""
        return self.hyper.raw_log_lengthscale_constraint

    @property
    def raw_lengthscale(self) -> torch.Tensor:
        """Unconstrained lengthscales ``(L,)``: ``log_lengthscale = lengthscale_constraint.transform(raw)``."""
        return self.hyper.raw_log_lengthscale.detach().clone()

    @property
    def hyperparameters(self) -> dict:
        """Current ``lengthscale/<block>``, ``variance/<block>`` and ``noise_std`` as floats."""
        out = {}
        log_ls, log_var = self.log_lengthscale, self.log_variance
        for j, gi in enumerate(self.prior.matern_groups):
            out[f"lengthscale/{self.groups[gi].name}"] = float(log_ls[j].exp())
        for gi, g in enumerate(self.groups):
            out[f"variance/{g.name}"] = float(log_var[gi].exp())
        out["noise_std"] = float(self.log_noise_variance.exp().sqrt())
        return out

    def set_hyperparameters(self, lengthscale: dict | None = None, variance: dict | None = None,
                            noise_std: float | None = None) -> None:
        """Set hyperparameters by block name.

        ``ValueError`` for an unknown block, a non-positive value or a
        lengthscale outside ``exp(LOG_LENGTHSCALE_BOUNDS)`` (naming it).
        """
        log_ls, log_var = self.log_lengthscale, self.log_variance
        for name, v in (lengthscale or {}).items():
            gi = self.prior.check_block(name)
            if gi not in self.prior.matern_groups:
                raise ValueError(f"block {name!r} is a 1x1 group and has no lengthscale")
            v = check_positive(f"lengthscale[{name!r}]", v)
            check_lengthscale(f"lengthscale[{name!r}]", v)
            log_ls[self.prior.matern_groups.index(gi)] = math.log(v)
        for name, v in (variance or {}).items():
            log_var[self.prior.check_block(name)] = math.log(check_positive(f"variance[{name!r}]", v))
        self.hyper.set(log_ls, log_var)
        if noise_std is not None:
            self.likelihood.noise = torch.tensor(check_positive("noise_std", noise_std)**2, dtype=torch.float64,
                                                 device=self.y.device)

    def set_prior(self, prior: "gpytorch.priors.Prior | None", closure=predcp_closure,
                  name: str = "hyper_prior") -> None:
        """Register (or with None drop) a prior on the hyperparameter module.

        ``closure(hyper)`` gives the prior's argument (default ``cat([log ℓ, log σ²])``,
        what :class:`~.gp.TVPredCPPrior` expects). Priors enter the L-BFGS objective
        (the MLL adds every registered prior) and the EM lengthscale steps.
        """
        if name in self.hyper._priors:
            del self.hyper._priors[name]
            delattr(self.hyper, name)
        if prior is not None:
            self.hyper.register_prior(name, prior, closure)


def check_lengthscale(name: str, value: float) -> None:
    """``ValueError`` naming ``name`` unless ``log value`` is inside ``LOG_LENGTHSCALE_BOUNDS``."""
    lo, hi = LOG_LENGTHSCALE_BOUNDS
    if not lo < math.log(value) < hi:
        raise ValueError(f"{name} must lie in (exp({lo:g}), exp({hi:g})) = ({math.exp(lo):.4g}, "
                         f"{math.exp(hi):.4g}) filter pixels, got {value:g}")
