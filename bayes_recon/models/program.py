"""The Pyro program ``z → x → y`` that every SUPN inference method runs on."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .._validation import check_positive, check_tensor
from ..operators.base import LinearOperator


def real_view(t: torch.Tensor) -> torch.Tensor:
    """Complex ``(..., m)`` as real ``(..., m, 2)``; real tensors unchanged."""
    return torch.view_as_real(t) if t.is_complex() else t


def squared_residual(y: torch.Tensor, op: LinearOperator, x: torch.Tensor) -> torch.Tensor:
    """``‖y − A x‖²`` per measurement ``(B,)``; complex entries count ``|·|²`` (cast ``y`` first).

    The one data misfit of the SUPN programs (collapsed evidence, MAP objectives,
    the diffusion and hierarchical samplers' residual records).
    """
    r = y - op(x)
    return (r.abs().square() if r.is_complex() else r.square()).flatten(1).sum(1)


def check_measurement(y, op, image_shape) -> None:
    """Check ``op`` acts on images ``image_shape`` and ``y`` is its (real/complex) measurement."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a bayes_recon LinearOperator, got {type(op).__name__}")
    if tuple(op.domain_shape) != tuple(image_shape):
        raise ValueError(
            f"prior image shape {tuple(image_shape)} does not match the operator's domain_shape "
            f"{tuple(op.domain_shape)}"
        )
    check_tensor("y", y, shape=(None, *op.range_shape), allow_complex=op.complex_range)
    if y.is_complex() != op.complex_range:
        kind = "complex" if op.complex_range else "real"
        raise TypeError(f"y must be {kind} for {type(op).__name__}, got dtype {y.dtype}")


def check_reconstruction_inputs(y, op, prior, noise_std) -> float:
    """Validate the arguments shared by the program and every inference method."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a bayes_recon LinearOperator, got {type(op).__name__}")
    if not hasattr(prior, "decode") or not hasattr(prior, "config"):
        raise TypeError(f"prior must be a generative prior with decode(z), got {type(prior).__name__}")
    if not hasattr(prior.config, "latent_dim"):  # e.g. a HierarchicalVAE: groups, not one z
        raise TypeError(f"prior must have a single latent vector (a SUPN prior), got a "
                        f"{type(prior).__name__}; hierarchical VAEs run with method "
                        "'pnp-hvae', 'hvae-adam' or 'hvae-svi'")
    check_measurement(y, op, (prior.config.channels, prior.config.image_size,
                              prior.config.image_size))
    return check_positive("noise_std", noise_std)


def reconstruction_model(y: torch.Tensor, op: LinearOperator, prior, noise_std: float,
                         temperature: float = 1.0) -> torch.Tensor:
    """Generative program of a linear inverse problem with a learned prior.

    ``z ~ N(0, temperature² I)`` → ``x ~ prior.decode(z)`` → ``y ~ N(A x, σ² I)``
    (real and imaginary parts independently for complex ``y``), over a plate of
    ``B`` measurements.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, *op.range_shape)``; observed.
    op : LinearOperator
    prior : SUPNVAE or any model with ``decode(z)`` returning an image distribution
    noise_std : float
        σ > 0.
    temperature : float
        Scale of the latent prior (< 1 sharpens it, PnP-HVAE style).

    Returns
    -------
    torch.Tensor
        The sampled image ``x`` of shape ``(B, *op.domain_shape)``.

    Examples
    --------
    >>> import pyro, torch
    >>> from bayes_recon.models import SUPNVAE, reconstruction_model
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=8, latent_dim=2, widths=(4,), radius=1)
    >>> tr = pyro.poutine.trace(reconstruction_model).get_trace(
    ...     torch.zeros(1, 1, 8, 8), Identity((1, 8, 8)), vae, 0.1)
    >>> [n for n in tr.nodes if n in ("z", "x", "y")]
    ['z', 'x', 'y']
    """
    sigma = check_reconstruction_inputs(y, op, prior, noise_std)
    temperature = check_positive("temperature", temperature)
    latent_dim = prior.config.latent_dim
    y_real = real_view(y)
    extra = y_real.dim() - 1
    with pyro.plate("measurements", y.shape[0]):
        zero = y_real.new_zeros(y.shape[0], latent_dim)
        z = pyro.sample("z", dist.Normal(zero, temperature).to_event(1))
        x = pyro.sample("x", prior.decode(z))
        mean = real_view(op(x))
        pyro.sample("y", dist.Normal(mean, sigma).to_event(extra), obs=y_real)
    return x
