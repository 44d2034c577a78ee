"""Pyro programs of a linear inverse problem with a hierarchical VAE prior.

``hierarchical_model``: sites ``z_1 … z_L`` (top-down, each conditioned on the
groups above through the decoder) → ``x`` → observed ``y``.
``hierarchical_collapsed_model``: the same latents with ``x`` marginalised
exactly, ``y | z ~ N(A μ(z), A D(z)⁻¹ Aᵀ + σ² I)`` (the decoder is a diagonal
Gaussian, so this is the SUPN collapsed likelihood with radius 0); with
``sample_x=True`` it also records one exact draw of ``x | z, y``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from .._validation import check_positive
from .exact_conditional import GaussianImagePosterior, XSolverConfig
from .hvae import HierarchicalVAE, _per_group
from .marginal import SLQConfig, choose_evidence_method, marginal_log_likelihood
from .program import check_measurement, real_view

__all__ = ["hierarchical_model", "hierarchical_collapsed_model", "ImageMarginal",
           "check_hvae_inputs", "latent_site_names"]


def check_hvae_inputs(y, op, prior, noise_std) -> float:
    """Validate ``(y, op, prior, σ)``: the operator's images must tile for the prior."""
    if not isinstance(prior, HierarchicalVAE):
        raise TypeError(f"prior must be a HierarchicalVAE, got {type(prior).__name__}")
    shape = prior.check_image_shape(getattr(op, "domain_shape", ()), "op.domain_shape")
    check_measurement(y, op, shape)
    return check_positive("noise_std", noise_std)


def latent_site_names(prior: HierarchicalVAE) -> list[str]:
    """``["z_1", …, "z_L"]``, top group first."""
    return [f"z_{i + 1}" for i in range(prior.num_groups)]


def check_temperature(temperature, num_groups: int) -> list[float]:
    """A temperature τ in (0, 1], or one per group, as a list; ``ValueError`` otherwise."""
    values = _per_group("temperature", temperature, num_groups)
    bad = [t for t in values if not 0 < t <= 1]
    if bad:
        raise ValueError(f"temperature must lie in (0, 1] (one value or one per group), got {bad}")
    return values


def _latent_program(y, op, prior, noise_std, temperature, decoder_scale):
    """Checked ``(σ, real view of y, decode)``: ``decode()``, called inside the plate, samples
    the sites ``z_l ~ N(μ_p, (τ_l σ_p)²)`` top-down and returns ``p(x | z)``."""
    sigma = check_hvae_inputs(y, op, prior, noise_std)
    temps = check_temperature(temperature, prior.num_groups)
    gamma = check_positive("decoder_scale", decoder_scale)
    names = latent_site_names(prior)

    def step(i, p_loc, p_scale, q_loc, q_scale):
        return pyro.sample(names[i], dist.Normal(p_loc, temps[i] * p_scale).to_event(3))

    def decode():
        _, h = prior.top_down(y.shape[0], op.domain_shape[-2:], group_step=step)
        return prior.output(h, gamma)

    return sigma, real_view(y), decode


class ImageMarginal(TorchDistribution):
    """``p(y) = N(A μ, A Λ⁻¹ Aᵀ + σ² I)`` for a decoded image Gaussian ``N(μ, Λ⁻¹)``, over real ``y``.

    Parameters
    ----------
    image : StructuredGaussian
        Batch shape ``(B,)``.
    op : LinearOperator
    noise_std : float
    method : {"auto", "dense", "slq"}
    slq : SLQConfig, optional

    Notes
    -----
    ``event_shape`` is ``op.range_shape`` (``(*op.range_shape, 2)`` for complex
    measurements, as ``torch.view_as_real``); ``log_prob`` is float64 and
    differentiable in the image parameters; ``sample`` is ancestral.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, image, op, noise_std: float, method: str = "auto",
                 slq: SLQConfig | None = None, validate_args=None):
        self.image, self.op = image, op
        self.noise_std = check_positive("noise_std", noise_std)
        self.method = choose_evidence_method(method, op.domain_size)
        self.slq = SLQConfig() if slq is None else slq
        event = tuple(op.range_shape) + ((2,) if op.complex_range else ())
        super().__init__(image.batch_shape, torch.Size(event), validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(y)`` for ``value`` ``(B, *event_shape)``: float64 ``(B,)``."""
        if tuple(value.shape) != (*self.batch_shape, *self.event_shape):
            raise ValueError(f"value must have shape {(*self.batch_shape, *self.event_shape)}, "
                             f"got {tuple(value.shape)}")
        y = torch.view_as_complex(value.contiguous()) if self.op.complex_range else value
        return marginal_log_likelihood(self.image, y, self.op, self.noise_std, self.method, self.slq)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            x = self.image.sample(sample_shape)
            flat = x.reshape(-1, *x.shape[-3:])
            clean = real_view(self.op(flat))
            out = clean + self.noise_std * torch.randn_like(clean)
        return out.reshape(*torch.Size(sample_shape), *self.batch_shape, *self.event_shape)


def hierarchical_model(y: torch.Tensor, op, prior: HierarchicalVAE, noise_std: float,
                       temperature=1.0, decoder_scale: float = 1.0) -> torch.Tensor:
    """``z_1 → … → z_L → x → y``: the generative program of PnP-HVAE.

    ``z_l ~ N(μ_p,l(z_<l), (τ_l σ_p,l(z_<l))²)``, ``x ~ N(μ(z), (γ s(z))²)``,
    ``y ~ N(A x, σ² I)`` (real and imaginary parts independently for complex
    ``y``), over a plate of ``B`` measurements.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, *op.range_shape)``; observed.
    op : LinearOperator
        Its ``domain_shape`` must tile for the prior.
    prior : HierarchicalVAE
    noise_std : float
    temperature : float or sequence of float
        τ in (0, 1], or one per group (top first).
    decoder_scale : float
        γ > 0 multiplying the decoder's standard deviation.

    Returns
    -------
    torch.Tensor
        ``x`` ``(B, *op.domain_shape)``.

    Examples
    --------
    >>> import pyro, torch
    >>> from bayes_recon.models.hvae import HierarchicalVAE
    >>> from bayes_recon.operators import Identity
    >>> hvae = HierarchicalVAE(image_size=8, factors=(4, 2), width=8, latent_channels=2)
    >>> tr = pyro.poutine.trace(hierarchical_model).get_trace(
    ...     torch.zeros(1, 1, 8, 8), Identity((1, 8, 8)), hvae, 0.1)
    >>> [n for n in tr.nodes if n[0] in "zxy"]
    ['z_1', 'z_2', 'x', 'y']
    """
    sigma, y_real, image = _latent_program(y, op, prior, noise_std, temperature, decoder_scale)
    with pyro.plate("measurements", y.shape[0]):
        x = pyro.sample("x", image())
        mean = real_view(op(x.to(y_real.dtype)))
        pyro.sample("y", dist.Normal(mean, sigma).to_event(y_real.dim() - 1), obs=y_real)
    return x


def hierarchical_collapsed_model(y: torch.Tensor, op, prior: HierarchicalVAE, noise_std: float,
                                 temperature=1.0, decoder_scale: float = 1.0, method: str = "auto",
                                 slq: SLQConfig | None = None, sample_x: bool = False,
                                 x_solver: XSolverConfig | None = None):
    """``z_1 → … → z_L → y`` with ``x`` marginalised exactly (:class:`ImageMarginal`).

    Same latents and arguments as :func:`hierarchical_model`; ``method``/``slq``
    choose the collapsed-likelihood path; ``sample_x=True`` records a site
    ``x`` with one exact draw of ``x | z, y`` (from the global generators that
    Pyro seeds; ask ``Predictive`` for it with ``return_sites=["x"]``).

    Returns
    -------
    torch.Tensor
        The decoded mean ``μ(z)`` ``(B, *op.domain_shape)``.

    Examples
    --------
    >>> import pyro, torch
    >>> from bayes_recon.models.hvae import HierarchicalVAE
    >>> from bayes_recon.operators import Identity
    >>> hvae = HierarchicalVAE(image_size=4, factors=(2, 1), width=4, latent_channels=1)
    >>> tr = pyro.poutine.trace(hierarchical_collapsed_model).get_trace(
    ...     torch.zeros(1, 1, 4, 4), Identity((1, 4, 4)), hvae, 0.1)
    >>> tr.nodes["y"]["fn"].log_prob(tr.nodes["y"]["value"]).dtype
    torch.float64
    """
    sigma, y_real, decoded = _latent_program(y, op, prior, noise_std, temperature, decoder_scale)
    with pyro.plate("measurements", y.shape[0]):
        image = decoded()
        pyro.sample("y", ImageMarginal(image, op, sigma, method, slq), obs=y_real)
        if sample_x:
            with torch.no_grad():
                post = GaussianImagePosterior(image, y, op, sigma, x_solver)
                x = post.sample(1)[0].to(y_real.dtype)
            pyro.deterministic("x", x, event_dim=len(op.domain_shape))
    return image.loc
