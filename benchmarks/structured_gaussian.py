"""Benchmark: StructuredGaussian log_prob and sampling against image size.

References measured in the same run: a diagonal Gaussian
(``torch.distributions.Normal(...).log_prob(x)`` summed over the image, and its
``rsample``) at every size, and the dense ``MultivariateNormal`` at 32².

Reports, at radius 2 by default:

* ``log_prob`` time of a batch of images (forward, and forward + backward),
  its ratio to the diagonal Gaussian (goal: within 5x);
* the time to draw 16 samples of one image distribution (one sparse triangular
  solve with 16 right-hand sides; goal at 256²: under 100 ms);
* exponents of log-log fits of time against the number of pixels (goal <= 1.1);
* the dense ``MultivariateNormal`` at 32² (precision given; construction
  includes its Cholesky factorisation) for the ratio.

Usage::

    python benchmarks/structured_gaussian.py [--sizes 32 64 128 256] [--radius 2]
        [--batch 16] [--samples 16] [--repeats 7] [--threads 1] [--json PATH]

Prints a markdown table; writes JSON only to the path given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from bayes_recon.distributions import StructuredGaussian, num_offdiag


def _time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _params(batch, size, radius, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, 1, size, size)
    loc = torch.rand(shape, generator=g, dtype=dtype)
    ld = 0.3 * torch.randn(shape, generator=g, dtype=dtype) + 2.0
    off = 0.5 * torch.randn(*batch, num_offdiag(radius), size, size, generator=g, dtype=dtype)
    return loc, ld, off


def _fit_exponent(ns, ts) -> float:
    slope, _ = np.polyfit(np.log(ns), np.log(ts), 1)
    return float(slope)


def run(sizes, radius, batch, samples, repeats, dtype=torch.float32) -> dict:
    rows = []
    for size in sizes:
        loc, ld, off = _params((batch,), size, radius, dtype)
        x = loc + 0.1 * torch.randn_like(loc)
        sg = StructuredGaussian(loc, ld, off, radius=radius, validate_args=False)
        normal = torch.distributions.Normal(loc, torch.exp(-ld), validate_args=False)

        t_sg = _time(lambda: sg.log_prob(x), repeats)
        t_diag = _time(lambda: normal.log_prob(x).sum((-3, -2, -1)), repeats)

        ps = [t.clone().requires_grad_() for t in (loc, ld, off)]
        qs = [t.clone().requires_grad_() for t in (loc, ld)]

        def sg_fb():
            d = StructuredGaussian(*ps, radius=radius, validate_args=False)
            d.log_prob(x).sum().backward()

        def diag_fb():
            n = torch.distributions.Normal(qs[0], torch.exp(-qs[1]), validate_args=False)
            n.log_prob(x).sum().backward()

        t_sg_fb = _time(sg_fb, repeats)
        t_diag_fb = _time(diag_fb, repeats)

        # Sampling: `samples` draws of one image distribution, one solve with many RHS.
        one = StructuredGaussian(loc[0], ld[0], off[0], radius=radius, validate_args=False)
        one_normal = torch.distributions.Normal(loc[0], torch.exp(-ld[0]), validate_args=False)
        t_sample = _time(lambda: one.sample((samples,)), repeats)
        t_sample_diag = _time(lambda: one_normal.sample((samples,)), repeats)
        rows.append(dict(
            size=size, pixels=size * size,
            log_prob_ms=1e3 * t_sg, diag_log_prob_ms=1e3 * t_diag, log_prob_ratio=t_sg / t_diag,
            log_prob_fb_ms=1e3 * t_sg_fb, diag_log_prob_fb_ms=1e3 * t_diag_fb,
            log_prob_fb_ratio=t_sg_fb / t_diag_fb,
            sample_ms=1e3 * t_sample, diag_sample_ms=1e3 * t_sample_diag,
        ))
    ns = [r["pixels"] for r in rows]
    result = dict(
        config=dict(sizes=list(sizes), radius=radius, batch=batch, samples=samples,
                    repeats=repeats, dtype=str(dtype), threads=torch.get_num_threads(),
                    torch=torch.__version__, machine=platform.machine()),
        rows=rows,
    )
    if len(ns) >= 2:
        result["exponents"] = dict(
            log_prob=_fit_exponent(ns, [r["log_prob_ms"] for r in rows]),
            log_prob_fb=_fit_exponent(ns, [r["log_prob_fb_ms"] for r in rows]),
            sample=_fit_exponent(ns, [r["sample_ms"] for r in rows]),
            diag_log_prob=_fit_exponent(ns, [r["diag_log_prob_ms"] for r in rows]),
        )
    result["dense"] = _dense_reference(32, radius, batch, samples, repeats)
    return result


def _dense_reference(size, radius, batch, samples, repeats) -> dict:
    """Dense MultivariateNormal with the same precision at ``size``² (float64 for a stable Cholesky)."""
    loc, ld, off = _params((batch,), size, radius, torch.float64)
    x = loc + 0.1 * torch.randn_like(loc)
    sg = StructuredGaussian(loc, ld, off, radius=radius, validate_args=False)
    prec = sg.to_dense_precision()
    mvn = torch.distributions.MultivariateNormal(loc.flatten(-3), precision_matrix=prec,
                                                 validate_args=False)
    t_build = _time(lambda: torch.distributions.MultivariateNormal(
        loc.flatten(-3), precision_matrix=prec, validate_args=False).scale_tril, repeats)
    t_lp = _time(lambda: mvn.log_prob(x.flatten(-3)), repeats)
    t_sg = _time(lambda: sg.log_prob(x), repeats)
    one = torch.distributions.MultivariateNormal(loc[0].flatten(), precision_matrix=prec[0],
                                                 validate_args=False)
    sg_one = StructuredGaussian(loc[0], ld[0], off[0], radius=radius, validate_args=False)
    t_s = _time(lambda: one.sample((samples,)), repeats)
    t_s_sg = _time(lambda: sg_one.sample((samples,)), repeats)
    return dict(size=size, dtype="float64",
                build_ms=1e3 * t_build, log_prob_ms=1e3 * t_lp, sg_log_prob_ms=1e3 * t_sg,
                log_prob_ratio=t_lp / t_sg, build_plus_log_prob_ratio=(t_build + t_lp) / t_sg,
                sample_ms=1e3 * t_s, sg_sample_ms=1e3 * t_s_sg, sample_ratio=t_s / t_s_sg)


def to_markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [
        f"StructuredGaussian, radius {cfg['radius']}, {cfg['dtype']}, log_prob batch {cfg['batch']}, "
        f"{cfg['samples']} samples per draw, median of {cfg['repeats']}, {cfg['threads']} torch thread(s)",
        "",
        "| size | log_prob ms | diag ms | ratio | log_prob+grad ms | diag+grad ms | ratio "
        f"| sample {cfg['samples']} ms | diag sample ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['size']}² | {r['log_prob_ms']:.3f} | {r['diag_log_prob_ms']:.3f} | "
            f"{r['log_prob_ratio']:.2f}x | {r['log_prob_fb_ms']:.3f} | {r['diag_log_prob_fb_ms']:.3f} | "
            f"{r['log_prob_fb_ratio']:.2f}x | {r['sample_ms']:.2f} | {r['diag_sample_ms']:.3f} |"
        )
    if "exponents" in res:
        e = res["exponents"]
        lines += ["", "log-log fit of time vs pixels (goal <= 1.1): "
                  f"log_prob {e['log_prob']:.2f}, log_prob+grad {e['log_prob_fb']:.2f}, "
                  f"sampling {e['sample']:.2f} (diagonal log_prob {e['diag_log_prob']:.2f})"]
    d = res["dense"]
    lines += [
        "",
        f"Dense MultivariateNormal at {d['size']}² ({d['dtype']}, same precision): "
        f"construction (Cholesky) {d['build_ms']:.1f} ms, log_prob {d['log_prob_ms']:.3f} ms vs "
        f"StructuredGaussian {d['sg_log_prob_ms']:.3f} ms ({d['log_prob_ratio']:.1f}x; "
        f"{d['build_plus_log_prob_ratio']:.0f}x including construction); "
        f"sampling {d['sample_ms']:.2f} ms vs {d['sg_sample_ms']:.2f} ms ({d['sample_ratio']:.1f}x).",
    ]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--radius", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="images per log_prob call")
    p.add_argument("--samples", type=int, default=16, help="samples per sampling call")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable ratios)")
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = run(args.sizes, args.radius, args.batch, args.samples, args.repeats)
    print(to_markdown(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
