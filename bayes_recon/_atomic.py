"""Atomic file writing: a temporary file beside the target, then one rename.

A reader never sees a half-written file: either the old content or the new.
Used for checkpoints (``models.checkpoint``) and run outputs (``app._io``).

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask, so the
file is given the mode an ordinary ``open(path, "w")`` would have produced
(``0o666 & ~umask``) before it is renamed into place.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_write", "current_umask"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it, and the umask is process-wide: while
    it is briefly 0, a file another thread creates gets mode 0666. Linux (>= 4.7)
    reports it in ``/proc/self/status`` (``Umask:`` line), which is a pure read, so
    that is used first. Elsewhere it falls back to ``os.umask(0)`` + restore under a
    lock, which at least keeps this module's own writers from racing each other.
    The umask is read at every call, not cached: a program may change it.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0)
        os.umask(old)
    return old


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
        ``path``, with mode ``0o666 & ~umask`` as a plainly created file would
        have (not ``mkstemp``'s 0600). If ``write`` raises, the temporary file
        is removed and ``path`` is left as it was.

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
        # Set before the rename, so the file never appears at ``path`` as 0600; chmod by
        # name because a by-name writer may have replaced the temporary file.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
