"""Run outputs (JSON, npy, PNG, TIFF, bytes), each written with :func:`bayes_recon._atomic.atomic_write`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .._atomic import atomic_write


def write_json(path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=float).encode()
    return atomic_write(path, lambda fh: fh.write(text))


def write_npy(path, array) -> Path:
    """Write a numpy array (``.npy``), atomically."""
    return atomic_write(path, lambda fh: np.save(fh, np.asarray(array)))


def write_png(path, image, vmin: float | None = None, vmax: float | None = None,
              cmap: str = "gray") -> Path:
    """Write a 2-D array as a PNG (grayscale by default), atomically.

    Values are mapped linearly from ``[vmin, vmax]`` (default: the image's min and
    max) onto the colour map, clipped outside; see :func:`display_range`.
    """
    import matplotlib.pyplot as plt

    image = np.asarray(image, dtype=float)
    if image.ndim == 3:
        image = image[0]
    lo = float(image.min()) if vmin is None else vmin
    hi = float(image.max()) if vmax is None else vmax
    return atomic_write(path, lambda fh: plt.imsave(fh, image, vmin=lo, vmax=max(hi, lo + 1e-12),
                                               cmap=cmap, format="png"))


#: Percentiles of an image's grey-level window in run PNGs: robust to a few extreme
#: pixels (FBP streaks, hot spots) without clipping more than 1 % of the image.
DISPLAY_PERCENTILES = (0.5, 99.5)


def display_range(image, percentiles=DISPLAY_PERCENTILES) -> tuple[float, float]:
    """The grey-level window ``(lo, hi)`` of an image in its own units.

    The ``percentiles`` of its finite values; min–max when those coincide (a
    mostly constant image); ``(v, v + 1)`` for a constant image ``v``, so the
    window is never empty. Images come in any units (a reconstruction in HU, an
    adjoint in detector units), so no fixed [0, 1] window is assumed.
    """
    values = np.asarray(image, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def write_figure(path, fig, dpi: int = 90) -> Path:
    """Save a matplotlib figure as PNG, atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))


def write_tiff(path, image) -> Path:
    """Write a 2-D image as a 32-bit float TIFF, atomically (readable by ImageJ, tifffile)."""
    import tifffile

    array = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {array.shape}")
    buffer = io.BytesIO()  # tifffile wants a named file or a buffer, not a bare descriptor
    tifffile.imwrite(buffer, array, photometric="minisblack")
    data = buffer.getvalue()
    return atomic_write(path, lambda fh: fh.write(data))


def write_text(path, text: str) -> Path:
    """Write UTF-8 text, atomically."""
    data = text.encode()
    return atomic_write(path, lambda fh: fh.write(data))


def write_netcdf(path, idata) -> Path:
    """Write an ``arviz.InferenceData`` as netCDF, atomically.

    netCDF writers need a file name, not a handle, so the temporary file is named.
    """
    return atomic_write(path, lambda tmp: idata.to_netcdf(tmp), by_name=True)
