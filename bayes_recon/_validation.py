"""Argument checks shared by every layer: clear errors that name the argument."""

from __future__ import annotations

from typing import Sequence

import torch


def check_tensor(
    name: str,
    value,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
    allow_complex: bool = False,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of the expected shape with finite entries.

    ``shape`` may hold ``None`` for a free dimension (e.g. the batch).
    Raises ``TypeError`` for a non-tensor or a wrong dtype, ``ValueError`` for a
    wrong shape or non-finite entries; the message names ``name``.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex() and not allow_complex:
        raise TypeError(f"{name} must be a real floating tensor, got dtype {value.dtype}")
    if not (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}"
        )
    if shape is not None:
        expected = tuple(shape)
        got = tuple(value.shape)
        if len(got) != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, got)
        ):
            pretty = "(" + ", ".join("B" if e is None else str(e) for e in expected) + ")"
            raise ValueError(f"{name} must have shape {pretty}, got {got}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf entries")
    return value


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Check a positive finite scalar; returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = (v >= 0 if allow_zero else v > 0) and v == v and v != float("inf")
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {v}")
    return v


def check_probability(name: str, value) -> float:
    """Check a number strictly between 0 and 1; returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")
    return float(value)


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """Check an integer (not bool) with an optional lower bound."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def image_size_pair(name: str, image_size) -> tuple[int, int]:
    """Normalise an ``int`` or ``(H, W)`` image size."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(f"{name} must be an int or an (H, W) pair of ints, got {image_size!r}")
    if min(size) < 1:
        raise ValueError(f"{name} must be positive, got {image_size!r}")
    return size
