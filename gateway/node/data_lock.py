"""One gateway per data folder: the process that keeps a centre's books holds `data_dir/gateway.lock`.

Two gateways on one folder would both send its outbox, close its epochs and run its
jobs, and with fronts the second would take over the first one's socket. The lock is
an `flock` on a file that names its holder's pid; the kernel lets it go when the
process ends, however it ends, so a killed gateway never leaves its folder locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "gateway.lock"


class DataFolderBusy(RuntimeError):
    """Another gateway process holds the data folder."""


@contextlib.contextmanager
def holding(data_dir: Path) -> Iterator[None]:
    """Hold `data_dir` for this process while the block runs; DataFolderBusy, naming the holder, if another does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DataFolderBusy(
                f"another gateway (pid {holder}) runs on the data folder {data_dir}: stop it first, or give this "
                "one a data_dir of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
