"""Files written whole or not at all: temporary files beside the target, moved into place.

Every file the engine writes (label and probability TIFFs, model files) is first written to a
temporary file ``.<name>.<pid>.<random>.tmp`` in the target's folder and then moved onto the
target with :func:`os.replace`, which is atomic on one file system. :func:`commit` moves a *set*
of such files (a label image and its probabilities) into place together, and undoes the ones it
moved when a later one fails, so a set is never left half written. The final files get the mode
a newly created file gets (``0o666`` less the umask), not :func:`tempfile.mkstemp`'s ``0o600``.

A process killed with SIGKILL cannot remove its temporary files; :func:`remove_stale_temps`
removes those of processes that no longer run before a new file is written to the folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "check_space",
    "check_writable",
    "commit",
    "discard",
    "file_mode",
    "fsync_folder",
    "new_temp",
    "remove_stale_temps",
    "write_error",
]

#: Temporary files without a process id (older versions) are stale after this many seconds.
STALE_SECONDS = 3600
#: What stands between ``.<name>.`` and ``.tmp``: ``<pid>.<random>``, or ``<random>`` alone.
_MIDDLE = re.compile(r"^(?:(?P<pid>\d+)\.)?[A-Za-z0-9_]+$")


def file_mode() -> int:
    """The permission bits of a newly created file: ``0o666`` less the process's umask."""
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


def new_temp(path: Path) -> Path:
    """Create an empty temporary file for ``path`` in its folder (which must exist); the
    caller writes it, then :func:`commit`\\ s or :func:`discard`\\ s it."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def discard(temps: Sequence[Path]) -> None:
    """Remove temporary files, ignoring those already gone."""
    for tmp in temps:
        with contextlib.suppress(OSError):
            tmp.unlink()


def commit(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Move each written ``(temporary, target)`` into place, all or none.

    The temporaries get :func:`file_mode`. When a move fails (or an interrupt arrives) the
    targets moved so far are removed again, every temporary is removed, and the error is
    raised; a target that existed before is then gone rather than half replaced.
    """
    mode = file_mode()
    done: list[Path] = []
    try:
        for tmp, _ in pairs:
            os.chmod(tmp, mode)
        for tmp, target in pairs:
            os.replace(tmp, target)
            done.append(target)
    except BaseException:
        if len(done) < len(pairs):
            discard(done)
        discard([tmp for tmp, _ in pairs])
        raise


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: another user's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files left for ``path`` by processes that no longer run (older
    files without a process id: after :data:`STALE_SECONDS`). Returns those removed."""
    prefix, removed = f".{path.name}.", []
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            found = _MIDDLE.match(entry.name[len(prefix) : -len(".tmp")])
            if found is None:
                continue
            try:
                if found["pid"] is not None:
                    stale = not _running(int(found["pid"]))
                else:
                    stale = time.time() - entry.stat().st_mtime > STALE_SECONDS
                if stale:
                    entry.unlink()
                    removed.append(entry)
            except OSError:
                continue
    return removed


def check_writable(path: Path) -> None:
    """Raise ``PermissionError`` (or the ``OSError`` met) unless a file can be created in the
    folder that will hold ``path`` (its nearest existing ancestor when it is still missing).

    Tried with a real file, so read-only file systems count too, not only permission bits.
    """
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".napari-unet-probe.", suffix=".tmp", dir=folder)
    except OSError as err:
        where = (
            f"the folder {folder} is not writable"
            if folder == path.parent
            else f"the folder {path.parent} does not exist, and {folder} does not take new files"
        )
        raise PermissionError(f"cannot write {path}: {where} ({err.strerror})") from None
    os.close(fd)
    os.unlink(name)


def check_space(needs: Sequence[tuple[Path, int]]) -> None:
    """Raise ``OSError`` unless each folder has room for the bytes about to be written there.

    ``needs``: ``(target file, estimated bytes)`` pairs; files in one folder add up. Folders
    whose free space cannot be read are not checked.
    """
    import shutil

    per_folder: dict[Path, int] = {}
    for path, n_bytes in needs:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        per_folder[folder] = per_folder.get(folder, 0) + int(n_bytes)
    for folder, n_bytes in per_folder.items():
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if n_bytes > free:
            raise OSError(
                f"not enough free space in {folder}: the output needs about "
                f"{_megabytes(n_bytes)}, {_megabytes(free)} are free"
            )


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MB"


def write_error(path: Path, err: OSError) -> OSError:
    """An ``OSError`` that names ``path``, not the temporary file the error happened in."""
    return OSError(f"could not write {path}: {err.strerror or err}")


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; not possible on every platform (e.g. Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
