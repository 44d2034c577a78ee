"""Generators that follow the data's device (never silently replaced by the global RNG)."""

from __future__ import annotations

import torch

__all__ = ["check_generator", "cpu_generator_from"]


def _same_device(a: torch.device, b: torch.device) -> bool:
    # "cuda" (no index) matches any "cuda:k": an unindexed device means "the current one".
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def check_generator(generator, device, name: str = "generator"):
    """Return ``generator`` unchanged after checking it lives on ``device``.

    A generator on another device would either fail deep inside torch or, worse,
    be silently replaced by the global RNG (an unseeded draw); the contract is
    that generators follow the data's device, so a mismatch is an error.

    Parameters
    ----------
    generator : torch.Generator or None
        None passes through (the global RNG is used).
    device : torch.device or str
        The device of the data the generator will draw for.
    name : str
        Argument name used in the error message.

    Raises
    ------
    TypeError
        ``generator`` is neither None nor a ``torch.Generator``.
    ValueError
        ``generator.device`` differs from ``device``.
    """
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    device = torch.device(device)
    if not _same_device(generator.device, device):
        raise ValueError(
            f"{name} must live on the data's device {device}, got a generator on {generator.device}; "
            f"create it with torch.Generator(device={str(device)!r}) or pass seed= instead"
        )
    return generator


def cpu_generator_from(generator):
    """A CPU generator for host-side sampling code, derived from ``generator`` (never dropped).

    ``None`` stays None and a CPU generator is returned as is (so CPU results are
    unchanged); an accelerator generator seeds a fresh CPU generator with one
    64-bit draw from itself, so the result is still a deterministic function of
    its state.
    """
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)
