"""Constant tensors of an operator, kept on the CPU and copied once per device (and dtype) of the input.

Operators are built on the CPU and used on whatever device their input lives on;
these caches make the copy once instead of on every call.
"""

from __future__ import annotations

import torch


class CachedBuffer:
    """A float64 CPU tensor converted lazily per ``(device, dtype)`` of the input."""

    def __init__(self, tensor: torch.Tensor):
        self.base = tensor.detach().to(dtype=torch.float64, device="cpu")
        self._cache: dict = {}

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor on ``x.device`` in ``x``'s real dtype."""
        dtype = x.real.dtype if x.is_complex() else x.dtype
        key = (x.device, dtype)
        if key not in self._cache:
            self._cache[key] = self.base.to(device=x.device, dtype=dtype)
        return self._cache[key]


class CachedIndex:
    """An integer index tensor ``(k,)`` kept on the CPU, copied lazily per device of the input."""

    def __init__(self, index: torch.Tensor):
        self.base = index.detach().to(device="cpu")
        self._cache: dict = {}

    def on(self, x: torch.Tensor) -> torch.Tensor:
        """The index on ``x.device``."""
        if x.device not in self._cache:
            self._cache[x.device] = self.base.to(x.device)
        return self._cache[x.device]
