"""Where the course's commands write: every output path checked before any work starts, nothing the
user has overwritten unless they asked (``--overwrite``), never the command's own input, and one
command at a time per run folder.

Used by ``python -m course_utils`` (:mod:`course_utils.cli`); each check raises :class:`OutputError`
naming the path and the fix.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

__all__ = ["OutputError", "same_file", "check_output_file", "make_output_folder", "write_text", "FolderLock"]


class OutputError(ValueError):
    """An output path that cannot or must not be written; the message names it and says what to do."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """True if ``a`` and ``b`` name one file: the same inode when both exist (hard links, symlinks,
    ``./x`` vs ``x``), else the same absolute, normalised path."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def make_output_folder(folder: str | Path, flag: str) -> Path:
    """Create ``folder`` (and its parents) if needed, so a path that cannot be written fails now, not after
    the work: a file in the way, no permission, a read-only or virtual file system (``/proc``)."""
    folder = Path(folder)
    blocking = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        what = "is a file" if blocking == folder else f"is in the way: {blocking} is a file"
        raise OutputError(f"{flag} {folder} {what}, but it must be a folder; choose another {flag} or move that file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{flag} {folder}: cannot write there ({err.strerror or err}); choose a folder you can "
                          "write to") from None
    return folder


def check_output_file(path: str | Path, flag: str, inputs: Iterable[str | Path] = (), overwrite: bool = False) -> Path:
    """Check that the file ``path`` may be written: not a folder, none of the command's ``inputs``, not an
    existing file unless ``overwrite``, and in a folder that can be written (created here if missing)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; name the file to write, e.g. {flag} {path / ('out' + path.suffix)}")
    for source in inputs:
        if same_file(path, source):
            raise OutputError(f"{flag} {path} is also this command's input ({source}); writing it would destroy the "
                              "input. Choose another file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another name")
    make_output_folder(path.parent, flag)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then renamed over it):
    an interrupted write leaves the old file or none, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class FolderLock:
    """Held while a command writes into ``folder`` (the file ``folder/.lock``, locked with ``flock``):
    a second command into the same folder is refused instead of interleaving its files with the first's.

    The operating system releases the lock when the process ends, however it ends (``kill -9`` too), so a
    crashed run never leaves a stale lock. ``folder`` is created on entry (:func:`make_output_folder`) and
    removed on exit if the command left it empty.
    """

    def __init__(self, folder: str | Path, flag: str = "--out") -> None:
        self.folder, self.flag = Path(folder), flag
        self.path = self.folder / ".lock"
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> FolderLock:
        self._created = not self.folder.exists()
        make_output_folder(self.folder, self.flag)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                self._remove_if_created()
                raise OutputError(f"{self.flag} {self.folder} is in use: another command (process {holder}) is writing "
                                  f"there. Wait for it to finish, or choose another {self.flag}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its previous holder removed between our open and our flock
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding the lock (see __enter__'s inode check)
            os.close(self._fd)
            self._fd = None
        self._remove_if_created()

    def _remove_if_created(self) -> None:
        if self._created:
            try:
                self.folder.rmdir()  # only if empty
            except OSError:
                pass
