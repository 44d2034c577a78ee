"""argparse pieces shared by the ``bayes-recon`` subcommands: option types (argparse names
the option in their errors), the parser class (one-line errors), the help formatter (shows
defaults) and the names the parser offers as choices.

This module is light on purpose (no torch, no package imports): ``bayes-recon --help`` is
built from it without loading the inference stack. The name tuples below mirror
:mod:`bayes_recon.app.methods`, :mod:`bayes_recon.data.problems` and
:mod:`bayes_recon.operators.holdout`, which stay the registries; ``tests/test_new_user_cli.py``
checks that they agree.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["int_at_least", "positive_float", "nonnegative_float", "POS_INT", "NONNEG_INT",
           "CliParser", "DefaultsHelpFormatter", "DeprecatedAlias",
           "CLASSICAL_METHODS", "SUPN_MAP_METHODS", "SUPN_POSTERIOR_METHODS", "DIFFUSION_METHODS", "HVAE_METHODS",
           "DIP_METHODS",
           "GMRF_METHODS", "DENOISER_METHODS", "ALL_METHODS", "PROBLEMS", "HOLDOUT_SCHEMES",
           "DIP_DEFAULTS", "DIP_CALIBRATIONS", "HVAE_DEFAULTS", "temperature_list"]

# Mirrors of the registries (see the module docstring).
CLASSICAL_METHODS = ("fbp", "adjoint", "tikhonov", "tv")
SUPN_MAP_METHODS = ("alternating", "jpmap", "csgm", "svi")
SUPN_POSTERIOR_METHODS = ("nuts", "laplace", "laplace-is")
DIFFUSION_METHODS = ("dps", "diffpir")
HVAE_METHODS = ("pnp-hvae", "hvae-svi")
DIP_METHODS = ("dip", "linearised-dip", "mc-dropout-dip", "fixed-sigma-dip")
GMRF_METHODS = ("gmrf",)
DENOISER_METHODS = ("dae",)
ALL_METHODS = (CLASSICAL_METHODS + SUPN_MAP_METHODS + SUPN_POSTERIOR_METHODS + DIFFUSION_METHODS
               + HVAE_METHODS + DIP_METHODS
               + GMRF_METHODS + DENOISER_METHODS)
PROBLEMS = ("ct", "ct-fan", "mri", "denoise", "deblur", "inpaint", "superres")
HOLDOUT_SCHEMES = ("projection", "spoke", "line", "random")
#: ``HVAEMAPConfig``'s and ``HVAEPosteriorConfig``'s defaults shown in ``--help``.
HVAE_DEFAULTS = {"temperature": 0.95, "max_iterations": 50, "svi_steps": 300}
#: ``LinearisedDIPConfig``'s defaults that the DIP options show in ``--help``.
DIP_DEFAULTS = {"iterations": 300, "lr": 1e-3, "predcp_scale": 20.0, "calibration": "heldout"}
#: ``linearised_dip``'s calibrations (``pipeline.CALIBRATIONS``).
DIP_CALIBRATIONS = ("heldout", "bootstrap", "none")


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


def temperature_list(text: str):
    """argparse type: τ in (0, 1], or comma-separated values (one per latent group) as a tuple."""
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise argparse.ArgumentTypeError(f"temperatures must lie in (0, 1], got {bad}")
    return values[0] if len(values) == 1 else tuple(values)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    value = float(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return value


POS_INT, NONNEG_INT = int_at_least(1), int_at_least(0)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a real default.

    Unlike ``argparse.ArgumentDefaultsHelpFormatter`` it leaves out ``None`` and
    ``False`` defaults (an option's help then says in words what happens without it)
    and help that already states its default, so no help reads "default: None".
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS
                or not action.option_strings or "default" in text):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
        return f"{text} (default: {default})"


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are two lines, not the whole usage.

    ``bayes-recon reconstruct`` has dozens of options; argparse's own error prints
    their usage first, which buries the one line that matters. Subparsers made with
    ``add_subparsers().add_parser`` inherit this class.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\nsee {self.prog} --help\n")


class DeprecatedAlias(argparse.Action):
    """An old option name that still works but says, on stderr, which name replaces it."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated; use "
              f"{self.replacement} (same meaning)", file=sys.stderr)
        setattr(namespace, self.dest, values)
