"""argparse types shared by the ``bayes-recon`` subcommands (argparse names the option in errors)."""

from __future__ import annotations

import argparse

__all__ = ["int_at_least", "positive_float", "nonnegative_float", "POS_INT", "NONNEG_INT"]


def int_at_least(minimum: int):
    """argparse type: an int >= ``minimum`` (argparse names the option in its error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"  # what argparse prints for unparsable text
    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = float(text)
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    value = float(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return value


POS_INT, NONNEG_INT = int_at_least(1), int_at_least(0)
