"""One gateway per data folder (gateway.node.data_lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.node.data_lock import LOCK_FILE, DataFolderBusy, holding


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    with holding(tmp_path / "data"):
        assert (tmp_path / "data" / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(DataFolderBusy, match=f"another gateway \\(pid {os.getpid()}\\) runs on the data folder"):
            with holding(tmp_path / "data"):
                pass
    with holding(tmp_path / "data"):  # let go at the end of the block
        pass


def test_a_killed_holder_leaves_the_folder_free(tmp_path: Path) -> None:
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom gateway.node.data_lock import holding\n"
        "with holding(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataFolderBusy, match=f"pid {holder.pid}"):
            with holding(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with holding(tmp_path):
                break
        except DataFolderBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)
