"""StructuredGaussian: dense references, sampling statistics, gradients, conditioning, bad input.

References are independent of the implementation: ``U`` is rebuilt by a plain
Python loop from the stencil definition written out again here, and densities,
conditionals and covariances come from ``torch.distributions.MultivariateNormal``
and dense linear algebra in float64.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from bayes_recon.distributions import (
    DENSE_MAX_PIXELS,
    ConditionalStructuredGaussian,
    StructuredGaussian,
    num_offdiag,
    soft_clip_log_diag,
    solve_cholesky,
    spatial_offsets,
)

DT = torch.float64


def _offsets(r):
    # Written out again on purpose: the rest of the centre row, then r rows below.
    return [(0, dx) for dx in range(1, r + 1)] + [
        (dy, dx) for dy in range(1, r + 1) for dx in range(-r, r + 1)
    ]


def _params(batch, c, h, w, r, seed=0, scale=0.3, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    k = num_offdiag(r, c)
    loc = torch.randn(*batch, c, h, w, generator=g, dtype=dtype)
    ld = scale * torch.randn(*batch, c, h, w, generator=g, dtype=dtype)
    off = scale * torch.randn(*batch, k, h, w, generator=g, dtype=dtype)
    return loc, ld, off


def _dist(batch=(), c=1, h=8, w=8, r=2, seed=0, **kw):
    loc, ld, off = _params(batch, c, h, w, r, seed)
    return StructuredGaussian(loc, ld, off, radius=r, **kw)


def _loop_cholesky(ld, off, r):
    """Dense U of one parameter set by the definition: row i holds pixel i's weights."""
    c, h, w = ld.shape
    n, f = c * h * w, len(_offsets(r))
    idx = lambda ch, y, x: (ch * h + y) * w + x  # noqa: E731
    u = torch.zeros(n, n, dtype=ld.dtype)
    pairs = [(a, b) for a in range(c) for b in range(a + 1, c)]
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                i = idx(ch, y, x)
                u[i, i] = math.exp(float(ld[ch, y, x]))
                for k, (dy, dx) in enumerate(_offsets(r)):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        u[i, idx(ch, y + dy, x + dx)] = off[ch * f + k, y, x]
                for p, (a, b) in enumerate(pairs):
                    if a == ch:
                        u[i, idx(b, y, x)] = off[c * f + p, y, x]
    return u


def _loop_covariance(d, r):
    """Dense covariance inv(U^T U) from the loop-built U, for every batch element."""
    ld = d.log_diag.reshape(-1, *d.log_diag.shape[-3:])
    off = d.off_diag.reshape(-1, *d.off_diag.shape[-3:])
    covs = []
    for l_i, o_i in zip(ld, off):
        u = _loop_cholesky(l_i, o_i, r)
        covs.append(torch.cholesky_inverse(torch.linalg.cholesky(u.T @ u)))
    n = covs[0].shape[0]
    return torch.stack(covs).reshape(*d.batch_shape, n, n)


def _flat_batch(t, nb):
    return t.reshape(nb, *t.shape[-3:])


# ------------------------------------------------------------------ layout
def test_offsets_and_counts():
    assert list(spatial_offsets(1)) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    for r in (0, 1, 2, 3):
        assert list(spatial_offsets(r)) == _offsets(r)
        assert len(spatial_offsets(r)) == ((2 * r + 1) ** 2 - 1) // 2
    assert num_offdiag(2) == 12 and num_offdiag(2, 2) == 25 and num_offdiag(0, 3) == 3


@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6), (3, 4, 5)])
def test_dense_factor_and_precision_match_loop(r, shape):
    d = _dist((), *shape, r=r, seed=r)
    u_ref = _loop_cholesky(d.log_diag, d.off_diag, r)
    torch.testing.assert_close(d.to_dense_cholesky(), u_ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(d.to_dense_precision(), u_ref.T @ u_ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6)])
def test_log_prob_matches_dense_multivariate_normal(r, shape):
    d = _dist((), *shape, r=r, seed=10 + r)
    u = _loop_cholesky(d.log_diag, d.off_diag, r)
    mvn = torch.distributions.MultivariateNormal(d.loc.flatten(), precision_matrix=u.T @ u)
    x = d.loc + torch.randn(5, *shape, dtype=DT, generator=torch.Generator().manual_seed(1))
    lp, ref = d.log_prob(x), mvn.log_prob(x.flatten(-3))
    assert lp.shape == (5,)
    torch.testing.assert_close(lp, ref, rtol=1e-9, atol=0)  # float64 exactness
    torch.testing.assert_close(d.entropy(), mvn.entropy(), rtol=1e-12, atol=0)
    torch.testing.assert_close(d.log_det_precision(), torch.logdet(u.T @ u), rtol=1e-10, atol=1e-10)


def test_per_channel_layout_equals_flat_layout_with_zero_cross_weights():
    loc, ld, off = _params((2,), 2, 5, 5, 1)
    spatial = off[:, :8].reshape(2, 2, 4, 5, 5)
    d5 = StructuredGaussian(loc, ld, spatial, radius=1)
    flat = torch.cat([off[:, :8], torch.zeros(2, 1, 5, 5, dtype=DT)], dim=1)
    assert d5.off_diag.shape == (2, 9, 5, 5)
    torch.testing.assert_close(d5.to_dense_precision(),
                               StructuredGaussian(loc, ld, flat, radius=1).to_dense_precision())


@pytest.mark.parametrize("shape,r", [((1, 7, 6), 2), ((2, 5, 4), 1), ((3, 4, 4), 2)])
def test_matvecs_and_solves_match_dense(shape, r):
    d = _dist((), *shape, r=r, seed=3)
    n = d.num_pixels
    u = _loop_cholesky(d.log_diag, d.off_diag, r)
    v = torch.randn(4, *shape, dtype=DT, generator=torch.Generator().manual_seed(2))
    vf = v.reshape(4, n)
    for got, ref in [
        (d.cholesky_matvec(v), vf @ u.T),
        (d.cholesky_t_matvec(v), vf @ u),
        (d.precision_matvec(v), vf @ (u.T @ u)),
        (d.solve_precision(v), torch.linalg.solve(u.T @ u, vf.T).T),
        (d.transform_noise(v) - d.loc, torch.linalg.solve_triangular(u, vf.T, upper=True).T),
        (d.whiten(v), (vf - d.loc.flatten()) @ u.T),
    ]:
        torch.testing.assert_close(got.reshape(4, n), ref, rtol=1e-10, atol=1e-11)
    for transpose in (False, True):
        a = solve_cholesky(v, d.log_diag, d.off_diag, r, transpose=transpose, solver="scipy")
        b = solve_cholesky(v, d.log_diag, d.off_diag, r, transpose=transpose, solver="dense")
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize("shape,r", [((1, 4, 4), 1), ((2, 3, 3), 1)])
def test_empirical_covariance_of_samples(shape, r):
    d = _dist((), *shape, r=r, seed=4)
    n, s = d.num_pixels, 20_000
    x = d.sample((s,), generator=torch.Generator().manual_seed(0)).reshape(s, n)
    cov = _loop_covariance(d, r)
    xc = x - d.loc.flatten()
    emp = xc.T @ xc / s  # known mean: unbiased
    # Standard error of a covariance entry for Gaussian data: sqrt((S_ii S_jj + S_ij^2) / s).
    se = torch.sqrt((torch.outer(cov.diagonal(), cov.diagonal()) + cov**2) / s)
    assert float(((emp - cov).abs() / se).max()) < 5.0  # 5 standard errors, fixed seed
    mean_se = torch.sqrt(cov.diagonal() / s)
    assert float(((x.mean(0) - d.loc.flatten()).abs() / mean_se).max()) < 5.0


def test_rsample_shapes_dtype_and_seed():
    d = _dist((2,), 1, 6, 6, r=2)
    a = d.rsample((3, 4), generator=torch.Generator().manual_seed(5))
    b = d.rsample((3, 4), generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 4, 2, 1, 6, 6) and torch.equal(a, b)
    loc, ld, off = _params((), 1, 6, 6, 1, dtype=torch.float32)
    d32 = StructuredGaussian(loc, ld, off, radius=1)
    x = d32.rsample((2,))
    assert x.dtype == torch.float32 and d32.log_prob(x).dtype == torch.float32
    dense = StructuredGaussian(loc, ld, off, radius=1, solver="dense")
    u = torch.randn(3, 1, 6, 6)
    torch.testing.assert_close(dense.transform_noise(u), d32.transform_noise(u), rtol=1e-4, atol=1e-5)


def test_rsample_gradients_pass_gradcheck():
    loc, ld, off = _params((2,), 2, 3, 3, 1, seed=6)
    u = torch.randn(3, 2, 2, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(7))
    b = torch.randn(2, 2, 2, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(8))
    leaves = [t.clone().requires_grad_() for t in (loc, ld, off)]

    def sample(loc, ld, off):
        return StructuredGaussian(loc, ld, off, radius=1).transform_noise(u)

    def precision_solve(ld, off, rhs):
        return StructuredGaussian(loc, ld, off, radius=1).solve_precision(rhs)

    assert torch.autograd.gradcheck(sample, leaves, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(
        precision_solve, [leaves[1], leaves[2], b.clone().requires_grad_()], eps=1e-6, atol=1e-7
    )


def test_log_prob_and_matvec_gradients_pass_gradcheck():
    # Hand-written backward of U v and Uᵀ v, with broadcasting of v against the batch.
    loc, ld, off = _params((2,), 2, 4, 3, 2, seed=16)
    x = torch.randn(3, 1, 2, 4, 3, dtype=DT, generator=torch.Generator().manual_seed(2))
    leaves = [t.clone().requires_grad_() for t in (loc, ld, off, x)]

    def lp(loc, ld, off, x):
        return StructuredGaussian(loc, ld, off, radius=2).log_prob(x)

    def mv(ld, off, x):
        d = StructuredGaussian(loc, ld, off, radius=2)
        return d.cholesky_matvec(x), d.cholesky_t_matvec(x), d.precision_matvec(x)

    assert torch.autograd.gradcheck(lp, leaves, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(mv, leaves[1:], eps=1e-6, atol=1e-7)
    # Second derivatives (e.g. Hessian-vector products of log_prob), on a smaller case.
    _, ld2, off2 = _params((), 2, 3, 2, 1, seed=17)
    x2 = torch.randn(1, 2, 3, 2, dtype=DT, generator=torch.Generator().manual_seed(3))

    def mv2(ld, off, x):
        return StructuredGaussian(torch.zeros_like(ld), ld, off, radius=1).precision_matvec(x)

    small = [t.clone().requires_grad_() for t in (ld2, off2, x2)]
    assert torch.autograd.gradgradcheck(mv2, small, eps=1e-6, atol=1e-6)


def test_scipy_gradients_match_dense_autograd():
    loc, ld, off = _params((), 1, 8, 8, 2, seed=9)
    u = torch.randn(4, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(3))
    w = torch.randn(4, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(4))
    grads = {}
    for solver in ("scipy", "dense"):
        ps = [t.clone().requires_grad_() for t in (loc, ld, off)]
        x = StructuredGaussian(*ps, radius=2, solver=solver).transform_noise(u)
        grads[solver] = torch.autograd.grad((x * w).sum(), ps)
    for a, b in zip(grads["scipy"], grads["dense"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------- introspection
def test_marginal_variance_and_correlation_map_exact():
    d = _dist((2,), 2, 4, 5, r=1, seed=11)
    cov = _loop_covariance(d, 1)
    torch.testing.assert_close(d.to_dense_covariance(), cov, rtol=1e-10, atol=1e-12)
    var_ref = cov.diagonal(dim1=-2, dim2=-1).reshape(2, 2, 4, 5)
    torch.testing.assert_close(d.marginal_variance(), var_ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(d.variance, var_ref, rtol=1e-10, atol=0)
    dense = StructuredGaussian(d.loc, d.log_diag, d.off_diag, radius=1, solver="dense")
    torch.testing.assert_close(dense.marginal_variance(), var_ref, rtol=1e-10, atol=0)
    p = (1, 2, 3)
    i = (p[0] * 4 + p[1]) * 5 + p[2]
    corr_ref = cov[:, :, i] / torch.sqrt(cov[:, i, i, None] * cov.diagonal(dim1=-2, dim2=-1))
    corr = d.correlation_map(p)
    torch.testing.assert_close(corr, corr_ref.reshape(2, 2, 4, 5), rtol=1e-10, atol=1e-12)
    assert torch.equal(corr[:, 1, 2, 3], torch.ones(2, dtype=DT))
    one = _dist((), 1, 4, 4, r=1)
    assert one.correlation_map((1, 1)).shape == (1, 4, 4)  # (h, w) for one channel


def test_sampled_marginal_variance_on_large_image_closed_form():
    # Radius 0: Λ = diag(exp(2 l)), so Var = exp(-2 l) exactly. 65x65 > DENSE_MAX_PIXELS.
    h = 65
    assert h * h > DENSE_MAX_PIXELS
    ld = 0.5 * torch.randn(1, h, h, dtype=DT, generator=torch.Generator().manual_seed(0))
    d = StructuredGaussian(torch.zeros(1, h, h, dtype=DT), ld, torch.zeros(0, h, h, dtype=DT), radius=0)
    n = 2000
    rel = d.marginal_variance(num_samples=n, seed=1) / torch.exp(-2 * ld) - 1
    se = math.sqrt(2 / n)  # relative standard error of a variance from n samples, known mean
    assert float(rel.abs().max()) < 5.5 * se  # max over 4225 pixels: 5.5 se keeps false alarms < 1e-3
    assert abs(float(rel.mean())) < 5 * se / h  # the average is far tighter
    with pytest.raises(ValueError, match="DENSE_MAX_PIXELS|<= 4096"):
        d.to_dense_precision()


# -------------------------------------------------------------- condition
def _dense_conditional(d, mask, values):
    cov = _loop_covariance(d, d.radius)
    m = mask.flatten()
    ku, kk = (~m).nonzero().squeeze(1), m.nonzero().squeeze(1)
    mu, v = d.loc.flatten(-3), values.flatten(-3)
    s_uk, s_kk = cov[..., ku[:, None], kk], cov[..., kk[:, None], kk]
    gain = s_uk @ torch.linalg.inv(s_kk)  # covariance form: independent of the precision path
    mean = mu[..., ku] + (gain @ (v[..., kk] - mu[..., kk]).unsqueeze(-1)).squeeze(-1)
    c = cov[..., ku[:, None], ku] - gain @ s_uk.mT
    return ku, mean, c


@pytest.mark.parametrize("batch,shape,r", [((), (1, 6, 6), 2), ((2,), (2, 4, 4), 1)])
def test_condition_matches_dense_gaussian_conditional(batch, shape, r):
    d = _dist(batch, *shape, r=r, seed=12)
    g = torch.Generator().manual_seed(13)
    mask = torch.rand(shape, generator=g) < 0.4
    values = torch.randn(*batch, *shape, dtype=DT, generator=g)
    cond = d.condition(mask, values)
    assert isinstance(cond, ConditionalStructuredGaussian)
    ku, mean_ref, cov_ref = _dense_conditional(d, mask, values)
    mean = cond.mean
    assert torch.equal(mean[..., mask], values[..., mask])
    torch.testing.assert_close(mean.flatten(-3)[..., ku], mean_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(cond.covariance_matrix(), cov_ref, rtol=1e-9, atol=1e-11)
    var = cond.marginal_variance().flatten(-3)
    torch.testing.assert_close(var[..., ku], cov_ref.diagonal(dim1=-2, dim2=-1), rtol=1e-9, atol=0)
    x = cond.sample((3,), seed=0)
    assert x.shape == (3, *batch, *shape) and torch.equal(x[..., mask], values[..., mask].expand(3, *batch, -1))
    ref = torch.distributions.MultivariateNormal(mean_ref, cov_ref).log_prob(x.flatten(-3)[..., ku])
    torch.testing.assert_close(cond.log_prob(x), ref, rtol=1e-9, atol=1e-9)
    assert torch.equal(cond.sample((3,), seed=0), x)


def test_conditional_samples_have_the_conditional_covariance():
    d = _dist((), 1, 4, 4, r=1, seed=14)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[::2, ::2] = True
    values = torch.full((1, 4, 4), float("nan"), dtype=DT)
    values[0, mask] = 1.0
    cond = d.condition(mask, values)  # NaN at unobserved pixels is allowed
    ku, mean_ref, cov_ref = _dense_conditional(d, mask, torch.nan_to_num(values))
    s = 20_000
    x = cond.sample((s,), seed=1).flatten(-3)[:, ku]
    xc = x - mean_ref
    emp = xc.T @ xc / s
    se = torch.sqrt((torch.outer(cov_ref.diagonal(), cov_ref.diagonal()) + cov_ref**2) / s)
    assert float(((emp - cov_ref).abs() / se).max()) < 5.0  # 5 standard errors, fixed seed


def test_condition_edge_cases():
    d = _dist((), 1, 4, 4, r=1)
    none = d.condition(torch.zeros(4, 4, dtype=torch.bool), torch.zeros(1, 4, 4, dtype=DT))
    torch.testing.assert_close(none.mean, d.loc)
    torch.testing.assert_close(none.covariance_matrix(), d.to_dense_covariance(), rtol=1e-9, atol=1e-12)
    full = d.condition(torch.ones(1, 4, 4, dtype=torch.bool), torch.ones(1, 4, 4, dtype=DT))
    assert torch.equal(full.sample((2,), seed=0), torch.ones(2, 1, 4, 4, dtype=DT))


# ------------------------------------------------------- batch and pyro
def test_batch_shapes_2x3():
    d = _dist((2, 3), 2, 4, 4, r=2, seed=15)
    assert d.batch_shape == (2, 3) and d.event_shape == (2, 4, 4)
    x = torch.randn(5, 2, 3, 2, 4, 4, dtype=DT)
    lp = d.log_prob(x)
    assert lp.shape == (5, 2, 3)
    lp_b = d.log_prob(x[0, 0, 0])  # broadcasts over the batch
    assert lp_b.shape == (2, 3)
    dense = d.to_dense_precision()
    assert dense.shape == (2, 3, 32, 32)
    for i in range(2):
        for j in range(3):
            single = StructuredGaussian(d.loc[i, j], d.log_diag[i, j], d.off_diag[i, j], radius=2)
            torch.testing.assert_close(lp[:, i, j], single.log_prob(x[:, i, j]), rtol=1e-12, atol=0)
            torch.testing.assert_close(dense[i, j], single.to_dense_precision())
    assert d.rsample((4,)).shape == (4, 2, 3, 2, 4, 4)
    e = _dist((), 1, 4, 4, r=1).expand((2, 3))
    assert e.batch_shape == (2, 3) and e.sample((2,)).shape == (2, 2, 3, 1, 4, 4)
    assert e.marginal_variance().shape == (2, 3, 1, 4, 4)


def test_pyro_sample_site_and_plate():
    d = _dist((3,), 1, 5, 5, r=1)
    x_obs = torch.zeros(3, 1, 5, 5, dtype=DT)

    def model():
        with pyro.plate("images", 3):
            pyro.sample("x", d, obs=x_obs)

    tr = poutine.trace(model).get_trace()
    torch.testing.assert_close(tr.log_prob_sum(), d.log_prob(x_obs).sum())


def test_soft_clip_log_diag():
    x = torch.linspace(-100, 100, 201, dtype=DT, requires_grad=True)
    y = soft_clip_log_diag(x, bound=7.0)
    yd = y.detach()
    assert float(yd.abs().max()) <= 7.0 and bool((yd[1:] >= yd[:-1]).all())  # bounded, monotone
    (g,) = torch.autograd.grad(y.sum(), x)
    assert abs(float(g[100]) - 1.0) < 1e-12  # slope 1 at 0
    torch.testing.assert_close(soft_clip_log_diag(torch.tensor([0.1], dtype=DT)), torch.tensor([0.1], dtype=DT),
                               rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="bound"):
        soft_clip_log_diag(x, bound=0.0)


# -------------------------------------------------------------- bad input
def test_bad_parameters():
    loc, ld, off = _params((), 1, 6, 6, 2)
    with pytest.raises(ValueError, match="log_diag must have the shape of loc"):
        StructuredGaussian(loc, ld[:, :5], off, radius=2)
    with pytest.raises(ValueError, match="radius=1 .* needs K"):
        StructuredGaussian(loc, ld, off, radius=1)  # 12 weights is radius 2
    with pytest.raises(ValueError, match="off_diag must have shape"):
        StructuredGaussian(loc, ld, off[..., :5], radius=2)
    with pytest.raises(ValueError, match="off_diag must have shape"):
        StructuredGaussian(loc, ld, off.unsqueeze(0).expand(2, -1, -1, -1), radius=2)
    with pytest.raises(ValueError, match=r"F = .*= 4 for radius=1, got F = 12"):
        StructuredGaussian(loc, ld, off.unsqueeze(0), radius=1)  # (C, F, H, W) layout, F = 12
    with pytest.raises(ValueError, match="loc must have shape"):
        StructuredGaussian(loc[0], ld[0], off[0], radius=2)
    for name, pos in (("loc", 0), ("log_diag", 1), ("off_diag", 2)):
        args = [loc.clone(), ld.clone(), off.clone()]
        args[pos].view(-1)[3] = float("nan") if pos != 2 else float("inf")
        with pytest.raises(ValueError, match=f"{name} contains NaN or inf"):
            StructuredGaussian(*args, radius=2)
    with pytest.raises(ValueError, match="log_diag must lie within"):
        StructuredGaussian(loc.float(), 50 + ld.float(), off.float(), radius=2)  # exp(100) > float32 max
    with pytest.raises(TypeError, match="loc must be a torch.Tensor"):
        StructuredGaussian(loc.numpy(), ld, off, radius=2)
    with pytest.raises(TypeError, match="log_diag must be a real floating"):
        StructuredGaussian(loc, ld.long(), off, radius=2)
    with pytest.raises(TypeError, match="off_diag must have loc's dtype"):
        StructuredGaussian(loc, ld, off.float(), radius=2)
    with pytest.raises(TypeError, match="radius must be an int"):
        StructuredGaussian(loc, ld, off, radius=2.0)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        StructuredGaussian(loc, ld, off, radius=-1)
    with pytest.raises(ValueError, match="solver must be one of"):
        StructuredGaussian(loc, ld, off, radius=2, solver="cholmod")


def test_ill_conditioned_factor_raises_instead_of_returning_inf():
    # Weights 1e3 x the diagonal along a 400-pixel row: back-substitution grows like 1e3^400.
    h, w = 1, 400
    d = StructuredGaussian(torch.zeros(1, h, w, dtype=DT), torch.zeros(1, h, w, dtype=DT),
                           torch.full((4, h, w), 1e3, dtype=DT), radius=1)
    with pytest.raises(FloatingPointError, match="ill-conditioned"):
        d.sample((2,))


def test_bad_method_arguments():
    d = _dist((2,), 1, 5, 5, r=1)
    with pytest.raises(ValueError, match="u must have shape"):
        d.transform_noise(torch.zeros(3, 1, 5, 5, dtype=DT))  # missing the batch dimension
    with pytest.raises(ValueError, match="v must have shape"):
        d.precision_matvec(torch.zeros(2, 1, 4, 5, dtype=DT))
    with pytest.raises(ValueError, match="b must have shape"):
        d.solve_precision(torch.zeros(1, 5, 5, dtype=DT))
    with pytest.raises(ValueError, match="outside the event shape"):
        d.correlation_map((0, 5, 0))
    with pytest.raises(TypeError, match="pixel must be a tuple of ints"):
        d.correlation_map((0, 1.5, 0))
    with pytest.raises(TypeError, match="num_samples must be an int"):
        d.marginal_variance(num_samples=10.0)
    with pytest.raises(ValueError):
        d.log_prob(torch.zeros(2, 1, 4, 4, dtype=DT))


def test_bad_condition_arguments():
    d = _dist((2,), 1, 5, 5, r=1)
    vals = torch.zeros(2, 1, 5, 5, dtype=DT)
    with pytest.raises(TypeError, match="observed_mask must be a bool tensor"):
        d.condition(torch.ones(1, 5, 5), vals)
    with pytest.raises(TypeError, match="observed_mask must be a torch.Tensor"):
        d.condition([[True]], vals)
    with pytest.raises(ValueError, match="observed_mask must have the event shape"):
        d.condition(torch.ones(5, 4, dtype=torch.bool), vals)
    with pytest.raises(ValueError, match=r"values must have shape \(2, 1, 5, 5\)"):
        d.condition(torch.ones(5, 5, dtype=torch.bool), vals[0])  # no silent broadcast
    bad = vals.clone()
    bad[0, 0, 0, 0] = float("nan")
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[0, 0] = True
    with pytest.raises(ValueError, match="values contains NaN or inf entries at observed"):
        d.condition(mask, bad)
    d.condition(~mask, bad)  # NaN at an unobserved pixel is ignored
    cond = d.condition(mask, vals)
    with pytest.raises(ValueError, match="give seed or generator"):
        cond.sample((1,), seed=0, generator=torch.Generator())
