"""Export a ``Posterior`` to ``arviz.InferenceData`` (arviz 0.2x API).

Layout of the result:

* ``posterior``: the image variable (``name``, default ``"x"``) with dims
  ``(chain, draw, channel, row, col)`` and integer coords; ``z`` with dims
  ``(chain, draw, latent)`` when the method has latents.
* ``sample_stats``: the sampler statistics, ``(chain, draw)`` each. Pyro's
  ``accept_prob`` is renamed to ArviZ's ``acceptance_rate`` and ``divergent``
  to ``diverging`` so that ArviZ plots find them; other names are kept.
* ``observed_data``: the measurement ``y`` with dims ``y_dim_0, y_dim_1, ...``.
  Complex k-space is stored as two real variables ``y_real`` and ``y_imag``
  (netCDF4 has no portable complex type); the ``y_is_complex`` attribute says so.
* ``constant_data``: the truth as ``{name}_true`` with dims ``(channel, row, col)``.
* ``evidence`` (a group outside ArviZ's fixed schema, kept by netCDF): variable
  ``log_evidence`` over dim ``iteration`` when the posterior carries an
  evidence trace.
* attributes on every group: ``method``, ``operator``, ``noise_std``, ``seed``,
  ``bayes_recon_version``, ``inference_library``, ``hyperparameters`` (a JSON
  string) and scalar extras (as ``extra_<key>``); unset values are omitted
  because netCDF attributes cannot be ``None``.
"""

from __future__ import annotations

import json
import numbers

import numpy as np
import xarray as xr

from ..posterior import Posterior
from ._inputs import az, to_numpy, truth_array

__all__ = ["to_arviz", "STAT_ALIASES"]

#: Pyro-style sampler statistic names mapped to ArviZ's conventional ones.
STAT_ALIASES = {"accept_prob": "acceptance_rate", "divergent": "diverging"}

_IMAGE_DIMS = ["channel", "row", "col"]


def _jsonable(value):
    """Best-effort JSON form of a hyperparameter value (tensors/arrays become lists)."""
    arr = to_numpy(value) if not isinstance(value, (str, bool, numbers.Number)) else value
    if isinstance(arr, np.ndarray):
        return arr.tolist()
    if isinstance(arr, np.generic):
        return arr.item()
    return arr


def _attrs(posterior: Posterior, y_is_complex: bool | None) -> dict:
    from .. import __version__

    attrs = {"inference_library": "bayes_recon", "bayes_recon_version": str(__version__)}
    for key in ("method", "operator", "noise_std", "seed"):
        value = getattr(posterior, key)
        if value is not None:
            attrs[key] = value
    if posterior.hyperparameters:
        try:
            attrs["hyperparameters"] = json.dumps(
                {k: _jsonable(v) for k, v in posterior.hyperparameters.items()}
            )
        except TypeError as err:  # an object json cannot encode: say which
            raise TypeError(f"posterior.hyperparameters must be JSON-serialisable: {err}") from err
    if y_is_complex is not None:
        attrs["y_is_complex"] = int(y_is_complex)  # netCDF has no bool attributes
    for key, value in posterior.extras.items():
        # Only scalars fit netCDF attributes; larger extras stay on the Posterior.
        if isinstance(value, (str, numbers.Integral, numbers.Real)) and not isinstance(value, bool):
            attrs[f"extra_{key}"] = value
    return attrs


def to_arviz(posterior: Posterior, truth=None, y=None, name: str = "x"):
    """Export posterior samples (and optionally truth and measurement) to ArviZ.

    Parameters
    ----------
    posterior : Posterior
        Samples ``(chains, draws, C, H, W)`` and provenance.
    truth : torch.Tensor or numpy.ndarray, shape (C, H, W) or (1, C, H, W), optional
        Ground-truth image, stored in ``constant_data`` as ``{name}_true``.
    y : torch.Tensor or numpy.ndarray, optional
        Measurement of any shape, real or complex, stored in ``observed_data``.
    name : str
        Name of the image variable in the ``posterior`` group.

    Returns
    -------
    arviz.InferenceData
        See the module docstring for the groups, dims and attributes.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.posterior import Posterior
    >>> from bayes_recon.diagnostics import to_arviz
    >>> post = Posterior(torch.randn(2, 20, 1, 4, 4), method="toy", seed=1)
    >>> idata = to_arviz(post, truth=torch.zeros(1, 4, 4), y=torch.randn(4, 4))
    >>> idata.posterior["x"].dims
    ('chain', 'draw', 'channel', 'row', 'col')
    >>> idata.posterior.attrs["method"]
    'toy'
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a Posterior, got {type(posterior).__name__}")
    if not isinstance(name, str) or not name.isidentifier() or name in ("z", "y_real", "y_imag", "y"):
        raise ValueError(f"name must be an identifier other than z/y/y_real/y_imag, got {name!r}")
    c, h, w = posterior.image_shape

    post_vars = {name: to_numpy(posterior.samples)}
    dims = {name: _IMAGE_DIMS}
    coords = {"channel": np.arange(c), "row": np.arange(h), "col": np.arange(w)}
    if posterior.z is not None:
        post_vars["z"] = to_numpy(posterior.z)
        dims["z"] = ["latent"]
        coords["latent"] = np.arange(posterior.z.shape[-1])

    stats = {STAT_ALIASES.get(k, k): v for k, v in posterior.sample_stats.items()}

    observed = None
    y_is_complex = None
    if y is not None:
        if not hasattr(y, "shape"):
            raise TypeError(f"y must be a torch.Tensor or numpy array, got {type(y).__name__}")
        y_arr = to_numpy(y)
        if y_arr.dtype.kind not in "fciu":
            raise TypeError(f"y must be numeric, got dtype {y_arr.dtype}")
        if not np.isfinite(y_arr).all():
            raise ValueError("y contains NaN or inf entries")
        y_dims = [f"y_dim_{i}" for i in range(y_arr.ndim)]
        y_is_complex = y_arr.dtype.kind == "c"
        if y_is_complex:
            observed = {"y_real": np.ascontiguousarray(y_arr.real), "y_imag": np.ascontiguousarray(y_arr.imag)}
            dims.update(y_real=y_dims, y_imag=y_dims)
        else:
            observed = {"y": y_arr}
            dims["y"] = y_dims
        coords.update({d: np.arange(s) for d, s in zip(y_dims, y_arr.shape)})

    constant = None
    if truth is not None:
        constant = {f"{name}_true": truth_array(truth, (c, h, w))}
        dims[f"{name}_true"] = _IMAGE_DIMS

    idata = az.from_dict(
        posterior=post_vars,
        sample_stats=stats or None,
        observed_data=observed,
        constant_data=constant,
        coords=coords,
        dims=dims,
    )
    if posterior.evidence_trace is not None:
        trace = posterior.evidence_trace
        idata.add_groups(
            {
                "evidence": xr.Dataset(
                    {"log_evidence": ("iteration", trace)},
                    coords={"iteration": np.arange(trace.shape[0])},
                )
            }
        )
    attrs = _attrs(posterior, y_is_complex)
    for group in idata.groups():
        idata[group].attrs.update(attrs)
    return idata
