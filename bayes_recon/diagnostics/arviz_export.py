"""Export a ``Posterior`` to ``arviz.InferenceData`` (arviz 0.2x API).

Layout of the result:

* ``posterior``: the image variable (``name``, default ``"x"``) with dims
  ``(chain, draw, channel, row, col)`` and integer coords; ``z`` with dims
  ``(chain, draw, latent)`` when the method has latents.
* ``sample_stats``: the sampler statistics, ``(chain, draw)`` each. Pyro's
  ``accept_prob`` is renamed to ArviZ's ``acceptance_rate`` and ``divergent``
  to ``diverging`` so that ArviZ plots find them; other names are kept.
* ``observed_data``: the measurement ``y``. With ``op`` its dims are named:
  ``(channel, angle, detector)`` for CT, ``(channel, kspace_sample)`` for MRI,
  ``(channel, y_row, y_col)`` for an image-shaped range, ``(entry,)`` for a
  flat one; without ``op`` ``y_dim_0, y_dim_1, ...``; with ``predictive=True`` and more than
  ``max_measurements`` real entries it holds only the kept entries, over one
  flat dim ``measurement`` whose coordinate is their flat (row-major) index in
  ``op.range_shape``. Complex k-space is stored as two real variables
  ``y_real`` and ``y_imag`` (netCDF4 has no portable complex type); the
  ``y_is_complex`` attribute says so.
* ``posterior_predictive`` (``predictive=True``): replicated measurements
  ``y_s = A x_s + ε_s``, ``ε_s ~ N(0, σ² I)`` (independently on the real and
  the imaginary part for complex k-space), one per posterior draw, with the
  observed variables' names (``y``, or ``y_real`` and ``y_imag``) and dims
  ``(chain, draw, *measurement dims)``, float64.
* ``log_likelihood`` (``predictive=True``): one variable ``y``, float64,
  ``(chain, draw, *measurement dims)``: the pointwise Gaussian log-likelihood
  ``log N(y_i; (A x_s)_i, σ²)`` of every kept entry. For complex k-space an
  entry is one complex sample and its log-likelihood is the sum over its real
  and imaginary parts, so ``az.loo`` leaves out one k-space sample at a time
  (both parts come from one read-out; see :func:`to_arviz`).
* ``constant_data``: the truth as ``{name}_true`` with dims ``(channel, row,
  col)``; when the predictive groups hold a subset, also the whole measurement
  as ``y_full`` (``y_full_real``, ``y_full_imag``) with the full dims.
* ``evidence`` (a group outside ArviZ's fixed schema, kept by netCDF): variable
  ``log_evidence`` over dim ``iteration`` when the posterior carries an
  evidence trace.
* attributes on every group: ``method``, ``operator``, ``noise_std``, ``seed``,
  ``bayes_recon_version``, ``inference_library``, ``hyperparameters`` (a JSON
  string) and scalar extras (as ``extra_<key>``); unset values are omitted
  because netCDF attributes cannot be ``None``. ``observed_data``,
  ``posterior_predictive`` and ``log_likelihood`` add (with ``predictive=True``)
  ``likelihood_noise_std`` (the σ used), ``predictive_seed``,
  ``measurement_subset`` (``"all"`` or ``"random subset"``),
  ``measurement_kept`` and ``measurement_total`` (entries of the stored
  variables: a complex entry counts once), ``max_measurements`` (real numbers:
  a complex entry counts twice) and ``log_likelihood_unit``.

These groups make ``az.loo``, ``az.waic``, ``az.compare``, ``az.plot_ppc``,
``az.plot_bpv`` and ``az.plot_loo_pit(idata, y="y")`` (``y="y_real"`` or
``"y_imag"`` for k-space) run with no further arguments; :func:`loo_summary`
condenses ``az.loo`` into plain numbers.
"""

from __future__ import annotations

import json
import math
import numbers

import numpy as np
import torch
import xarray as xr

from .._validation import check_int
from ..posterior import Posterior
from ._inputs import az, to_numpy, truth_array

__all__ = ["to_arviz", "loo_summary", "STAT_ALIASES", "DEFAULT_MAX_MEASUREMENTS", "PARETO_K_BINS"]

#: Pyro-style sampler statistic names mapped to ArviZ's conventional ones.
STAT_ALIASES = {"accept_prob": "acceptance_rate", "divergent": "diverging"}

#: Default bound on the real entries kept in the predictive groups (see :func:`to_arviz`).
DEFAULT_MAX_MEASUREMENTS = 4096

#: Pareto k̂ bins reported by :func:`loo_summary`: label -> (lower, upper], the
#: PSIS thresholds of Vehtari et al. (good, ok, bad, very bad).
PARETO_K_BINS = {
    "(-inf, 0.5]": (-math.inf, 0.5),
    "(0.5, 0.7]": (0.5, 0.7),
    "(0.7, 1]": (0.7, 1.0),
    "(1, inf)": (1.0, math.inf),
}

_IMAGE_DIMS = ["channel", "row", "col"]
_RESERVED_NAMES = ("z", "y", "y_real", "y_imag", "y_full", "y_full_real", "y_full_imag")
# Operator outputs per batch of samples: 2**21 real float64 numbers (16 MB), whatever the image size.
_BATCH_VALUES = 2**21


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


def _measurement_array(y) -> np.ndarray:
    """``y`` as a numpy array after the type and finiteness checks."""
    if not hasattr(y, "shape"):
        raise TypeError(f"y must be a torch.Tensor or numpy array, got {type(y).__name__}")
    y_arr = to_numpy(y)
    if y_arr.dtype.kind not in "fciu":
        raise TypeError(f"y must be numeric, got dtype {y_arr.dtype}")
    if not np.isfinite(y_arr).all():
        raise ValueError("y contains NaN or inf entries")
    return y_arr


def _check_operator(op, y_arr: np.ndarray | None, image_shape) -> np.ndarray | None:
    """Check ``op`` against the samples and ``y``; returns ``y`` without a batch of one."""
    from ..operators.base import LinearOperator  # call time: keeps the diagnostics import light

    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a bayes_recon.operators.LinearOperator, got {type(op).__name__}")
    if tuple(op.domain_shape) != tuple(image_shape):
        raise ValueError(
            f"op must act on images of the samples' shape (C, H, W) = {tuple(image_shape)}, "
            f"got op.domain_shape = {tuple(op.domain_shape)}"
        )
    if y_arr is None:
        return None
    range_shape = tuple(op.range_shape)
    if y_arr.shape == (1, *range_shape):
        y_arr = y_arr[0]
    if y_arr.shape != range_shape:
        raise ValueError(
            f"y must have op.range_shape = {range_shape} (or {(1, *range_shape)}) for "
            f"{type(op).__name__}, got {y_arr.shape}"
        )
    if (y_arr.dtype.kind == "c") != op.complex_range:
        kind = "complex" if op.complex_range else "real"
        raise TypeError(f"y must be {kind} for {type(op).__name__} (op.complex_range="
                        f"{op.complex_range}), got dtype {y_arr.dtype}")
    return y_arr


def _noise_level(noise_std, posterior: Posterior) -> float:
    """σ of the likelihood: the argument, else the posterior's; must be finite and > 0."""
    source = "noise_std"
    if noise_std is None:
        noise_std, source = posterior.noise_std, "posterior.noise_std"
    if noise_std is None:
        raise ValueError("predictive=True needs a noise level: pass noise_std (the posterior "
                         "records none)")
    if isinstance(noise_std, torch.Tensor) and noise_std.numel() == 1:
        noise_std = float(noise_std)
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real):
        raise TypeError(f"noise_std must be a number, got {type(noise_std).__name__}")
    sigma = float(noise_std)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"noise_std must be finite and > 0 for a likelihood, got {source} = {sigma}")
    return sigma


def _measurement_dims(op, shape, channels: int) -> list[str]:
    """Named dims where the operator tells them, else ``y_dim_i``.

    CT ``(channel, angle, detector)``; k-space samples of MRI ``(channel, kspace_sample)``;
    an image-shaped range (denoising, deblurring, super-resolution) ``(channel, y_row,
    y_col)`` (not ``row``/``col``: a downsampled range has other sizes than the image);
    a flat range ``(entry,)``.
    """
    if op is None:
        return [f"y_dim_{i}" for i in range(len(shape))]
    shape = tuple(shape)
    if len(shape) == 3 and shape == (channels, getattr(op, "n_angles", None),
                                      getattr(op, "n_detectors", None)):
        return ["channel", "angle", "detector"]
    if op.complex_range and len(shape) == 2 and shape[0] == channels:
        return ["channel", "kspace_sample"]
    if len(shape) == 3 and shape[0] == channels:
        return ["channel", "y_row", "y_col"]
    if len(shape) == 1:
        return ["entry"]  # not "measurement": that names the kept subset's flat dim
    return [f"y_dim_{i}" for i in range(len(shape))]


def _split(name: str, arr: np.ndarray) -> dict:
    """A measurement-like array as netCDF-ready real variables (``name`` or ``name_real/_imag``)."""
    if arr.dtype.kind == "c":
        return {f"{name}_real": np.ascontiguousarray(arr.real),
                f"{name}_imag": np.ascontiguousarray(arr.imag)}
    return {name: arr}


def _predictive(posterior: Posterior, op, y_kept: np.ndarray, keep, sigma: float, seed: int):
    """Replicated data and pointwise log-likelihood of the kept entries, ``(S, n_kept)`` each.

    ``A x_s`` is computed in float64 (complex128 for k-space) over batches of
    samples on the samples' device; the noise comes from one ``torch.Generator``
    seeded by ``seed`` (the convention of ``bayes_recon.data.simulate``: the
    real and the imaginary part each get σ).
    """
    from ..data.simulate import white_noise  # the library's one noise convention

    samples = posterior.flat_samples
    device = samples.device
    n_samples, n_kept = samples.shape[0], y_kept.size
    values_per_sample = math.prod(op.range_shape) * (2 if op.complex_range else 1)
    batch = max(1, _BATCH_VALUES // values_per_sample)
    keep_t = None if keep is None else torch.as_tensor(keep, dtype=torch.long, device=device)
    y_t = torch.as_tensor(y_kept, device=device)
    y_t = y_t.to(torch.complex128 if y_t.is_complex() else torch.float64)
    gen = torch.Generator(device=device).manual_seed(seed)
    log_norm = -0.5 * math.log(2 * math.pi * sigma**2)
    pred = torch.empty((n_samples, n_kept), dtype=y_t.dtype, device=device)
    loglik = torch.empty((n_samples, n_kept), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, n_samples, batch):
            x = samples[start:start + batch].to(torch.float64)
            ax = op(x).reshape(x.shape[0], -1)
            if keep_t is not None:
                ax = ax[:, keep_t]
            ax = ax.to(y_t.dtype)
            stop = start + x.shape[0]
            pred[start:stop] = ax + white_noise(ax, sigma, gen)
            resid = y_t - ax
            # complex: |r|² = Re² + Im², the sum of the two real parts' Gaussian terms
            sq = resid.real**2 + resid.imag**2 if resid.is_complex() else resid**2
            loglik[start:stop] = (2 if resid.is_complex() else 1) * log_norm - sq / (2 * sigma**2)
    return pred.cpu().numpy(), loglik.cpu().numpy()


def to_arviz(posterior: Posterior, truth=None, y=None, name: str = "x", *, op=None,
             noise_std=None, predictive: bool = False,
             max_measurements: int = DEFAULT_MAX_MEASUREMENTS, seed: int = 0):
    """Export posterior samples (and optionally truth, measurement, predictive groups) to ArviZ.

    Parameters
    ----------
    posterior : Posterior
        Samples ``(chains, draws, C, H, W)`` and provenance.
    truth : torch.Tensor or numpy.ndarray, shape (C, H, W), (1, C, H, W) or (H, W) when C = 1, optional
        Ground-truth image, stored in ``constant_data`` as ``{name}_true``.
    y : torch.Tensor or numpy.ndarray, optional
        Measurement, real or complex, stored in ``observed_data``. Any shape
        without ``op``; with ``op`` it must be ``op.range_shape`` or
        ``(1, *op.range_shape)`` and complex exactly when ``op.complex_range``.
    name : str
        Name of the image variable in the ``posterior`` group.
    op : bayes_recon.operators.LinearOperator, optional
        The forward model ``A`` (``op.domain_shape`` = the samples' ``(C, H, W)``).
        Needed for ``predictive=True``; otherwise it only names ``y``'s dims.
    noise_std : float, optional
        σ of the Gaussian likelihood ``y ~ N(A x, σ² I)`` (used with
        ``predictive=True``); default ``posterior.noise_std``. Must be finite and > 0.
    predictive : bool
        Add ``posterior_predictive`` and ``log_likelihood`` (needs ``y``, ``op``
        and a noise level), so that ``az.loo``, ``az.waic``, ``az.compare``,
        ``az.plot_ppc``, ``az.plot_bpv`` and ``az.plot_loo_pit`` run.
    max_measurements : int
        Bound on the real numbers per draw in the predictive groups (a complex
        entry counts twice). A larger measurement is represented by a random
        subset of ``max_measurements`` real numbers (``max_measurements // 2``
        complex entries), the same in ``observed_data``, ``posterior_predictive``
        and ``log_likelihood``, drawn with ``numpy.random.default_rng(seed)``.
        Each of the two groups costs ``draws × kept × 8`` bytes: the default
        4096 keeps them at 33 MB each for 1000 draws (a NUTS run of 2 × 500),
        small enough for a netCDF file next to the samples, while 4096
        pointwise terms already resolve ``elpd_loo`` and the LOO-PIT far beyond
        the precision its standard error allows. A 64² CT with 60 angles
        (5460 entries) or any MRI of 64² and more is subsampled by default.
    seed : int
        Seeds the predictive noise (a ``torch.Generator`` on the samples'
        device) and the subset; same seed, same groups. Global RNG state is not
        touched.

    Returns
    -------
    arviz.InferenceData
        See the module docstring for the groups, dims and attributes.

    Raises
    ------
    ValueError
        ``predictive=True`` without ``y``, ``op`` or a noise level; σ ≤ 0;
        ``y`` not of ``op.range_shape``; ``op`` for images of another shape;
        and the checks of ``truth``, ``y`` and ``name``.
    TypeError
        ``op`` not a ``LinearOperator``, ``y`` real for a complex operator or
        the reverse, arguments of the wrong type.

    Notes
    -----
    *LOO for complex k-space.* The one ``log_likelihood`` variable holds, per
    k-space sample, the sum of the log-likelihoods of its real and imaginary
    parts: PSIS-LOO leaves out one complex sample at a time, the unit the
    scanner measures (the two parts come from one read-out). For a real image
    the k-space at ``-k`` is the conjugate of that at ``k``; when a mask holds
    both, the left-out sample is still predicted from its partner, so
    ``elpd_loo`` there measures how well the posterior predicts a repeated
    measurement rather than an unseen frequency.

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

    With a forward model and σ, the predictive groups ArviZ's LOO needs:

    >>> from bayes_recon.operators import MatrixOperator
    >>> op = MatrixOperator(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), (1, 4, 4))
    >>> y = op(torch.zeros(1, 1, 4, 4)) + 0.5
    >>> idata = to_arviz(post, y=y, op=op, noise_std=2.0, predictive=True)
    >>> idata.log_likelihood["y"].dims, idata.posterior_predictive["y"].shape
    (('chain', 'draw', 'entry'), (2, 20, 6))
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a Posterior, got {type(posterior).__name__}")
    if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED_NAMES:
        raise ValueError(f"name must be an identifier other than {'/'.join(_RESERVED_NAMES)}, "
                         f"got {name!r}")
    if not isinstance(predictive, bool):
        raise TypeError(f"predictive must be a bool, got {type(predictive).__name__}")
    check_int("seed", seed, minimum=0)
    check_int("max_measurements", max_measurements, minimum=1)
    c, h, w = posterior.image_shape

    y_arr = None if y is None else _measurement_array(y)
    if predictive:
        # Name what is missing before any work is done.
        if y is None:
            raise ValueError("predictive=True needs the measurement y")
        if op is None:
            raise ValueError("predictive=True needs the forward operator op")
        sigma = _noise_level(noise_std, posterior)
    if op is not None:
        y_arr = _check_operator(op, y_arr, (c, h, w))

    post_vars = {name: to_numpy(posterior.samples)}
    dims = {name: _IMAGE_DIMS}
    coords = {"channel": np.arange(c), "row": np.arange(h), "col": np.arange(w)}
    if posterior.z is not None:
        post_vars["z"] = to_numpy(posterior.z)
        dims["z"] = ["latent"]
        coords["latent"] = np.arange(posterior.z.shape[-1])

    stats = {STAT_ALIASES.get(k, k): v for k, v in posterior.sample_stats.items()}

    observed = pp = loglik = None
    constant = {}
    y_is_complex = None
    pred_attrs = {}
    if y_arr is not None:
        y_is_complex = y_arr.dtype.kind == "c"
        full_dims = _measurement_dims(op, y_arr.shape, c)
        coords.update({d: np.arange(s) for d, s in zip(full_dims, y_arr.shape) if d not in coords})
        y_dims, y_obs = full_dims, y_arr
        if predictive:
            total = y_arr.size
            per_entry = 2 if y_is_complex else 1
            keep = None
            if total * per_entry > max_measurements:
                n_keep = max_measurements // per_entry
                if n_keep < 1:
                    raise ValueError(f"max_measurements must be >= 2 for complex y, got {max_measurements}")
                keep = np.sort(np.random.default_rng(seed).choice(total, size=n_keep, replace=False))
                y_obs = y_arr.reshape(-1)[keep]
                y_dims = ["measurement"]
                coords["measurement"] = keep
                # the whole measurement stays in the file
                full = _split("y_full", y_arr)
                constant.update(full)
                dims.update({k: full_dims for k in full})
            draws, loglik_flat = _predictive(posterior, op, y_arr.reshape(-1) if keep is None
                                             else y_obs, keep, sigma, seed)
            out_shape = (posterior.num_chains, posterior.num_draws, *y_obs.shape)
            pp = _split("y", draws.reshape(out_shape))
            loglik = {"y": loglik_flat.reshape(out_shape)}
            pred_attrs = {
                "likelihood_noise_std": sigma,
                "predictive_seed": seed,
                "measurement_subset": "all" if keep is None else "random subset",
                "measurement_kept": int(y_obs.size),
                "measurement_total": int(total),
                "max_measurements": int(max_measurements),
                "log_likelihood_unit": ("complex entry (real + imaginary part)" if y_is_complex
                                        else "real entry"),
            }
        observed = _split("y", y_obs)
        # "y" also names the log-likelihood, which is one variable for complex k-space
        dims.update({k: y_dims for k in (*observed, "y")})

    if truth is not None:
        constant[f"{name}_true"] = truth_array(truth, (c, h, w))
        dims[f"{name}_true"] = _IMAGE_DIMS

    idata = az.from_dict(
        posterior=post_vars,
        sample_stats=stats or None,
        posterior_predictive=pp,
        log_likelihood=loglik,
        observed_data=observed,
        constant_data=constant or None,
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
        if group in ("observed_data", "posterior_predictive", "log_likelihood"):
            idata[group].attrs.update(pred_attrs)
    return idata


def loo_summary(idata, var_name: str | None = None) -> dict:
    """PSIS-LOO of an ``InferenceData`` with a ``log_likelihood`` group, as plain numbers.

    Runs ``az.loo(idata, pointwise=True, scale="log")``; ArviZ's warning about
    large Pareto k̂ is not filtered (it is also recorded as ``warning``).

    Parameters
    ----------
    idata : arviz.InferenceData
        With ``posterior`` and ``log_likelihood`` groups (see :func:`to_arviz`).
    var_name : str, optional
        The log-likelihood variable; needed only when there are several.

    Returns
    -------
    dict
        ``elpd_loo`` (nats, summed over the kept entries), ``elpd_loo_se``,
        ``p_loo``, ``num_observations``, ``num_samples``, ``pareto_k_max`` (None when a k̂ is not finite),
        ``pareto_k_counts`` (entries per bin of :data:`PARETO_K_BINS`; a
        non-finite k̂ counts as ``"(1, inf)"``), ``good_k`` (ArviZ's threshold
        for this sample size), ``warning`` (any k̂ above it), and from the
        group's attributes, when present, ``measurement_subset``,
        ``measurement_kept``, ``measurement_total``, ``log_likelihood_unit``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.posterior import Posterior
    >>> from bayes_recon.diagnostics import to_arviz, loo_summary
    >>> from bayes_recon.operators import Identity
    >>> post = Posterior(0.1 * torch.randn(2, 100, 1, 3, 3, generator=torch.Generator().manual_seed(0)))
    >>> idata = to_arviz(post, y=torch.zeros(1, 3, 3), op=Identity((1, 3, 3)), noise_std=1.0,
    ...                  predictive=True)
    >>> s = loo_summary(idata)
    >>> s["num_observations"], sum(s["pareto_k_counts"].values())
    (9, 9)
    """
    if not isinstance(idata, az.InferenceData):
        raise TypeError(f"idata must be an arviz.InferenceData, got {type(idata).__name__}")
    if "log_likelihood" not in idata.groups():
        raise ValueError("idata has no log_likelihood group; export with "
                         "to_arviz(..., op=..., predictive=True)")
    names = list(idata.log_likelihood.data_vars)
    if var_name is None and len(names) != 1:
        raise ValueError(f"var_name must name one of the log-likelihood variables {names}")
    if var_name is not None and var_name not in names:
        raise ValueError(f"var_name must be one of {names}, got {var_name!r}")
    res = az.loo(idata, pointwise=True, var_name=var_name, scale="log")
    k = np.asarray(res.pareto_k, dtype=np.float64).ravel()
    finite = np.isfinite(k)
    counts = {}
    for label, (lo, hi) in PARETO_K_BINS.items():
        inside = finite & (k > lo) & (k <= hi)
        if hi == math.inf:
            inside |= ~finite
        counts[label] = int(inside.sum())
    summary = {
        "elpd_loo": float(res.elpd_loo),
        "elpd_loo_se": float(res.se),
        "p_loo": float(res.p_loo),
        "num_observations": int(res.n_data_points),
        "num_samples": int(res.n_samples),
        # None when some k̂ could not be estimated (too few tail draws): strict JSON has no inf.
        "pareto_k_max": float(k.max()) if finite.all() else None,
        "pareto_k_counts": counts,
        "good_k": float(res.good_k),
        "warning": bool(res.warning),
    }
    attrs = idata.log_likelihood.attrs
    for key in ("measurement_subset", "measurement_kept", "measurement_total", "log_likelihood_unit"):
        if key in attrs:
            value = attrs[key]
            summary[key] = value.item() if isinstance(value, np.generic) else value
    return summary
