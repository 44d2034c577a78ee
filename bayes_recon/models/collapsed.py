"""The collapsed Pyro program ``z → y``: the image ``x`` marginalised exactly.

For a SUPN prior ``x | z ~ N(μ(z), Λ(z)⁻¹)`` and ``y = A x + N(0, σ² I)``,

    p(y | z) = N(y; A μ(z), A Λ(z)⁻¹ Aᵀ + σ² I),

evaluated without forming the ``m × m`` covariance (determinant lemma and
Woodbury on the sparse factor, :mod:`bayes_recon.models.marginal`).
:func:`collapsed_model` is an ordinary Pyro program with one latent site ``z``
and one observed site ``y`` whose distribution is :class:`CollapsedMarginal`,
so ``pyro.infer.NUTS(collapsed_model)``, ``SVI`` with an autoguide and
``Predictive`` all run on it unchanged. With ``sample_x=True`` it also records
a site ``x`` holding one exact draw of ``x | z, y``
(:class:`~bayes_recon.models.exact_conditional.GaussianImagePosterior`, from
the global generators that Pyro seeds): ask ``Predictive`` for it with
``return_sites=["x"]``; leave it off for inference (each draw costs a solve and
consumes random numbers).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from .._validation import check_positive
from .exact_conditional import GaussianImagePosterior, XSolverConfig
from .marginal import SLQConfig, choose_evidence_method, collapsed_log_likelihood, decode64
from .program import check_reconstruction_inputs, real_view

__all__ = ["CollapsedMarginal", "collapsed_model"]


class CollapsedMarginal(TorchDistribution):
    """``p(y | z) = N(A μ(z), A Λ(z)⁻¹ Aᵀ + σ² I)`` over the real view of ``y``.

    Parameters
    ----------
    z : torch.Tensor
        ``(*batch, d)`` latents; ``batch_shape`` is ``z.shape[:-1]``.
    op : LinearOperator
    prior : SUPNVAE
        Decoded by its own network, then cast to float64.
    noise_std : float
        σ > 0.
    method : {"auto", "dense", "slq"}
        Dense float64 Cholesky of ``P = Λ + AᵀA/σ²`` or stochastic Lanczos
        quadrature (see :func:`~bayes_recon.models.marginal.collapsed_log_likelihood`).
    slq : SLQConfig, optional

    Notes
    -----
    ``event_shape`` is ``op.range_shape`` for real measurements and
    ``(*op.range_shape, 2)`` (real and imaginary parts, as
    ``torch.view_as_real``) for complex ones, matching
    :func:`~bayes_recon.models.reconstruction_model`. ``log_prob`` returns
    float64 and is differentiable in ``z``; ``sample`` is ancestral
    (``x ~ p(x | z)``, then ``y = A x + σ ε``), an exact draw of the marginal.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models import SUPNVAE
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=6, latent_dim=2, widths=(4,), radius=1)
    >>> d = CollapsedMarginal(torch.zeros(1, 2), Identity((1, 6, 6)), vae, 0.1)
    >>> d.batch_shape, d.event_shape, d.log_prob(torch.zeros(1, 1, 6, 6)).shape
    (torch.Size([1]), torch.Size([1, 6, 6]), torch.Size([1]))
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, z: torch.Tensor, op, prior, noise_std: float, method: str = "auto",
                 slq: SLQConfig | None = None, validate_args=None):
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != prior.config.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (*batch, {prior.config.latent_dim}), got {got}")
        self.z, self.op, self.prior = z, op, prior
        self.noise_std = check_positive("noise_std", noise_std)
        self.method = choose_evidence_method(method, op.domain_size)
        self.slq = SLQConfig() if slq is None else slq
        event = tuple(op.range_shape) + ((2,) if op.complex_range else ())
        super().__init__(z.shape[:-1], torch.Size(event), validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        z = self.z.expand(*batch_shape, self.z.shape[-1])
        return CollapsedMarginal(z, self.op, self.prior, self.noise_std, self.method, self.slq)

    def _complex(self, value: torch.Tensor) -> torch.Tensor:
        return torch.view_as_complex(value.contiguous()) if self.op.complex_range else value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(y | z)`` for ``value`` ``(*batch, *event_shape)`` (broadcast): float64 ``(*batch,)``."""
        shape = torch.broadcast_shapes(value.shape[: value.dim() - len(self.event_shape)], self.batch_shape)
        d = self.z.shape[-1]
        z = self.z.expand(*shape, d).reshape(-1, d)
        y = self._complex(value.expand(*shape, *self.event_shape).reshape(-1, *self.event_shape))
        out = collapsed_log_likelihood(z, y, self.op, self.prior, self.noise_std, self.method, self.slq)
        return out.reshape(shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Ancestral draws ``(*sample_shape, *batch, *event_shape)`` in the prior's dtype."""
        shape = torch.Size(sample_shape) + self.batch_shape
        d = self.z.shape[-1]
        with torch.no_grad():
            z = self.z.expand(*shape, d).reshape(-1, d)
            x = self.prior.decode(z.to(next(self.prior.parameters()).dtype)).sample()
            clean = real_view(self.op(x))
            y = clean + self.noise_std * torch.randn_like(clean)
        return y.reshape(*shape, *self.event_shape)


def collapsed_model(y: torch.Tensor, op, prior, noise_std: float, temperature: float = 1.0,
                    method: str = "auto", slq: SLQConfig | None = None, sample_x: bool = False,
                    x_solver: XSolverConfig | None = None) -> torch.Tensor:
    """The program ``z ~ N(0, T² I)`` → ``y ~ p(y | z)`` with ``x`` marginalised exactly.

    The same posterior over ``z`` as :func:`~bayes_recon.models.reconstruction_model`,
    with the image integrated out: ``p(y | z) = N(A μ(z), A Λ(z)⁻¹ Aᵀ + σ² I)``
    (:class:`CollapsedMarginal`).

    Parameters
    ----------
    y : torch.Tensor
        ``(B, *op.range_shape)``, observed (real or complex as the operator).
    op : LinearOperator
    prior : SUPNVAE
    noise_std : float
        σ > 0.
    temperature : float
        Latent prior scale ``T``.
    method : {"auto", "dense", "slq"}
        Collapsed-likelihood path.
    slq : SLQConfig, optional
    sample_x : bool
        Also record ``x`` ``(B, *op.domain_shape)``: one exact draw of
        ``x | z, y`` per call (for ``Predictive(..., return_sites=["x"])``).
    x_solver : XSolverConfig, optional
        How that draw is solved.

    Returns
    -------
    torch.Tensor
        ``z`` ``(B, latent_dim)``.

    Examples
    --------
    >>> import pyro, torch
    >>> from pyro.infer import MCMC, NUTS, Predictive
    >>> from bayes_recon.models import SUPNVAE, collapsed_model
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=4, latent_dim=2, widths=(4,), radius=1).double()
    >>> y, op = torch.zeros(1, 1, 4, 4, dtype=torch.float64), Identity((1, 4, 4))
    >>> pyro.set_rng_seed(0)
    >>> mcmc = MCMC(NUTS(collapsed_model), num_samples=5, warmup_steps=5, disable_progbar=True)
    >>> mcmc.run(y, op, vae, 0.1)
    >>> z = mcmc.get_samples()["z"]
    >>> z.shape
    torch.Size([5, 1, 2])
    >>> pred = Predictive(collapsed_model, {"z": z}, return_sites=["x"])
    >>> pred(y, op, vae, 0.1, sample_x=True)["x"].shape
    torch.Size([5, 1, 1, 4, 4])
    """
    sigma = check_reconstruction_inputs(y, op, prior, noise_std)
    temperature = check_positive("temperature", temperature)
    y_real = real_view(y)
    with pyro.plate("measurements", y.shape[0]):
        zero = y_real.new_zeros(y.shape[0], prior.config.latent_dim)
        z = pyro.sample("z", dist.Normal(zero, temperature).to_event(1))
        pyro.sample("y", CollapsedMarginal(z, op, prior, sigma, method, slq), obs=y_real)
        if sample_x:
            with torch.no_grad():
                post = GaussianImagePosterior(decode64(prior, z), y, op, sigma, x_solver)
                x = post.sample(1)[0].to(y_real.dtype)  # global generators: Pyro's seed applies
            pyro.deterministic("x", x, event_dim=len(op.domain_shape))
    return z
