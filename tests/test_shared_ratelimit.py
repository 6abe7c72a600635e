"""The token bucket shared by every process of one gateway: one file, one bound, however many processes take."""

import multiprocessing
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from gateway.node.ratelimit import SHARED_HEADER, SHARED_MAGIC, SHARED_SLOT, SHARED_VERSION, WAYS, SharedRateLimit

NEVER = 1e-9  # a rate that refills nothing while a test runs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def slow_clock() -> float:
    """time.monotonic, read mid-take (between reading a slot and writing it): a racing taker runs here if it can."""
    time.sleep(0.0001)
    return time.monotonic()


def take_many(path: Path, burst: int, tries: int, start: Barrier, granted: "Queue[int]") -> None:
    """A process's share of the race: open the file, wait for the others, take as fast as it can."""
    with SharedRateLimit(path, NEVER, burst, slots=64, clock=slow_clock) as limit:
        start.wait(timeout=60)
        granted.put(sum(limit.take("bob") is None for _ in range(tries)))


def test_a_burst_then_the_rate(tmp_path: Path) -> None:
    clock = Clock()
    with SharedRateLimit(tmp_path / "limit", 2.0, 3, slots=64, clock=clock) as limit:
        assert (limit.rate, limit.burst) == (2.0, 3)
        assert [limit.take("bob") for _ in range(3)] == [None, None, None]
        assert limit.take("bob") == pytest.approx(0.5)  # empty: one token in half a second at 2 a second
        assert limit.take("alice") is None  # each principal has its own bucket
        assert limit.take("\udc80") is None  # any str is a key, as with RateLimit, even one no UTF-8 encodes
        clock.now += 0.5
        assert limit.take("bob") is None
        assert limit.take("bob") == pytest.approx(0.5)
        clock.now += 100
        assert [limit.take("bob") for _ in range(4)][-1] is not None  # refilled to the burst, never beyond


def test_refusals_do_not_spend_tokens(tmp_path: Path) -> None:
    clock = Clock()
    with SharedRateLimit(tmp_path / "limit", 1.0, 1, clock=clock) as limit:
        assert limit.take("bob") is None
        for _ in range(50):  # hammering while empty never pushes the next token further away
            assert limit.take("bob") == pytest.approx(1.0)
        clock.now += 1.0
        assert limit.take("bob") is None


def test_the_file_is_made_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "limit"
    SharedRateLimit(path, 1.0, 5, slots=16).close()
    assert path.stat().st_size == SHARED_HEADER.size + 16 * SHARED_SLOT.size
    assert path.stat().st_blocks * 512 >= path.stat().st_size  # every block reserved: a full disk fails no take
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limit"]  # no temporary file left beside it


def test_the_buckets_outlive_the_process_that_emptied_them(tmp_path: Path) -> None:
    path = tmp_path / "limit"
    with SharedRateLimit(path, NEVER, 2, slots=64) as limit:
        assert [limit.take("bob"), limit.take("bob")] == [None, None]
    with SharedRateLimit(path, NEVER, 2, slots=64) as again:
        assert again.take("bob") is not None
        assert again.take("alice") is None


def test_a_bucket_from_before_the_clock_went_back_is_full_again(tmp_path: Path) -> None:
    """The file outlives a reboot, the monotonic clock does not: a slot stamped later than now (an earlier boot)
    is a full bucket, never a key refused for as long as the last boot lasted."""
    path = tmp_path / "limit"
    with SharedRateLimit(path, 1.0, 2, slots=64, clock=lambda: 1_000_000.0) as before:
        assert [before.take("bob"), before.take("bob")] == [None, None]
        assert before.take("bob") is not None
    with SharedRateLimit(path, 1.0, 2, slots=64, clock=lambda: 5.0) as after:
        assert [after.take("bob"), after.take("bob")] == [None, None]
        assert after.take("bob") == pytest.approx(1.0)


def race(path: Path, processes: int, burst: int) -> int:
    """How many takes `processes` spawned processes were granted together, each trying `burst` at once."""
    spawn = multiprocessing.get_context("spawn")
    start, granted = spawn.Barrier(processes), spawn.Queue()
    racers = [spawn.Process(target=take_many, args=(path, burst, burst, start, granted)) for _ in range(processes)]
    for racer in racers:
        racer.start()
    counts = [granted.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    return sum(counts)


def test_two_processes_together_take_one_burst(tmp_path: Path) -> None:
    path = tmp_path / "limit"
    SharedRateLimit(path, NEVER, 50, slots=64).close()
    assert race(path, 2, 50) == 50  # not 100: each took from the one bucket in the file


def test_processes_creating_the_file_at_once_share_one(tmp_path: Path) -> None:
    path = tmp_path / "limit"  # not there yet: each racer may be the one that makes it
    assert race(path, 4, 50) == 50


def test_threads_of_one_process_take_one_burst(tmp_path: Path) -> None:
    with SharedRateLimit(tmp_path / "limit", NEVER, 200, slots=64, clock=slow_clock) as limit:
        granted: list[bool] = []

        def take() -> None:
            granted.extend(limit.take("bob") is None for _ in range(200))

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(granted) == 200  # one flock on one file does not keep threads apart: the limit's lock does


def test_keys_sharing_a_set_keep_their_own_buckets(tmp_path: Path) -> None:
    """Eight slots are one set, which every key shares: each keeps its bucket (two keys taking turns are limited
    as two, not given a full bucket at every turn)."""
    with SharedRateLimit(tmp_path / "limit", NEVER, 2, slots=WAYS, clock=Clock()) as limit:
        keys = [f"net-{i}" for i in range(WAYS)]
        granted = sum(limit.take(key) is None for _ in range(10) for key in keys)
        assert granted == 2 * WAYS


def test_a_key_past_its_set_takes_the_slot_seen_longest_ago(tmp_path: Path) -> None:
    clock = Clock()
    with SharedRateLimit(tmp_path / "limit", NEVER, 1, slots=WAYS, clock=clock) as limit:
        for i in range(WAYS):
            assert limit.take(f"k{i}") is None
            clock.now += 1.0
        assert limit.take("k0") is not None and limit.take("k1") is not None  # each remembered, empty
        clock.now += 1.0
        assert limit.take("newcomer") is None  # a ninth key: it takes k2's slot, seen longest ago
        assert limit.take("newcomer") is not None  # and keeps it
        assert limit.take("k2") is None  # k2 starts again full (as RateLimit's forgotten keys do), in k3's slot
        assert limit.take("k0") is not None and limit.take("k1") is not None  # the keys seen lately stay put


@pytest.mark.parametrize(
    "slots, rate, burst",
    [(32, 1.0, 5), (16, 2.0, 5), (16, 1.0, 6)],
    ids=["slots", "rate", "burst"],
)
def test_a_file_of_another_shape_is_refused(tmp_path: Path, slots: int, rate: float, burst: int) -> None:
    path = tmp_path / "limit"
    SharedRateLimit(path, 1.0, 5, slots=16).close()
    with pytest.raises(
        ValueError, match=re.escape(f"{path} holds a shared rate limit of 16 slots at rate 1.0 and burst 5")
    ):
        SharedRateLimit(path, rate, burst, slots=slots)
    SharedRateLimit(path, 1.0, 5, slots=16).close()  # refused, not rewritten: it still opens as what it is


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "limit"
    SharedRateLimit(path, 1.0, 5, slots=16).close()
    os.truncate(path, SHARED_HEADER.size + 3 * SHARED_SLOT.size)
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is .* bytes, not the .* truncated or corrupt"):
        SharedRateLimit(path, 1.0, 5, slots=16)


@pytest.mark.parametrize("content", [b"", b"xcr", b"not a rate limit file at all, but long enough" * 20])
def test_a_file_that_is_no_rate_limit_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "limit"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"{path} is no shared rate limit file")):
        SharedRateLimit(path, 1.0, 5, slots=16)
    assert path.read_bytes() == content  # never overwritten


def test_a_file_of_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "limit"
    SharedRateLimit(path, 1.0, 5, slots=16).close()
    with path.open("r+b") as file:
        file.seek(len(SHARED_MAGIC))  # the version follows the magic
        file.write((99).to_bytes(4, "little"))
    with pytest.raises(
        ValueError, match=re.escape(f"{path} is a shared rate limit file of version 99, not {SHARED_VERSION}")
    ):
        SharedRateLimit(path, 1.0, 5, slots=16)


def test_the_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(f"directory {tmp_path / 'missing'} does not exist")):
        SharedRateLimit(tmp_path / "missing" / "limit", 1.0, 5)


@pytest.mark.parametrize(
    "rate, burst, slots",
    [(0, 1, 1), (1, 0, 1), (1, 1, 0), (-1, 5, 5), (float("nan"), 1, 1), (float("inf"), 1, 1), (1, 2.5, 1), (1, 1, 1.5)],
)
def test_a_limit_that_admits_nothing_is_refused(tmp_path: Path, rate: float, burst: int, slots: int) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        SharedRateLimit(tmp_path / "limit", rate, burst, slots=slots)
    assert not (tmp_path / "limit").exists()


def _tmpfs_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    return subprocess.run(probe, check=False, capture_output=True, timeout=10).returncode == 0


#: Runs "$2" -c "$3" "$1" with a 4 MiB tmpfs on "$1", in a mount namespace of its own.
MOUNTED = ("unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=4m tmpfs "$1" && exec "$2" -c "$3" "$1"', "sh")
FULL_DISK = """
import os, sys
from pathlib import Path
from gateway.node.ratelimit import SharedRateLimit
folder = Path(sys.argv[1])
limit = SharedRateLimit(folder / "decisions.slots", 10.0, 100)  # the gateway starts
fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)  # then its data disk fills up
try:
    while True:
        os.write(fd, b"x" * 65536)
except OSError:
    pass
granted = sum(limit.take(f"client-{i}") is None for i in range(5000))  # every client a slot of its own
print("alive", granted)
"""


@pytest.mark.skipif(not _tmpfs_works(), reason="needs `unshare -m` and a tmpfs mount (root)")
def test_a_full_data_disk_fails_no_take(tmp_path: Path) -> None:
    """The file's blocks are all reserved when it is made: on a full disk a take of a slot never written before
    still works (a sparse file written through a mapping killed the process with SIGBUS)."""
    folder = tmp_path / "data"
    folder.mkdir()
    done = subprocess.run(
        [*MOUNTED, str(folder), sys.executable, FULL_DISK],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0 and done.stdout.split() == ["alive", "5000"], (done.returncode, done.stderr[-500:])


def test_a_file_cut_short_under_a_running_process_reads_as_empty_slots(tmp_path: Path) -> None:
    """Checked only when opened: a file truncated afterwards (an operator's cleanup) gives full buckets, where a
    mapping of it killed the process with SIGBUS."""
    path = tmp_path / "limit"
    with SharedRateLimit(path, NEVER, 1, slots=64) as limit:
        assert limit.take("alice") is None and limit.take("alice") is not None
        os.truncate(path, 0)
        assert limit.take("alice") is None  # forgotten with the file: a full bucket, as for a new key
        assert limit.take("alice") is not None


def test_a_file_removed_under_a_process_is_made_again_at_its_next_take(tmp_path: Path) -> None:
    path = tmp_path / "limit.slots"
    clock = Clock()
    with SharedRateLimit(path, NEVER, 2, slots=64, clock=clock) as limit:
        assert limit.take("k") is None and limit.take("k") is None
        path.unlink()
        assert limit.take("k") is None  # a new file: a full bucket, counted where the other processes will look
        assert path.exists()
        with SharedRateLimit(path, NEVER, 2, slots=64, clock=clock) as other:
            assert other.take("k") is None
            assert other.take("k") is not None


def test_the_back_starts_the_limits_afresh_and_clears_what_a_killed_creator_left(tmp_path: Path) -> None:
    from gateway.node.assemble import _decision_limits

    folder = tmp_path / "limits"
    folder.mkdir()
    (folder / "decisions.slots").write_bytes(b"an earlier version's file")
    (folder / ".decisions.slots.abc123.new").write_bytes(b"\0" * 1000)
    limits = _decision_limits(folder, fresh=True)
    try:
        assert sorted(p.name for p in folder.iterdir()) == ["client-decisions.slots", "decisions.slots"]
        assert limits["limit"].take("k") is None
    finally:
        for limit in limits.values():
            limit.close()
    with pytest.raises(ValueError, match="remove it"):
        (folder / "decisions.slots").write_bytes(b"x" * 100)
        _decision_limits(folder)  # a front opens what the back made: it never makes a file over
