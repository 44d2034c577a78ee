"""Inference on the generative programs: MAP, posterior sampling, DIP, linearised Laplace.

Every method returns a :class:`Posterior` (or a point estimate), which
``bayes_recon.diagnostics`` turns into ArviZ data and calibration reports.
"""

from .posterior import Posterior

__all__ = ["Posterior"]
