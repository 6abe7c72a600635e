"""Private files: keys, secrets and wallets, readable by their owner only.

One way to write them: the data goes to a fresh temporary file (mode 0600 from
its creation, in the same folder), is flushed to disk, and only then takes the
file's name, so a reader or a crash sees the old file or the whole new one,
never half a key. A stale or planted file of the temporary's name plays no part
(`mkstemp` creates its own, exclusively, and follows no link).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: str | os.PathLike, data: bytes | str, *, replace: bool = False) -> None:
    """Write `data` (str as UTF-8) to `path`, mode 0600, atomically and durably.

    With `replace=False` an existing file is never touched (FileExistsError):
    a key that exists is never overwritten, even by two writers racing. The
    folder must exist.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists, whoever made it meanwhile
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the new name itself durable (a rename lives in the folder's entry)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
