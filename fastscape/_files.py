"""File helpers shared by the modules that read and write results: atomic writes, and the one
error every reader raises on a damaged or foreign file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path, write: Callable[[str], None], suffix: str = "") -> Path:
    """Write a file atomically.

    ``write(tmp)`` fills a temporary file in the same directory, which then replaces ``path``
    with ``os.replace`` (atomic on POSIX and Windows within one file system). On any error,
    interruption included, the temporary file is removed and an existing ``path`` is left
    untouched.

    Parameters
    ----------
    path : str or PathLike
        Destination; its directory is created if needed.
    write : callable(str)
        Writes the complete file at the temporary path it is given.
    suffix : str
        Suffix of the temporary name (some writers insist on an extension).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


class FileFormatError(ValueError):
    """A file that cannot be read as what it should be.

    The message is one line, ``"<path>: <what is wrong>"``.

    Parameters
    ----------
    path : str or PathLike
        The file.
    problem : str
        What is wrong with it (newlines are folded into spaces).

    Attributes
    ----------
    path : Path
    problem : str
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")
