"""Output directories written whole or not at all: a lock beside ``--out``, a temporary sibling,
an atomic swap at the end."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

from ._common import CLIError

# Files the commands write: --overwrite replaces a directory only when it holds nothing else.
_OUR_FILES = re.compile(
    r"^(surface|surface_test|slice_d1|slice_d2|slice|theta|report|hessian|connect|eos|contour"
    r"|surface3d|slices|spectrum|paths|surface_gp)\.(csv|npz|h5|gp|json|png|pdf|svg|vtk|html)$"
)


# ----------------------------------------------------------------------------- output directory
def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(root: Path) -> None:
    """Give the files under ``root`` the modes the umask asks for (temporary files are 0600)."""
    mask = umask()
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)


class OutputDir:
    """A command's output directory, written whole or not at all.

    :meth:`open` (before any work) checks the destination, takes the lock ``<out>.lock`` beside
    it (``fcntl.flock``; a second writer is refused) and creates the temporary sibling
    ``<out>.tmp-<pid>`` that the command writes into. :meth:`commit` moves it into place (the
    previous result, with ``--overwrite``, is replaced whole only then). :meth:`close` removes
    what an interrupted run left and releases the lock.
    """

    def __init__(self, path, overwrite: bool) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self._lock_fd: int | None = None
        self._lock_path = self.path.parent / f"{self.path.name}.lock"

    def _check_replaceable(self) -> None:
        path = self.path
        if not path.exists():
            return
        if not path.is_dir():
            raise CLIError(f"--out {path} exists and is not a directory")
        entries = sorted(e.name for e in path.iterdir())
        if not entries:
            return
        if not self.overwrite:
            shown = ", ".join(entries[:3]) + ("..." if len(entries) > 3 else "")
            raise CLIError(
                f"{path} already holds results ({shown}); "
                "pass --overwrite to replace them or choose another --out"
            )
        resolved = path.resolve()
        for protected in (Path.cwd().resolve(), Path.home().resolve()):
            if resolved == protected or resolved in protected.parents:
                raise CLIError(f"--out {path} is the working or home directory; choose a new one")
        foreign = [e for e in entries if not _OUR_FILES.match(e)]
        if foreign:
            raise CLIError(
                f"--out {path} holds files fastscape did not write ({', '.join(foreign[:3])}); "
                "it is not replaced: choose another --out"
            )

    def _lock(self) -> None:
        import fcntl

        while True:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise CLIError(
                    f"--out {self.path}: cannot create {self._lock_path} ({exc.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise CLIError(
                    f"another fastscape run is writing to {self.path} (it holds "
                    f"{self._lock_path}); wait for it to finish or choose another --out"
                ) from None
            # the lock file is removed on release: make sure we locked the file on disk now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self._lock_path))
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)

    def open(self) -> Path:
        """Check, lock and create the temporary directory; returns it."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"--out {self.path}: cannot create {parent} ({exc.strerror})") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CLIError(f"--out {self.path}: {parent} is not writable")
        self._check_replaceable()
        self._lock()
        try:
            self._check_replaceable()  # again, now that no one else can write
            for stale in parent.glob(f"{self.path.name}.tmp-*"):  # killed runs (SIGKILL)
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            self.tmp = parent / f"{self.path.name}.tmp-{os.getpid()}"
            self.tmp.mkdir()
        except OSError as exc:
            self.close()
            raise CLIError(f"--out {self.path}: cannot write beside it ({exc.strerror})") from None
        except BaseException:
            self.close()
            raise
        return self.tmp

    def commit(self) -> Path:
        """Move the finished result into place (SIGINT is held back while it moves)."""
        assert self.tmp is not None
        _apply_umask(self.tmp)
        held = hasattr(signal, "pthread_sigmask")
        if held:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            if self.path.exists():
                old = self.path.parent / f"{self.path.name}.old-{os.getpid()}"
                os.rename(self.path, old)
                try:
                    os.rename(self.tmp, self.path)
                except BaseException:
                    os.rename(old, self.path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self.tmp, self.path)
            self.tmp = None
        finally:
            if held:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return self.path

    def close(self) -> None:
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
