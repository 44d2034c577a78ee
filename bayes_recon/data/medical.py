"""Scanner images: one 2-D slice of a DICOM (pydicom) or NIfTI (nibabel) file.

A reader returns a :class:`MedicalImage`: the slice in physical units (Hounsfield
units for CT, the scanner's units otherwise), the ``[0, 1]`` image the
reconstruction methods work on, and the linear map between the two, so that
results (a reconstruction, a posterior mean and std) can be reported in the
scanner's units again.

Mapping to ``[0, 1]``
    Without a window the slice's own minimum and maximum are mapped to 0 and 1:
    lossless, every value maps back exactly (up to the float32 rounding of the
    image). With ``window=(center, width)`` the values
    ``[center - width/2, center + width/2]`` are mapped to ``[0, 1]`` and values
    outside are clipped; the fraction of clipped pixels is recorded.

Nothing here writes files. pydicom and nibabel are imported when a reader runs,
not when :mod:`bayes_recon.data` is imported.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .files import _LUMA, _existing

__all__ = ["MedicalImage", "read_dicom", "read_nifti", "read_medical", "medical_format",
           "DICOM_SUFFIXES", "NIFTI_SUFFIXES"]

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Which packages let pydicom decode a compressed transfer syntax (pydicom 3 plugins).
_JPEG = "pylibjpeg with pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg), or gdcm"
_JPEG_LS = "pyjpegls (pip install pyjpegls), or pylibjpeg with pylibjpeg-libjpeg, or gdcm"
_J2K = ("pylibjpeg with pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg), "
        "or gdcm")
_DECODERS = {
    "1.2.840.10008.1.2.4.50": _JPEG, "1.2.840.10008.1.2.4.51": _JPEG,
    "1.2.840.10008.1.2.4.57": _JPEG, "1.2.840.10008.1.2.4.70": _JPEG,
    "1.2.840.10008.1.2.4.80": _JPEG_LS, "1.2.840.10008.1.2.4.81": _JPEG_LS,
    "1.2.840.10008.1.2.4.90": _J2K, "1.2.840.10008.1.2.4.91": _J2K,
    "1.2.840.10008.1.2.4.201": _J2K, "1.2.840.10008.1.2.4.202": _J2K,
    "1.2.840.10008.1.2.4.203": _J2K,
}
_NIFTI_SPACE_UNITS = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3}


@dataclass(frozen=True, eq=False)  # arrays inside: identity, not element-wise, equality
class MedicalImage:
    """One 2-D slice of a scanner file, in physical units and mapped to ``[0, 1]``.

    Attributes
    ----------
    image : torch.Tensor
        ``(1, 1, H, W)`` float32 in ``[0, 1]``: what the methods reconstruct.
    values : numpy.ndarray
        ``(H, W)`` float64, the slice in physical units (not windowed).
    units : str
        ``"HU"`` for CT with a modality rescale, ``"scanner units"`` otherwise.
    modality : str or None
        DICOM ``Modality`` (``"CT"``, ``"MR"``, ...); None for NIfTI, which does not
        record it.
    spacing_mm : (float, float) or None
        Pixel spacing (between rows, between columns) in mm; None if the file has none.
    intensity_offset, intensity_scale : float
        ``physical = intensity_offset + intensity_scale * image`` exactly inside the
        window (the window's lower edge and width, or the slice's minimum and range).
    window : (float, float) or None
        ``(center, width)`` used, or None for the min-max mapping.
    clipped_fraction : float
        Fraction of pixels outside the window (0 without a window).
    frame : int or None
        The frame (DICOM multi-frame) or volume (4-D NIfTI) read, 0-based.
    slice : (int, int) or None
        ``(axis, index)`` of a 3-D NIfTI volume; None for 2-D data.
    source : str
        The file.
    format : {"DICOM", "NIfTI"}
    file_shape : tuple of int
        The array shape stored in the file (DICOM: ``(frames, rows, columns[, 3])``
        or ``(rows, columns[, 3])``; NIfTI: nibabel's ``img.shape``).
    info : dict
        Format details for the record: transfer syntax, photometric
        interpretation, rescale, the file's own display window, spacing units.
    """

    image: torch.Tensor
    values: np.ndarray
    units: str
    modality: str | None
    spacing_mm: tuple[float, float] | None
    intensity_offset: float
    intensity_scale: float
    window: tuple[float, float] | None
    clipped_fraction: float
    frame: int | None
    slice: tuple[int, int] | None
    source: str
    format: str = "DICOM"
    file_shape: tuple = ()
    info: dict = field(default_factory=dict)

    def to_physical(self, image):
        """``intensity_offset + intensity_scale * image`` for an image on the ``[0, 1]`` scale.

        Parameters
        ----------
        image : torch.Tensor or array_like
            Any shape (a reconstruction ``(1, 1, H, W)``, a posterior mean, samples).

        Returns
        -------
        torch.Tensor or numpy.ndarray
            Same shape; a floating tensor keeps its dtype and device, anything else
            becomes a float64 array. Outside the window this is the window's edge,
            not the clipped value.
        """
        if isinstance(image, torch.Tensor):
            if not image.is_floating_point():
                raise TypeError(f"image must be a floating-point tensor, got dtype {image.dtype}")
            return image * self.intensity_scale + self.intensity_offset
        arr = _float_array("image", image)
        return self.intensity_offset + self.intensity_scale * arr

    def std_to_physical(self, std):
        """A standard deviation on the ``[0, 1]`` scale in physical units: ``scale * std``.

        Parameters
        ----------
        std : torch.Tensor or array_like
            Any shape, ``>= 0``.

        Returns
        -------
        torch.Tensor or numpy.ndarray
            Same shape; a floating tensor keeps its dtype and device, anything else
            becomes a float64 array.
        """
        if isinstance(std, torch.Tensor):
            if not std.is_floating_point():
                raise TypeError(f"std must be a floating-point tensor, got dtype {std.dtype}")
            if bool((std < 0).any()):
                raise ValueError(f"std must be >= 0, got minimum {float(std.min()):g}")
            return std * self.intensity_scale
        arr = _float_array("std", std)
        if (arr < 0).any():
            raise ValueError(f"std must be >= 0, got minimum {arr.min():g}")
        return self.intensity_scale * arr

    def record(self, shape=None) -> dict:
        """Where the image came from and how it was mapped, JSON-ready (for ``metrics.json``).

        Parameters
        ----------
        shape : (int, int), optional
            The shape the image was resized to; adds ``resized_shape`` and
            ``resized_spacing_mm`` (the spacing times original / new size per axis).
        """
        height, width = self.values.shape
        rec = {
            "source": self.source, "format": self.format, "modality": self.modality,
            "units": self.units, "file_shape": [int(s) for s in self.file_shape],
            "frame": self.frame, "slice": None if self.slice is None else list(self.slice),
            "shape": [int(height), int(width)],
            "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm),
            "mapping": "min-max" if self.window is None else "window",
            "window": None if self.window is None else list(self.window),
            "intensity_offset": self.intensity_offset, "intensity_scale": self.intensity_scale,
            "clipped_fraction": self.clipped_fraction,
            "value_range": [float(self.values.min()), float(self.values.max())],
            **self.info,
        }
        if shape is not None:
            new = tuple(int(s) for s in shape)
            if len(new) != 2 or min(new) < 1:
                raise ValueError(f"shape must be (H, W) with positive sizes, got {shape!r}")
            rec["resized_shape"] = list(new)
            rec["resized_spacing_mm"] = (None if self.spacing_mm is None else
                                         [self.spacing_mm[0] * height / new[0],
                                          self.spacing_mm[1] * width / new[1]])
        return rec


def _float_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tensor or a numeric array, got "
                        f"{type(value).__name__}") from None
    return arr


# ------------------------------------------------------------------ arguments
def _check_window(window):
    if window is None:
        return None
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window (--window CENTER WIDTH) must be (center, width), two "
                         f"numbers, got {window!r}") from None
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise ValueError(f"window (--window CENTER WIDTH) must be (center, width) with "
                         "finite values and width > 0, "
                         f"got ({center:g}, {width:g})")
    return center, width


def _check_index(path: str, name: str, value, count: int, what: str) -> int:
    """``value`` as an int in ``[0, count)``; ``what`` says where ``count`` comes from."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not 0 <= value < count:
        raise ValueError(f"{path}: {name} {value} is out of range: {what} "
                         f"(valid: 0 to {count - 1})")
    return value


def medical_format(path) -> str | None:
    """``"DICOM"``, ``"NIfTI"`` or None, from the file name.

    ``.dcm``/``.dicom`` and ``.nii``/``.nii.gz`` (any case); a file with none of
    the other image suffixes is also DICOM when it carries the ``DICM`` marker at
    byte 128 (scanners often write DICOM files without a suffix).
    """
    path = os.fspath(path)
    name = os.path.basename(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "NIfTI"
    if name.endswith(DICOM_SUFFIXES):
        return "DICOM"
    from .files import IMAGE_SUFFIXES

    if not name.endswith(IMAGE_SUFFIXES) and os.path.isfile(path):
        with open(path, "rb") as fh:
            head = fh.read(132)
        if head[128:132] == b"DICM":
            return "DICOM"
    return None


# ------------------------------------------------------------------ mapping
def _build(path, values, window, units, modality, spacing, frame, slc, fmt, file_shape,
           info, what) -> MedicalImage:
    """The ``[0, 1]`` image of ``values`` ``(H, W)`` float64, and the record around it."""
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ValueError(f"{path}: {what} has {bad} NaN or inf values of {values.size}")
    if window is None:
        lo, hi = float(values.min()), float(values.max())
        if hi == lo:
            raise ValueError(f"{path}: {what} is constant ({lo:g} {units}); a min-max mapping "
                             "to [0, 1] needs a range: give window=(center, width) "
                             "(--window CENTER WIDTH)")
        offset, scale, clipped = lo, hi - lo, 0.0
        grey = (values - lo) / scale
    else:
        center, width = window
        offset, scale = center - width / 2, width
        clipped = float(np.mean((values < offset) | (values > center + width / 2)))
        grey = (values - offset) / scale
    # float32 rounding can step a hair outside [0, 1]; the clip also applies the window.
    image = torch.from_numpy(np.clip(grey, 0.0, 1.0).astype(np.float32))[None, None]
    return MedicalImage(image=image, values=values, units=units, modality=modality,
                        spacing_mm=spacing, intensity_offset=float(offset),
                        intensity_scale=float(scale), window=window, clipped_fraction=clipped,
                        frame=frame, slice=slc, source=path, format=fmt,
                        file_shape=tuple(int(s) for s in file_shape), info=info)


# ------------------------------------------------------------------ DICOM
def _read_dataset(path: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:  # no preamble / file meta (older files): parse the elements
        try:
            ds = pydicom.dcmread(path, force=True)
            ok = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
        except Exception:
            ok = False
        if not ok:  # forced parsing accepts any bytes; real DICOM has these elements
            raise ValueError(f"{path} is not a DICOM file: no 'DICM' header and no DICOM "
                             "elements (SOP Class UID, Rows, Columns)") from None
    except Exception as err:  # pydicom raises many kinds on corrupt headers
        raise ValueError(f"{path} is not a readable DICOM file: {type(err).__name__}: "
                         f"{err}") from None
    if "TransferSyntaxUID" not in ds.file_meta and "PixelData" in ds:
        try:
            native = not ds["PixelData"].is_undefined_length
        except Exception:
            native = False
        if native:
            # Native (uncompressed) pixel data: the encoding detected while parsing is
            # the transfer syntax.
            from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian,
                                     ImplicitVRLittleEndian)

            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                              ExplicitVRLittleEndian if little else
                                              ExplicitVRBigEndian)
    return ds


def _functional_group(ds, frame: int, sequence: str):
    """The item of ``sequence`` for ``frame`` in an enhanced multi-frame file, or None."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame),
                          ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and index < len(items) and items[index].get(sequence):
            return items[index].get(sequence)[0]
    return None


def _dicom_spacing(ds, frame: int, info: dict):
    source = None
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        if ds.get(name) is not None:
            source, value = name, ds.get(name)
            break
    else:
        item = _functional_group(ds, frame, "PixelMeasuresSequence")
        if item is not None and item.get("PixelSpacing") is not None:
            source, value = "PixelMeasuresSequence.PixelSpacing", item.get("PixelSpacing")
    if source is None:
        return None
    try:
        spacing = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
        info["spacing_note"] = f"{source} {value!r} unreadable; spacing not recorded"
        return None
    info["spacing_source"] = source
    return spacing


def _decode(path: str, ds, frame):
    from pydicom.pixels import pixel_array

    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        return pixel_array(ds, index=frame)
    except (RuntimeError, NotImplementedError) as err:
        # pydicom raises RuntimeError when no installed plugin decodes the syntax.
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if syntax is not None and syntax.is_compressed:
            plugin = _DECODERS.get(str(syntax), "a pydicom pixel-data plugin for it")
            raise ValueError(f"{path}: pixel data compressed with transfer syntax "
                             f"'{syntax.name}' ({syntax}) cannot be decoded with the installed "
                             f"packages; to decode it install {plugin}. pydicom: {first}") from None
        raise ValueError(f"{path}: cannot decode the pixel data: {first}") from None
    except (ValueError, AttributeError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{path}: corrupt or inconsistent pixel data: {type(err).__name__}: "
                         f"{err}") from None


def read_dicom(path, window=None, frame=None) -> MedicalImage:
    """Read one 2-D DICOM image in physical units through pydicom.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM file (with or without the ``DICM`` file-meta header).
    window : (float, float), optional
        ``(center, width)`` in physical units (e.g. ``(40, 400)`` for a soft-tissue
        CT window): ``[center - width/2, center + width/2]`` is mapped to ``[0, 1]``,
        values outside are clipped (their fraction is recorded). Default: the
        image's own min-max, lossless.
    frame : int, optional
        0-based frame of a multi-frame file; required when the file has more than
        one frame, refused for a single-frame file other than ``frame=0``.

    Returns
    -------
    MedicalImage
        ``values`` ``(rows, columns)`` float64: CT in Hounsfield units
        (``pixel * RescaleSlope + RescaleIntercept`` or the Modality LUT, through
        ``pydicom.pixels.apply_modality_lut``; enhanced multi-frame files take the
        frame's Pixel Value Transformation), other modalities in scanner units (the
        rescale applied if present). RGB and YBR images become grey with the BT.709
        luma (as :func:`~bayes_recon.data.load_image`), palette colour through its
        lookup table first. ``spacing_mm`` from ``PixelSpacing``, else
        ``ImagerPixelSpacing``, else the enhanced Pixel Measures; None if absent.
        ``image`` ``(1, 1, rows, columns)`` in ``[0, 1]``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a DICOM file; no pixel data (e.g. an RT plan); a compressed transfer
        syntax no installed plugin decodes (named, with the plugin to install);
        ``frame`` missing or out of range for a multi-frame file; NaN/inf values;
        a constant image without a window; a bad ``window``. Messages name the file.

    Examples
    --------
    >>> import pydicom.examples
    >>> from bayes_recon.data import read_dicom
    >>> ct = read_dicom(pydicom.examples.get_path("ct"))
    >>> ct.image.shape, ct.units, ct.spacing_mm
    (torch.Size([1, 1, 128, 128]), 'HU', (0.661468, 0.661468))
    >>> bool(abs(ct.to_physical(ct.image[0, 0].double()).numpy() - ct.values).max() < 1e-3)
    True
    >>> soft = read_dicom(pydicom.examples.get_path("ct"), window=(40, 400))
    >>> soft.intensity_offset, soft.intensity_scale
    (-160.0, 400.0)
    """
    path = _existing(path)
    window = _check_window(window)
    ds = _read_dataset(path)
    if not any(tag in ds for tag in _PIXEL_TAGS):
        kind = ds.get("Modality") or ds.get("SOPClassUID", "unknown SOP class")
        raise ValueError(f"{path}: the DICOM file holds no pixel data ({kind}); expected an "
                         "image (CT, MR, ...)")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: unreadable NumberOfFrames "
                         f"{ds.get('NumberOfFrames')!r}") from None
    if frames > 1 and frame is None:
        raise ValueError(f"{path} holds {frames} frames; choose one with frame= "
                         f"(--frame N on the command line), 0 to {frames - 1}")
    if frame is not None:
        frame = _check_index(path, "frame", frame, frames,
                             f"the file holds {frames} frame{'s' * (frames > 1)}")
    index = frame if frames > 1 else None
    arr = _decode(path, ds, index)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel") or 1)
    info = {"transfer_syntax": None if syntax is None else f"{syntax.name} ({syntax})",
            "photometric_interpretation": photometric, "number_of_frames": frames}
    modality = ds.get("Modality")
    modality = None if modality is None else str(modality)
    units = "scanner units"
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    if samples == 1 and photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)  # indices -> RGB, then grey below
        except (ValueError, AttributeError, KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{path}: unreadable palette colour lookup table: "
                             f"{type(err).__name__}: {err}") from None
    if arr.ndim == 3 and arr.shape[-1] == 3:
        values = arr.astype(np.float64) @ _LUMA
        info["grey"] = "BT.709 luma of the colour image"
    elif arr.ndim == 2:
        lut_source = ds
        if "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds:
            item = _functional_group(ds, frame or 0, "PixelValueTransformationSequence")
            lut_source = item if item is not None else ds
        linear = "RescaleSlope" in lut_source and "RescaleIntercept" in lut_source
        rescaled = linear or "ModalityLUTSequence" in lut_source
        try:
            values = np.asarray(apply_modality_lut(arr, lut_source), dtype=np.float64)
        except (ValueError, AttributeError, KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{path}: unreadable modality rescale / LUT: "
                             f"{type(err).__name__}: {err}") from None
        if linear:
            info["rescale"] = [float(lut_source.RescaleSlope), float(lut_source.RescaleIntercept)]
        elif "ModalityLUTSequence" in lut_source:
            info["rescale"] = "Modality LUT"
        if modality == "CT" and rescaled:
            units = "HU"
        elif modality == "CT":
            info["units_note"] = "CT without a modality rescale: values are the stored pixels"
    else:
        raise ValueError(f"{path}: expected a grey or RGB frame, got pixel array shape "
                         f"{arr.shape} (SamplesPerPixel {samples})")
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        center, width = ds.WindowCenter, ds.WindowWidth
        first = (lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str)
                 else float(v))
        try:
            info["file_window"] = [first(center), first(width)]  # the scanner's display window
        except (TypeError, ValueError, IndexError):
            pass
    file_shape = ((frames,) if frames > 1 else ()) + tuple(arr.shape[:2]) + (
        (3,) if samples == 3 else ())
    what = "the image" if frames == 1 else f"frame {frame}"
    return _build(path, values, window, units, modality, _dicom_spacing(ds, frame or 0, info),
                  frame, None, "DICOM", file_shape, info, what)


# ------------------------------------------------------------------ NIfTI
def read_nifti(path, slice=None, frame=None, window=None) -> MedicalImage:
    """Read one 2-D slice of a NIfTI-1/2 file (``.nii``, ``.nii.gz``) through nibabel.

    Parameters
    ----------
    path : str or os.PathLike
    slice : (int, int), optional
        ``(axis, index)`` of a 3-D volume (0-based, axes of nibabel's array).
        Default: the middle slice along the last spatial axis, ``(2, n // 2)``
        (recorded in ``MedicalImage.slice``). Refused for 2-D images.
    frame : int, optional
        The volume on the 4th axis of a 4-D file (0-based); required when there is
        more than one, refused for 2-D and 3-D files.
    window : (float, float), optional
        ``(center, width)`` as in :func:`read_dicom`; default the slice's min-max.

    Returns
    -------
    MedicalImage
        ``values`` ``(H, W)`` float64 from ``img.get_fdata()`` (``scl_slope`` /
        ``scl_inter`` applied), in scanner units; the two remaining axes in
        nibabel's array order, without re-orientation (for ``slice=(2, k)``:
        rows = array axis 0, columns = axis 1). ``spacing_mm`` from
        ``header.get_zooms()`` for those two axes, converted from the header's
        spatial unit (taken as mm when the header says "unknown"). The whole
        volume is read as float64 (``get_fdata``) before slicing.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a NIfTI-1/2 image (e.g. a CIFTI file), more than 4 axes, ``slice``
        axis or index out of range, ``frame`` missing or out of range, NaN/inf in
        the slice, a constant slice without a window; messages name the file.

    Examples
    --------
    >>> import os, nibabel
    >>> from bayes_recon.data import read_nifti
    >>> path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
    >>> mid = read_nifti(path)                       # (33, 41, 25): middle slice of axis 2
    >>> mid.slice, mid.image.shape, mid.spacing_mm
    ((2, 12), torch.Size([1, 1, 33, 41]), (2.0, 2.0))
    >>> vol = read_nifti(os.path.join(os.path.dirname(path), "functional.nii"), frame=3,
    ...                  slice=(0, 8))               # (17, 21, 3, 20): volume 3, sagittal 8
    >>> vol.values.shape, vol.spacing_mm
    ((21, 3), (4.0, 8.0))
    """
    import nibabel

    path = _existing(path)
    window = _check_window(window)
    try:
        img = nibabel.load(path)
    except Exception as err:  # nibabel raises ImageFileError, gzip/zlib and header errors
        raise ValueError(f"{path} is not a readable NIfTI file: {type(err).__name__}: "
                         f"{err}") from None
    if not isinstance(img, nibabel.Nifti1Image):  # Nifti2Image derives from it
        raise ValueError(f"{path}: expected a NIfTI-1/2 image, nibabel read a "
                         f"{type(img).__name__}")
    file_shape = tuple(int(s) for s in img.shape)
    shape = file_shape
    while len(shape) > 4 and shape[-1] == 1:  # trailing axes of length 1 carry nothing
        shape = shape[:-1]
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"{path}: expected a 2-D, 3-D or 4-D NIfTI image, got shape {file_shape}")
    if len(shape) < 4 and frame is not None:
        raise ValueError(f"{path}: frame= picks a volume of a 4-D file; this file is "
                         f"{len(shape)}-D, shape {file_shape}")
    if len(shape) == 2 and slice is not None:
        raise ValueError(f"{path}: slice= picks a slice of a 3-D volume; this file is 2-D, "
                         f"shape {file_shape}")
    data = np.asarray(img.get_fdata(caching="unchanged"), dtype=np.float64).reshape(shape)
    if len(shape) == 4:
        if shape[3] > 1 and frame is None:
            raise ValueError(f"{path} holds {shape[3]} volumes (shape {file_shape}); choose "
                             f"one with frame= (--frame N on the command line), 0 to "
                             f"{shape[3] - 1}")
        frame = _check_index(path, "frame", 0 if frame is None else frame, shape[3],
                             f"the file holds {shape[3]} volume{'s' * (shape[3] > 1)}")
        data = data[..., frame]
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    unit = img.header.get_xyzt_units()[0]
    info = {"nifti_version": 2 if isinstance(img, nibabel.Nifti2Image) else 1,
            "spacing_unit_in_file": unit if unit != "unknown" else "unknown (taken as mm)"}
    factor = _NIFTI_SPACE_UNITS.get(unit, 1.0)
    if data.ndim == 3:
        if slice is None:
            slc = (2, data.shape[2] // 2)
            info["slice_default"] = "middle of the last axis"
        else:
            try:
                axis, index = slice
            except (TypeError, ValueError):
                raise ValueError(f"slice must be (axis, index), got {slice!r}") from None
            try:
                if isinstance(axis, bool):
                    raise TypeError
                axis = operator.index(axis)
            except TypeError:
                raise TypeError(f"slice axis must be an int, got {type(axis).__name__}") from None
            if not 0 <= axis < 3:
                raise ValueError(f"{path}: slice axis {axis} is out of range; the volume has "
                                 f"axes 0, 1, 2 (shape {data.shape})")
            index = _check_index(path, "slice index", index, data.shape[axis],
                                 f"axis {axis} has length {data.shape[axis]}")
            slc = (axis, index)
        values = np.take(data, slc[1], axis=slc[0])
        plane = [a for a in range(3) if a != slc[0]]
    else:
        slc, values, plane = None, data, [0, 1]
    spacing = tuple(zooms[a] * factor for a in plane) if len(zooms) >= 2 else None
    if spacing is not None and not all(math.isfinite(s) and s > 0 for s in spacing):
        info["spacing_note"] = f"zooms {zooms} not positive; spacing not recorded"
        spacing = None
    what = "the image" if slc is None else f"slice {slc}"
    if frame is not None:
        what += f" of volume {frame}"
    return _build(path, np.ascontiguousarray(values), window, "scanner units", None, spacing,
                  frame, slc, "NIfTI", file_shape, info, what)


def read_medical(path, window=None, frame=None, slice=None) -> MedicalImage:
    """:func:`read_dicom` or :func:`read_nifti`, chosen by :func:`medical_format`.

    Raises
    ------
    ValueError
        A file that is neither, or ``slice`` for a DICOM file (its frames are 2-D:
        choose one with ``frame``).
    """
    path = os.fspath(path)
    kind = medical_format(_existing(path))
    if kind == "NIfTI":
        return read_nifti(path, slice=slice, frame=frame, window=window)
    if kind == "DICOM":
        if slice is not None:
            raise ValueError(f"{path}: slice= (--slice) applies to 3-D NIfTI volumes; a DICOM "
                             "file holds 2-D frames: choose one with frame= (--frame)")
        return read_dicom(path, window=window, frame=frame)
    raise ValueError(f"{path}: not a DICOM ({', '.join(DICOM_SUFFIXES)}) or NIfTI "
                     f"({', '.join(NIFTI_SUFFIXES)}) file")
