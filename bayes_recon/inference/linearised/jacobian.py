"""The Jacobian ``J = ∂f_θ(z)/∂θ`` of a network output w.r.t. its conv filters, at ``θ*``.

Linearising ``f`` in the conv weights ``θ`` (biases and norm parameters stay
fixed at their fitted values) gives ``h(θ) = f_θ*(z) + J (θ - θ*)``. One
interface, two paths: ``dense=True`` materialises ``J`` as an ``(N, P)``
matrix (``N`` pixels, ``P`` linearised weights; small images), ``dense=False``
gives matrix-free products ``J v`` (forward mode) and ``Jᵀ u`` (reverse mode),
all through ``torch.func`` (``functional_call``, ``jvp``, ``vjp``, ``vmap``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap
from tqdm.auto import tqdm

from ...models.unet import conv_weights_by_block

__all__ = ["ParameterGroup", "linearised_groups", "NetworkJacobian", "g_prior_column_scale"]


@dataclass(frozen=True)
class ParameterGroup:
    """Conv weights sharing one set of prior hyperparameters (one block, one kernel size).

    Attributes
    ----------
    name : str
        Block name, e.g. ``"down_0"``; 1x1 groups are named ``"<block>:1x1"``.
    param_names : tuple of str
    shapes : tuple of torch.Size
        Each ``(out, in, k, k)``.
    kernel_size : int
    offset, size : int
        Position in the flat weight vector ``θ`` (``θ[offset:offset+size]``).
    """

    name: str
    param_names: tuple
    shapes: tuple
    kernel_size: int
    offset: int
    size: int

    @property
    def num_filters(self) -> int:
        return self.size // self.kernel_size**2

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


def linearised_groups(network: nn.Module, include_1x1: bool = False) -> list[ParameterGroup]:
    """The linearised weights of ``network``, grouped by block.

    Every 3x3 conv weight is linearised (one group per top-level block); with
    ``include_1x1`` also the 1x1 conv weights (groups ``"<block>:1x1"``).

    Raises
    ------
    ValueError
        The network has no 3x3 convolution.
    """
    params = dict(network.named_parameters())
    by3 = conv_weights_by_block(network, 3)
    if not by3:
        raise ValueError(f"network must contain 3x3 nn.Conv2d layers to linearise, got a "
                         f"{type(network).__name__} without any")
    spec = [(b, names, 3) for b, names in by3.items()]
    if include_1x1:
        spec += [(f"{b}:1x1", names, 1) for b, names in conv_weights_by_block(network, 1).items()]
    groups, offset = [], 0
    for name, names, k in spec:
        shapes = tuple(params[n].shape for n in names)
        size = sum(math.prod(s) for s in shapes)
        groups.append(ParameterGroup(name, tuple(names), shapes, k, offset, size))
        offset += size
    return groups


class NetworkJacobian:
    """``J`` of ``x = f_θ(z)`` (flattened to ``(N,)``) w.r.t. the flat linearised weights ``θ (P,)``.

    Parameters
    ----------
    network : torch.nn.Module
        Evaluated in eval mode (dropout off); not modified.
    input : torch.Tensor
        ``(1, C, H, W)`` network input ``z``.
    groups : list of ParameterGroup
        From :func:`linearised_groups`.
    dense : bool
        Materialise ``J`` (``(N, P)``, in the network dtype) now.
    chunk_size : int
        Vectors per vmapped batch (bounds memory).
    progress : bool
        Progress bar while materialising ``J``.

    Notes
    -----
    ``jvp(V)`` maps ``(k, P) -> (k, N)`` and ``vjp(U)`` maps ``(k, N) -> (k, P)``;
    both return the network dtype and are exact transposes of each other. After
    :meth:`set_column_scale` they are products with ``J diag(s)`` (a g-prior):
    the weights are then ``θ / s`` (:attr:`linear_theta`).
    """

    def __init__(self, network: nn.Module, input: torch.Tensor, groups: list, dense: bool = True,
                 chunk_size: int = 64, progress: bool = False):
        self.network = network.eval()
        self.groups = list(groups)
        self.input = input.detach()
        self.chunk_size = int(chunk_size)
        params = dict(network.named_parameters())
        lin = [n for g in self.groups for n in g.param_names]
        self._names = lin
        self._shapes = [params[n].shape for n in lin]
        self._fixed = {k: v.detach() for k, v in params.items() if k not in set(lin)}
        self._fixed.update({k: v.detach() for k, v in network.named_buffers()})
        self.theta = torch.cat([params[n].detach().reshape(-1) for n in lin])
        self.dtype = self.theta.dtype
        with torch.no_grad():
            self.output = self._f(self.theta)
        self.num_pixels = self.output.numel()
        self.num_params = self.theta.numel()
        self._vjp_fn = None
        self.column_scale: torch.Tensor | None = None
        self.matrix: torch.Tensor | None = None
        if dense:
            self.matrix = self._materialise(progress)

    # ----------------------------------------------------------- function
    def _unflatten(self, flat: torch.Tensor) -> dict:
        out, start = {}, 0
        for name, shape in zip(self._names, self._shapes):
            n = math.prod(shape)
            out[name] = flat[start:start + n].reshape(shape)
            start += n
        return out

    def _f(self, flat: torch.Tensor) -> torch.Tensor:
        params = {**self._fixed, **self._unflatten(flat)}
        return functional_call(self.network, params, (self.input,)).reshape(-1)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """``f_θ(z)`` flattened, ``(N,)``, for a flat weight vector ``θ (P,)``."""
        return self._f(theta)

    @property
    def linear_theta(self) -> torch.Tensor:
        """The expansion point in the coordinates of the products: ``θ* / s`` (``θ*`` without a scale)."""
        if self.column_scale is None:
            return self.theta
        return (self.theta.to(self.column_scale.dtype) / self.column_scale).to(self.dtype)

    def set_column_scale(self, scale: torch.Tensor) -> None:
        """Use ``J diag(scale)`` from now on (``scale (P,)`` positive; set once)."""
        if self.column_scale is not None:
            raise ValueError("set_column_scale was already called on this NetworkJacobian")
        if tuple(scale.shape) != (self.num_params,) or not bool((scale > 0).all()):
            raise ValueError(f"scale must be positive with shape ({self.num_params},), got "
                             f"{tuple(scale.shape)}")
        self.column_scale = scale.to(device=self.theta.device)
        if self.matrix is not None:
            self.matrix.mul_(self.column_scale.to(self.dtype))

    # ----------------------------------------------------------- products
    def _chunks(self, mat: torch.Tensor, fn) -> torch.Tensor:
        return torch.cat([fn(mat[i:i + self.chunk_size]) for i in range(0, mat.shape[0], self.chunk_size)])

    def jvp(self, tangents: torch.Tensor) -> torch.Tensor:
        """``J V``: ``(k, P) -> (k, N)`` (rows are tangents)."""
        tangents = tangents.to(self.dtype)
        if self.matrix is not None:
            return tangents @ self.matrix.T
        if self.column_scale is not None:
            tangents = tangents * self.column_scale.to(self.dtype)
        theta = self.theta

        def one(v):
            return jvp(self._f, (theta,), (v,))[1]

        return self._chunks(tangents, vmap(one))

    def vjp(self, cotangents: torch.Tensor) -> torch.Tensor:
        """``Jᵀ U``: ``(k, N) -> (k, P)`` (rows are cotangents)."""
        cotangents = cotangents.to(self.dtype)
        if self.matrix is not None:
            return cotangents @ self.matrix
        out = self._chunks(cotangents, self._batched_vjp)
        return out if self.column_scale is None else out * self.column_scale.to(self.dtype)

    def _batched_vjp(self, u: torch.Tensor) -> torch.Tensor:
        if self._vjp_fn is None:
            _, self._vjp_fn = vjp(self._f, self.theta)
        return vmap(lambda c: self._vjp_fn(c)[0])(u)

    def _materialise(self, progress: bool) -> torch.Tensor:
        n = self.num_pixels
        eye = torch.eye(n, dtype=self.dtype, device=self.theta.device)
        rows = []
        for i in tqdm(range(0, n, self.chunk_size), desc="Jacobian", disable=not progress, leave=False):
            rows.append(self._batched_vjp(eye[i:i + self.chunk_size]))
        self._vjp_fn = None  # free the saved forward graph
        return torch.cat(rows)

    def block(self, group: ParameterGroup, dtype=None) -> torch.Tensor:
        """Dense ``J_b`` of one group as ``(N, filters, k²)`` (dense path only)."""
        if self.matrix is None:
            raise ValueError("block() needs the dense Jacobian; build NetworkJacobian(dense=True)")
        j = self.matrix[:, group.slice]
        if dtype is not None:
            j = j.to(dtype)
        return j.reshape(self.num_pixels, group.num_filters, group.kernel_size**2)


def g_prior_column_scale(jac: NetworkJacobian, adjoint, num_rows: int, probes: int, seed: int) -> torch.Tensor:
    """The g-prior's column scale ``s (P,)``: ``s_i = (d_i / mean_b d)^{-1/2}``, ``d_i ≈ ‖(A J)_{:, i}‖²``.

    ``d`` is estimated from ``probes`` seeded Gaussian ``u (num_rows,)`` as the mean of
    ``(Jᵀ Aᵀ u)²``; ``adjoint`` maps rows ``(k, num_rows) -> (k, N)`` (``Aᵀ``); the mean is
    per group ``b``, so that each weight of a group has the same data-space scale.
    """
    dev = jac.theta.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    d = torch.zeros(jac.num_params, dtype=torch.float64, device=dev)
    for start in range(0, probes, jac.chunk_size):
        u = torch.randn(min(jac.chunk_size, probes - start), num_rows, generator=gen, dtype=torch.float64,
                        device=dev)
        d += jac.vjp(adjoint(u.to(jac.dtype))).to(torch.float64).pow(2).sum(0)
    d = d / probes
    scale = torch.empty_like(d)
    for g in jac.groups:
        db = d[g.slice]
        # Dead weights (zero sensitivity) keep scale 1 instead of an infinite prior.
        scale[g.slice] = (db.clamp_min(1e-12 * float(db.mean()) + 1e-300) / db.mean()).rsqrt()
    return scale
