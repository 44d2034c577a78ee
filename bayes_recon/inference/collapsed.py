"""The collapsed likelihood ``log p(y | z)`` (``x`` marginalised), re-exported from ``models``.

The linear algebra moved to :mod:`bayes_recon.models.marginal` so that the
Pyro program :func:`bayes_recon.models.collapsed_model` (layer 3) can use it;
every name stays importable from here.
"""

from ..models import marginal as _marginal
from ..models.marginal import *  # noqa: F401,F403  (re-exports, listed once in marginal.__all__)

__all__ = list(_marginal.__all__)
