"""Files on disk: the one home of the atomic write and of the sha256 of a file.

An atomic write goes to a temp file beside the target, is flushed and fsynced, and is renamed over
the target, so a reader (or a crash at any moment) sees the old file or the new one, never a torn
one. A writer killed mid-way leaves a ``.<name>.*.tmp`` file that nothing reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

# A fixed zip timestamp (the zip epoch) instead of "now", for reproducible bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@contextmanager
def atomic_file(path: str | Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``path`` when the block ends without error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp files are private; these are ordinary files
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (tmp, None):
            raise _naming(e, path) from None
        raise


def stale_writes(folder: str | Path, names: set[str]) -> list[Path]:
    """The temp files that writes of ``names`` in ``folder`` killed mid-way left (``.<name>.*.tmp``,
    :func:`atomic_file`'s). Only for a writer that holds the folder's lock: another's live write
    would look the same."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            name = entry.name[1:].rsplit(".", 2)[0]  # .<name>.<random>.tmp
            if name in names and entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def _naming(e: OSError, path: Path) -> OSError:
    """The same error (same class, from its errno) naming the file being written, not its temp file."""
    return type(e)(e.errno, e.strerror, str(path)) if e.errno is not None else e


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file (anything that is no folder) that stops ``folder`` from being made or used as one:
    ``folder`` itself or the nearest of its parents that exists; None when nothing is in the way."""
    for p in (Path(folder), *Path(folder).parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def not_a_folder(folder: str | Path, what: str) -> str | None:
    """``what`` (e.g. "the output location") at ``folder`` cannot be a folder, in words naming the
    file in the way; None when it can."""
    blocker = file_in_the_way(folder)
    if blocker is None:
        return None
    return f"{what} {folder} is a file, not a folder" if blocker == Path(folder) else \
        f"{what} {folder} is under {blocker}, a file, not a folder"


def free_room(folder: str | Path) -> tuple[int, int] | None:
    """(bytes an ordinary writer may still use, block size) on the file system of ``folder``, or of
    its nearest parent that exists (a folder about to be made); None where the system does not say."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize, max(stat.f_frsize, 1)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, value, **dumps) -> Path:
    """``value`` as indented JSON (sorted keys unless told otherwise), ending with a newline."""
    return write_text(path, json.dumps(value, **({"indent": 2, "sort_keys": True} | dumps)) + "\n")


def move_into_place(src: str | Path, dest: str | Path) -> Path:
    """Rename a finished file (e.g. a download into a temp folder beside ``dest``) onto ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    return dest


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, but byte-for-byte reproducible and written atomically.

    numpy stamps each zip entry with the current time, so the same arrays give different bytes
    (and different DVC hashes) on every run; here every entry gets the zip epoch instead.
    """
    with atomic_file(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes already read (the same digest :func:`sha256_file` gives their file)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
