"""Timing ratios against references measured in the same run (``bayes-recon benchmark``).

Each measurement times one ``bayes_recon`` operation and a reference doing the
same job on the same input, and reports ``ratio = time(this) / time(reference)``
(below 1: faster than the reference). Absolute times depend on the machine and
its load; ratios from one run are what to compare. Nothing here writes files
or changes global state (thread counts, seeds, default dtype).

* CT forward: :class:`~bayes_recon.operators.ParallelBeamCT` on one image vs
  ``skimage.transform.radon`` on the same image and angles (``circle=True``,
  ``N`` detectors: the same geometry).
* Structured log-density: :meth:`StructuredGaussian.log_prob` (stencil radius
  2) vs a diagonal ``torch.distributions.Normal`` on the same images.
* MAP vs TV (optional): ``map_estimate(method="jpmap")`` with the shipped
  ``digits-supn`` prior vs Chambolle–Pock TV on 28×28 CT of a test digit.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .._validation import check_int

__all__ = ["BenchmarkConfig", "Measurement", "median_time", "ct_forward_vs_radon",
           "log_prob_vs_diagonal", "jpmap_vs_tv", "run_benchmarks", "markdown_table"]


@dataclass
class BenchmarkConfig:
    """Problem sizes and repeats; :meth:`quick` gives a run of a few seconds.

    Attributes
    ----------
    ct_size, ct_angles : int
        CT image side and number of angles.
    logprob_size, logprob_batch : int
        Image side and batch of the log-density comparison.
    repeats : int
        Timed calls per measurement (median reported, after one warm-up).
    map_vs_tv : bool
        Include the (slower) jpmap-vs-TV comparison.
    map_iterations, map_z_steps, tv_iterations : int
        Work done by that comparison (reported alongside the ratio).
    """

    ct_size: int = 128
    ct_angles: int = 180
    logprob_size: int = 128
    logprob_batch: int = 16
    repeats: int = 7
    map_vs_tv: bool = True
    map_iterations: int = 30
    map_z_steps: int = 20
    tv_iterations: int = 1000

    def __post_init__(self):
        for name in ("ct_size", "ct_angles", "logprob_size", "logprob_batch", "repeats",
                     "map_iterations", "map_z_steps", "tv_iterations"):
            check_int(name, getattr(self, name), minimum=1)

    @classmethod
    def quick(cls) -> "BenchmarkConfig":
        """Small sizes, few repeats and a short MAP (well under 30 s on one core)."""
        return cls(ct_size=64, ct_angles=60, logprob_size=64, logprob_batch=8, repeats=3,
                   map_iterations=3, map_z_steps=10, tv_iterations=300)


@dataclass
class Measurement:
    """One row: this operation, its reference, their median times (s) and the ratio."""

    name: str
    this: str
    reference: str
    this_s: float
    reference_s: float
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``this_s / reference_s``."""
        return self.this_s / self.reference_s

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    check_int("repeats", repeats, minimum=1)
    for _ in range(warmup):  # first call: caches (CSR conversion), first-touch allocation
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ct_forward_vs_radon(size: int, angles: int, repeats: int) -> Measurement:
    """``ParallelBeamCT(size, angles, n_detectors=size)`` on one Shepp–Logan image vs skimage radon."""
    from skimage.transform import radon

    from ..data import shepp_logan
    from ..operators import ParallelBeamCT

    op = ParallelBeamCT(size, angles, n_detectors=size)
    x = shepp_logan(size)
    img = x[0, 0].numpy().astype(np.float64)
    theta = np.rad2deg(op.angles)
    with torch.no_grad():
        this = median_time(lambda: op(x), repeats)
    ref = median_time(lambda: radon(img, theta=theta, circle=True), repeats)
    return Measurement("CT forward, one image", f"ParallelBeamCT {size}x{size}, {angles} angles",
                       "skimage.transform.radon", this, ref,
                       {"size": size, "angles": angles, "detectors": op.n_detectors,
                        "dtype": str(x.dtype)})


def log_prob_vs_diagonal(size: int, batch: int, repeats: int, radius: int = 2,
                         seed: int = 0) -> Measurement:
    """``StructuredGaussian.log_prob`` vs ``Normal(loc, scale).log_prob(x).sum`` on the same images."""
    from ..distributions import StructuredGaussian, num_offdiag

    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 1, size, size)
    loc = torch.rand(shape, generator=gen)
    log_diag = 0.1 * torch.randn(shape, generator=gen)
    off = 0.05 * torch.randn(batch, num_offdiag(radius), size, size, generator=gen)
    x = torch.rand(shape, generator=gen)
    sg = StructuredGaussian(loc, log_diag, off, radius=radius)
    diag = torch.distributions.Normal(loc, torch.exp(-log_diag))  # precision exp(2 log_diag)
    with torch.no_grad():
        this = median_time(lambda: sg.log_prob(x), repeats)
        ref = median_time(lambda: diag.log_prob(x).sum((-3, -2, -1)), repeats)
    return Measurement("log-density, batch", f"StructuredGaussian.log_prob (radius {radius})",
                       "diagonal Normal.log_prob", this, ref,
                       {"size": size, "batch": batch, "radius": radius,
                        "offdiag_channels": num_offdiag(radius)})


def jpmap_vs_tv(map_iterations: int, z_steps: int, tv_iterations: int, angles: int = 20,
                seed: int = 0) -> Measurement:
    """jpmap MAP (``digits-supn``) vs TV on 28×28 CT of test digit 0, 5 % noise; one run each.

    Both PSNRs are reported in ``details`` (TV weight ``0.2 · σ · ||A||``).
    """
    from ..data import digits, simulate
    from ..inference import MAPConfig, map_estimate
    from ..metrics import psnr
    from ..models import load_pretrained
    from ..operators import ParallelBeamCT, tv_reconstruction

    prior = load_pretrained("digits-supn")
    op = ParallelBeamCT(28, angles)
    truth = digits("test", size=28)[:1]
    meas = simulate(op, truth, relative_noise=0.05, seed=seed)
    cfg = MAPConfig(max_iterations=map_iterations, z_steps=z_steps, seed=seed)
    start = time.perf_counter()
    rec = map_estimate(meas.y, op, prior, meas.noise_std, method="jpmap", config=cfg,
                       progress=False)
    this = time.perf_counter() - start
    start = time.perf_counter()
    x_tv = tv_reconstruction(op, meas.y, weight=0.2 * meas.noise_std * op.norm(),
                             iterations=tv_iterations, progress=False)
    ref = time.perf_counter() - start
    return Measurement("MAP vs TV, 28x28 CT", f"jpmap ({len(rec.objective_history)} outer "
                       f"iterations)", f"TV ({tv_iterations} iterations)", this, ref,
                       {"angles": angles, "jpmap_psnr": float(psnr(truth, rec.x, data_range=1.0)[0]),
                        "tv_psnr": float(psnr(truth, x_tv, data_range=1.0)[0]),
                        "jpmap_converged": rec.converged})


def run_benchmarks(config: BenchmarkConfig | None = None) -> dict:
    """Run every measurement of ``config``; returns a JSON-ready dict.

    Keys: ``config``, ``environment`` (torch version, threads, platform),
    ``measurements`` (list of :meth:`Measurement.to_dict`) and ``seconds``.
    """
    cfg = BenchmarkConfig() if config is None else config
    if not isinstance(cfg, BenchmarkConfig):
        raise TypeError(f"config must be a BenchmarkConfig, got {type(cfg).__name__}")
    start = time.perf_counter()
    rows = [ct_forward_vs_radon(cfg.ct_size, cfg.ct_angles, cfg.repeats),
            log_prob_vs_diagonal(cfg.logprob_size, cfg.logprob_batch, cfg.repeats)]
    if cfg.map_vs_tv:
        rows.append(jpmap_vs_tv(cfg.map_iterations, cfg.map_z_steps, cfg.tv_iterations))
    for r in rows:
        if not (math.isfinite(r.ratio) and r.ratio > 0):
            raise RuntimeError(f"benchmark {r.name!r} gave a non-positive ratio {r.ratio}")
    return {
        "config": asdict(cfg),
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "python": platform.python_version(), "machine": platform.machine()},
        "measurements": [r.to_dict() for r in rows],
        "seconds": time.perf_counter() - start,
    }


def markdown_table(results: dict) -> str:
    """The measurements of :func:`run_benchmarks` as a markdown table."""
    env = results["environment"]
    lines = [f"bayes_recon timing ratios (torch {env['torch']}, {env['threads']} threads); "
             "ratio = this / reference, below 1 is faster", "",
             "| measurement | this | ms | reference | ms | ratio |",
             "|---|---|---|---|---|---|"]
    for m in results["measurements"]:
        lines.append(f"| {m['name']} | {m['this']} | {1e3 * m['this_s']:.3f} | {m['reference']} "
                     f"| {1e3 * m['reference_s']:.3f} | {m['ratio']:.3g} |")
    for m in results["measurements"]:
        d = m["details"]
        if "jpmap_psnr" in d:  # a speed ratio means little without the quality it buys
            lines += ["", f"{m['name']}: PSNR jpmap {d['jpmap_psnr']:.2f} dB, "
                      f"TV {d['tv_psnr']:.2f} dB"]
    return "\n".join(lines)
