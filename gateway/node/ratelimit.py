"""A token bucket per key: how often one principal may have the policy decide for it.

Every evaluation is a durable decision-log entry, so a session that asks in a
loop would otherwise grow the log (and the auditors' work) as fast as the gateway
answers. Buckets are kept for at most `max_keys` principals, the least recently
seen forgotten first: a forgotten principal starts again with a full bucket,
which is what a new one gets anyway.

Buckets of network addresses are keyed by `network_key`: one IPv6 host is given a
whole /64 (2^64 addresses), so a /64 shares one bucket, as one IPv4 address does.

`SharedRateLimit` is the same bound for every process of one gateway on one machine:
its buckets live in a file that each process opens (`slots` fixed-size slots after a
header naming its shape, rate and burst), so N front processes together admit what
one would. A key's hash (salted per file) picks a set of `WAYS` slots; a key not in
its set takes the one seen longest ago, with a full bucket, which is what a forgotten
principal gets from `RateLimit` too. A file of another shape, rate or burst is
refused, never reread as this one: the caller removes it to start again, and a file
removed and made again under running processes is followed by each at its next take
(none keeps counting in a file the others no longer see). Times are `time.monotonic`, one
clock (CLOCK_MONOTONIC) for every process on a Linux machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import math
import os
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import TracebackType


class RateLimit:
    """At most `burst` takes at once per key, refilled at `rate` per second."""

    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError(
                f"a rate limit needs rate > 0, burst >= 1 and max_keys >= 1, got {rate}, {burst}, {max_keys}"
            )
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Take one token for `key`: None when there was one, else the seconds until there is."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            taken = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if taken else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return None if taken else (1.0 - tokens) / self.rate


#: A shared rate limit file's header: magic, format version, slots, rate (per second), burst, the key hashes' salt.
SHARED_HEADER = struct.Struct("<8sIQdQ16s")
SHARED_MAGIC = b"xcrlimit"
SHARED_VERSION = 2
#: One bucket: the 8-byte hash of its key (0: never used), tokens, and when they were counted.
SHARED_SLOT = struct.Struct("<Qdd")
#: Slots a key may use: its hash picks a set of WAYS slots, and within it the key's own or the one seen longest ago.
WAYS = 8


class SharedRateLimit:
    """`RateLimit` for every process that opens the same file: at most `burst` takes at once per key among them all,
    refilled at `rate` per second. Open it in each process (after any fork): a forked copy shares the parent's lock.

    A take reads its key's set and writes one slot (pread and pwrite under an exclusive flock): a file
    whose blocks were all reserved at its creation, so a full disk never fails a write to it, and a file
    cut short under a running process reads as empty slots instead of faulting as a mapping would."""

    def __init__(
        self,
        path: Path,
        rate: float,
        burst: int,
        *,
        slots: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        whole = isinstance(burst, int) and isinstance(slots, int)  # stored as integers in the file
        if not (rate > 0 and math.isfinite(rate)) or not whole or burst < 1 or slots < WAYS or slots % WAYS:
            raise ValueError(
                "a shared rate limit needs a finite rate > 0, a whole burst >= 1 and a whole number of slots, "
                f"a multiple of {WAYS}, got {rate}, {burst}, {slots}"
            )
        self.path, self.rate, self.burst, self.slots, self.clock = path, rate, burst, slots, clock
        self._fd, self._salt = _open_shared(path, rate, burst, slots)
        self._lock = threading.Lock()  # flock is per open file: it does not keep this process's threads apart

    def take(self, key: str) -> float | None:
        """Take one token for `key`: None when there was one, else the seconds until there is."""
        with self._lock:
            self._follow_path()
            mark = _key_hash(key, self._salt)
            first = SHARED_HEADER.size + (mark % (self.slots // WAYS)) * WAYS * SHARED_SLOT.size
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                found = os.pread(self._fd, WAYS * SHARED_SLOT.size, first).ljust(WAYS * SHARED_SLOT.size, b"\0")
                now = self.clock()  # read under the lock, so a slot's time never goes back
                way, tokens, at = _way(found, mark)
                if way is None or not at <= now or not 0.0 <= tokens <= self.burst:
                    # a key not in its set (it takes the slot seen longest ago); a time from before this boot
                    # (the file outlived the machine's monotonic clock) or tokens no take leaves: a full bucket
                    way = way if way is not None else _oldest(found)
                    tokens, at = float(self.burst), now
                tokens = min(float(self.burst), tokens + (now - at) * self.rate)
                taken = tokens >= 1.0
                slot = SHARED_SLOT.pack(mark, tokens - 1.0 if taken else tokens, now)
                os.pwrite(self._fd, slot, first + way * SHARED_SLOT.size)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return None if taken else (1.0 - tokens) / self.rate

    def _follow_path(self) -> None:
        """Open the file the path names now if it is not the one open (removed, and made again by another process)."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        held = os.fstat(self._fd)
        if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            fd, salt = _open_shared(self.path, self.rate, self.burst, self.slots)
            os.close(self._fd)
            self._fd, self._salt = fd, salt

    def close(self) -> None:
        """Close the file; the buckets stay in it for the other processes."""
        os.close(self._fd)

    def __enter__(self) -> SharedRateLimit:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _way(found: bytes, mark: int) -> tuple[int | None, float, float]:
    """The slot of the set `found` that holds `mark`, with its tokens and time; (None, 0, 0) when none does."""
    for way in range(WAYS):
        held, tokens, at = SHARED_SLOT.unpack_from(found, way * SHARED_SLOT.size)
        if held == mark:
            return way, tokens, at
    return None, 0.0, 0.0


def _oldest(found: bytes) -> int:
    """The slot of the set `found` seen longest ago (an unused one first: its time is 0)."""
    times = [SHARED_SLOT.unpack_from(found, way * SHARED_SLOT.size)[2] for way in range(WAYS)]
    return min(range(WAYS), key=lambda way: times[way] if math.isfinite(times[way]) else -math.inf)


def _key_hash(key: str, salt: bytes) -> int:
    """A key's 8-byte mark under the file's salt (so nobody picks keys that share a set): never 0, an unused slot's."""
    digest = hashlib.blake2b(key.encode(errors="surrogatepass"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "little") or 1


def _shared_size(slots: int) -> int:
    return SHARED_HEADER.size + slots * SHARED_SLOT.size


def _open_shared(path: Path, rate: float, burst: int, slots: int) -> tuple[int, bytes]:
    """The file's descriptor and salt, creating it whole when missing: it appears at its full size with its header,
    or not at all, so a process never sees one half made (concurrent creators: the first one's file is everyone's)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        _create_shared(path, rate, burst, slots)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        return fd, _check_shared(path, fd, rate, burst, slots)
    except BaseException:
        os.close(fd)
        raise


def _create_shared(path: Path, rate: float, burst: int, slots: int) -> None:
    try:
        fd, made = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")  # mode 0600
    except FileNotFoundError:
        raise FileNotFoundError(f"a shared rate limit file's directory {path.parent} does not exist") from None
    try:
        try:
            os.posix_fallocate(fd, 0, _shared_size(slots))  # every block now: a full disk never fails a take
            header = SHARED_HEADER.pack(SHARED_MAGIC, SHARED_VERSION, slots, rate, burst, os.urandom(16))
            os.pwrite(fd, header, 0)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process made it first: both use that one
            os.link(made, path)
    finally:
        os.unlink(made)


def _check_shared(path: Path, fd: int, rate: float, burst: int, slots: int) -> bytes:
    """The file's salt; refuses a file that is no shared rate limit of this shape, rate and burst, rather than
    reread it as one."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, SHARED_HEADER.size, 0)
    if len(head) < len(SHARED_MAGIC) or head[: len(SHARED_MAGIC)] != SHARED_MAGIC:
        raise ValueError(f"{path} is no shared rate limit file (remove it to create one)")
    version = int.from_bytes(head[len(SHARED_MAGIC) : len(SHARED_MAGIC) + 4], "little")
    if version != SHARED_VERSION or len(head) < SHARED_HEADER.size:
        raise ValueError(f"{path} is a shared rate limit file of version {version}, not {SHARED_VERSION}")
    _, _, has_slots, has_rate, has_burst, salt = SHARED_HEADER.unpack(head)
    if (has_slots, has_rate, has_burst) != (slots, rate, burst):
        raise ValueError(
            f"{path} holds a shared rate limit of {has_slots} slots at rate {has_rate} and burst {has_burst}, "
            f"not {slots} slots at rate {rate} and burst {burst} (remove it to start again)"
        )
    if size != _shared_size(slots):
        raise ValueError(
            f"{path} is {size} bytes, not the {_shared_size(slots)} of a shared rate limit of {slots} slots: "
            "truncated or corrupt (remove it to start again)"
        )
    return salt


#: The IPv6 prefix one site or host is given: every address in it is one client to a bound by address.
IPV6_PREFIX = 64


def network_key(address: str) -> str:
    """The bucket of a client's network address: the address for IPv4 (an IPv4-mapped IPv6 address too), its /64
    for IPv6; anything that is no IP address (a test client's name) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)
