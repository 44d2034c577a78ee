"""Atomic file writing: a temporary file beside the target, then one rename.

A reader never sees a half-written file: either the old content or the new.
Used for checkpoints (``models.checkpoint``) and run outputs (``app._io``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path, write, *, by_name: bool = False) -> Path:
    """Call ``write(fh)`` on a binary temporary file beside ``path``, then rename it into place.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; missing parent folders are created.
    write : callable
        ``write(fh)`` writes the whole content to the open binary file ``fh``.
    by_name : bool
        Call ``write(tmp_path)`` with the temporary file's name instead, for
        writers that need a file name (netCDF, some image libraries).

    Returns
    -------
    pathlib.Path
        ``path``. If ``write`` raises, the temporary file is removed and
        ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.txt", lambda fh: fh.write(b"done")).read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if by_name:
            os.close(fd)
            write(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
