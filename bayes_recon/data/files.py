"""The user's own data from files: images (PNG, TIFF, NPY; DICOM and NIfTI through
:mod:`bayes_recon.data.medical`) and measurements (NPY, NPZ, HDF5).

Readers only; they return tensors in the shapes the operators take, and raise a
``ValueError`` naming the file for anything they cannot read faithfully.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".jpg", ".jpeg", ".bmp")
MEASUREMENT_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".hdf")
# ITU-R BT.709 luma, as scikit-image's rgb2gray.
_LUMA = np.array([0.2125, 0.7154, 0.0721])


def _existing(path) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file {path} does not exist")
    return path


def _read_image_array(path: str) -> np.ndarray:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported image type {suffix!r}; expected one of "
                         f"{list(IMAGE_SUFFIXES)}, DICOM (.dcm, .dicom) or NIfTI "
                         "(.nii, .nii.gz)")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            if img.mode == "P":  # palette: expand to the colours it stands for
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            return np.asarray(img)
    except (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable {suffix[1:].upper()} image: "
                         f"{type(err).__name__}: {err}") from None


def _to_grey(path: str, arr: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|2|3|4)`` -> ``(H, W)`` in the array's own scale."""
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        alpha = arr[..., -1]
        opaque = np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1
        if not np.all(alpha == opaque):
            raise ValueError(
                f"{path} has a transparent alpha channel (shape {arr.shape}); flatten it "
                "onto a background first (e.g. PIL: Image.alpha_composite), or save it "
                "without alpha")
        arr = arr[..., :-1]  # fully opaque: the alpha channel carries nothing
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return arr.astype(np.float64) @ _LUMA
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) "
                         f"image, got shape {arr.shape}")
    return arr


def _resize(grey: np.ndarray, size) -> np.ndarray:
    """``(H, W)`` float64 resized to ``size`` (anti-aliased when shrinking), clipped to [0, 1]."""
    if size is not None:
        from skimage.transform import resize

        from .._validation import image_size_pair

        shape = image_size_pair("size", size)
        if shape != grey.shape:
            grey = resize(grey, shape, order=1, anti_aliasing=shape[0] < grey.shape[0]
                          or shape[1] < grey.shape[1], mode="reflect")
    return np.clip(grey, 0.0, 1.0)


def load_medical(path, size=None, *, window=None, frame=None, slice=None):
    """A DICOM or NIfTI slice as ``load_image`` returns it, and its :class:`MedicalImage`.

    Parameters are those of :func:`load_image`. Returns ``(image, medical)``:
    ``image`` ``(1, 1, H, W)`` float32 in ``[0, 1]`` at ``size``, ``medical`` the
    slice at its own size; ``medical.to_physical(image)`` is the resized image in
    physical units (the map is linear, so resizing does not change it), and
    ``medical.record(shape=image.shape[-2:])`` holds the resized pixel spacing.
    """
    from .medical import read_medical

    medical = read_medical(path, window=window, frame=frame, slice=slice)
    grey = _resize(medical.image[0, 0].numpy().astype(np.float64), size)
    return torch.from_numpy(grey.astype(np.float32))[None, None], medical


def load_image(path, size=None, *, window=None, frame=None, slice=None) -> torch.Tensor:
    """Read an image file as a grey float image in ``[0, 1]``.

    Parameters
    ----------
    path : str or os.PathLike
        PNG, TIFF, NPY (also JPEG, BMP). Grey ``(H, W)``; RGB ``(H, W, 3)`` is
        turned grey with the BT.709 luma weights (as ``skimage.color.rgb2gray``);
        an alpha channel is dropped when fully opaque and refused otherwise.
        DICOM (``.dcm``, ``.dicom``, or any file with the ``DICM`` marker) and
        NIfTI (``.nii``, ``.nii.gz``) are read with
        :func:`~bayes_recon.data.read_dicom` / :func:`~bayes_recon.data.read_nifti`
        (values in physical units, mapped to ``[0, 1]`` as described there).
    size : int or (H, W), optional
        Resize to ``(size, size)`` (or ``(H, W)``) with anti-aliasing
        (``skimage.transform.resize``, linear interpolation after a Gaussian
        low-pass when shrinking). The aspect ratio follows ``size``.
    window : (float, float), optional
        DICOM/NIfTI only: ``(center, width)`` in physical units mapped to
        ``[0, 1]``; default the slice's own min-max (lossless).
    frame : int, optional
        DICOM/NIfTI only: the frame of a multi-frame DICOM, the volume of a 4-D NIfTI.
    slice : (int, int), optional
        NIfTI only: ``(axis, index)`` of a 3-D volume; default the middle slice of
        the last axis.

    Returns
    -------
    torch.Tensor
        ``(1, 1, H, W)`` float32 in ``[0, 1]``. Integer (and boolean) images are
        min-max scaled, ``(x - min) / (max - min)`` over the grey values: the data's
        own range, not the type's (a 16-bit file of raw CT values 128-2191 spans
        [0, 1], not 0.002-0.033), so every file's full contrast is used the same way
        and a PSNR at ``data_range=1`` means the same; 16-bit depth keeps its
        precision. Float images already in ``[0, 1]`` are kept, other float images
        are min-max scaled too. :func:`load_image_with_record` also returns the map
        back (``value = intensity_offset + intensity_scale * image``); for the
        physical units of a DICOM/NIfTI file use
        :func:`~bayes_recon.data.read_medical` (or :func:`load_medical`).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Unreadable or corrupt file, an unsupported type or shape, a
        transparent alpha channel, NaN/inf, a constant integer image or a
        constant float image outside ``[0, 1]`` (nothing to scale by),
        ``window``/``frame``/``slice`` for a file that is not DICOM or NIfTI; the
        message names the file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from bayes_recon.data import load_image
    >>> path = os.path.join(tempfile.mkdtemp(), "img.npy")
    >>> np.save(path, np.linspace(0, 1, 64 * 48).reshape(64, 48))
    >>> x = load_image(path, size=32)
    >>> x.shape, x.dtype
    (torch.Size([1, 1, 32, 32]), torch.float32)
    >>> np.save(path, np.array([[128, 600], [1200, 2191]], dtype=np.int16))
    >>> load_image(path)[0, 0]  # the data's own range, not int16's 32767
    tensor([[0.0000, 0.2288],
            [0.5196, 1.0000]])
    """
    path = _existing(path)
    from .medical import medical_format

    if medical_format(path) is not None:
        return load_medical(path, size, window=window, frame=frame, slice=slice)[0]
    return load_image_with_record(path, size, window=window, frame=frame, slice=slice)[0]


def load_image_with_record(path, size=None, *, window=None, frame=None,
                           slice=None) -> tuple[torch.Tensor, dict]:
    """:func:`load_image` and how the file's values were mapped to ``[0, 1]``.

    Returns
    -------
    image : torch.Tensor
        ``(1, 1, H, W)`` float32 in ``[0, 1]``, as :func:`load_image`.
    record : dict
        JSON-ready: ``source``, ``dtype``, ``file_shape`` (as stored), ``shape``
        (grey, before resizing), ``resized_shape`` (None without ``size``),
        ``mapping`` (``"min-max"`` or ``"identity"`` for a float image already in
        ``[0, 1]``), ``intensity_offset`` and ``intensity_scale`` with
        ``grey value = intensity_offset + intensity_scale * image`` (grey value: the
        stored value, or for RGB its BT.709 luma in the stored scale), and
        ``value_range``. For DICOM/NIfTI the record is
        :meth:`~bayes_recon.data.MedicalImage.record`.
    """
    path = _existing(path)
    from .medical import medical_format

    if medical_format(path) is not None:
        image, medical = load_medical(path, size, window=window, frame=frame, slice=slice)
        return image, medical.record(shape=tuple(image.shape[-2:]))
    given = [name for name, value in (("window", window), ("frame", frame), ("slice", slice))
             if value is not None]
    if given:
        raise ValueError(f"{path}: {', '.join(n + '=' for n in given)} only for DICOM (.dcm, "
                         ".dicom) and NIfTI (.nii, .nii.gz) files")
    arr = _read_image_array(path)
    if arr.size == 0:
        raise ValueError(f"{path} is not a readable image: no pixel data (shape {arr.shape})")
    if arr.dtype == object or not (arr.dtype.kind in "uifb"):
        raise ValueError(f"{path}: expected a numeric image, got dtype {arr.dtype}")
    integer = arr.dtype.kind in "uib"
    grey = _to_grey(path, arr).astype(np.float64)
    if not np.isfinite(grey).all():
        raise ValueError(f"{path} contains NaN or inf values")
    lo, hi = float(grey.min()), float(grey.max())
    if integer or lo < 0 or hi > 1:
        if hi == lo:
            kind = "integer" if integer else "float"
            where = "" if integer else " outside [0, 1]"
            raise ValueError(f"{path}: a constant {kind} image{where} (every pixel {lo:g}) "
                             "cannot be scaled to [0, 1] by its own range")
        offset, scale, mapping = lo, hi - lo, "min-max"
        grey = (grey - lo) / scale
    else:  # a float image already in [0, 1]: its values are kept
        offset, scale, mapping = 0.0, 1.0, "identity"
    shape = [int(s) for s in grey.shape]
    grey = _resize(grey, size)
    record = {"source": path, "dtype": str(arr.dtype), "file_shape": [int(s) for s in arr.shape],
              "shape": shape,
              "resized_shape": None if size is None else [int(s) for s in grey.shape],
              "mapping": mapping, "intensity_offset": offset, "intensity_scale": scale,
              "value_range": [lo, hi]}
    return torch.from_numpy(grey.astype(np.float32))[None, None], record


def _hdf5_datasets(handle) -> list[str]:
    import h5py

    names: list[str] = []
    handle.visititems(lambda name, obj: names.append("/" + name)
                      if isinstance(obj, h5py.Dataset) else None)
    return names


def _read_measurement_array(path: str, dataset) -> np.ndarray:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MEASUREMENT_SUFFIXES:
        raise ValueError(f"{path}: unsupported measurement type {suffix!r}; expected one of "
                         f"{list(MEASUREMENT_SUFFIXES)}")
    if suffix == ".npy":
        if dataset is not None:
            raise ValueError(f"{path}: dataset={dataset!r} is only for .npz and HDF5 files")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"{path} is not a readable .npy array: {err}") from None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.keys()}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} is not a readable .npz archive: {err}") from None
        keys = list(arrays)
        if dataset is None and len(keys) != 1:
            raise ValueError(f"{path} holds arrays {keys}; choose one with dataset=")
        key = keys[0] if dataset is None else dataset
        if key not in arrays:
            raise ValueError(f"{path} has no array {key!r}; it holds {keys}")
        return arrays[key]
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            names = _hdf5_datasets(handle)
            if dataset is None:
                if len(names) != 1:
                    raise ValueError(f"{path} holds datasets {names}; choose one with "
                                     "dataset=")
                dataset = names[0]
            if dataset not in handle or not isinstance(handle[dataset], h5py.Dataset):
                raise ValueError(f"{path} has no dataset {dataset!r}; it holds {names}")
            arr = handle[dataset][()]
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file: {err}") from None
    fields = arr.dtype.names or ()
    for re_name, im_name in (("r", "i"), ("real", "imag"), ("re", "im")):
        if set(fields) == {re_name, im_name}:  # complex stored as a compound type
            return arr[re_name] + 1j * arr[im_name]
    return np.asarray(arr)


def strip_leading_ones(shape) -> tuple:
    """``shape`` without its leading axes of length 1."""
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def match_range_shape(y: torch.Tensor, range_shape, source: str = "y") -> torch.Tensor:
    """``y`` ``(1, *shape)`` as ``(1, *range_shape)``, equal up to leading axes of length 1.

    Raises a ``ValueError`` naming ``source`` (a file or argument) when the shapes
    differ, with a hint when a 2-D sinogram looks transposed.
    """
    expected = tuple(int(s) for s in range_shape)
    shape = tuple(y.shape[1:])
    if strip_leading_ones(shape) != strip_leading_ones(expected):
        hint = ""
        if len(shape) == 2 and shape[::-1] == strip_leading_ones(expected):
            hint = ("; it looks transposed (skimage's radon returns (detectors, angles)): "
                    "save its transpose")
        raise ValueError(f"{source}: the measurement has shape {shape}, but the "
                         f"operator expects {expected} (leading axes of length 1 may be "
                         f"omitted){hint}")
    return y.reshape(1, *expected)


def load_measurement(path, dataset: str | None = None, range_shape=None) -> torch.Tensor:
    """Read a measured sinogram (real) or k-space (complex) as a batch of one.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy``; ``.npz`` (one array, or the one named ``dataset``); HDF5
        ``.h5``/``.hdf5``/``.hdf`` (the only dataset, or the path ``dataset``,
        e.g. ``"/entry/data/sinogram"``; complex as a native complex type or a
        compound of ``(r, i)``/``(real, imag)``).
    dataset : str, optional
    range_shape : tuple of int, optional
        The operator's ``range_shape``. When given, the array must have that
        shape up to leading axes of length 1 (a sinogram ``(angles,
        detectors)`` for ``range_shape = (1, angles, detectors)``), and is
        returned as ``(1, *range_shape)``.

    Returns
    -------
    torch.Tensor
        ``(1, *shape)``: float64 or float32 as stored (other real types become
        float32); complex128 or complex64 for complex data.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Unreadable or corrupt file, a missing or ambiguous dataset, a
        non-numeric array, NaN/inf, or a shape that does not match
        ``range_shape``; the message names the file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from bayes_recon.data import load_measurement
    >>> path = os.path.join(tempfile.mkdtemp(), "sino.npy")
    >>> np.save(path, np.ones((20, 41), dtype=np.float32))
    >>> y = load_measurement(path, range_shape=(1, 20, 41))
    >>> y.shape, y.dtype
    (torch.Size([1, 1, 20, 41]), torch.float32)
    """
    path = _existing(path)
    arr = _read_measurement_array(path, dataset)
    if arr.dtype.kind not in "uifc":
        raise ValueError(f"{path}: expected a real or complex numeric array, got dtype "
                         f"{arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{path}: the array is empty, shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path} contains NaN or inf values")
    if arr.dtype.kind == "c":
        arr = arr.astype(np.complex128 if arr.dtype == np.complex128 else np.complex64)
    elif arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    y = torch.from_numpy(np.ascontiguousarray(arr))[None]
    return y if range_shape is None else match_range_shape(y, range_shape, path)
