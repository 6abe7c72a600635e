"""create_generators (draft §4.1.1), memoised.

Generators depend only on the ciphersuite and their index, and each is one
hash-to-curve (~0.3 ms), so they are computed once per process and extended
on demand. The compressed octets are kept too: calculate_domain hashes them
on every sign and verify.
"""

from __future__ import annotations

import threading

from py_arkworks_bls12381 import G1Point

from .ciphersuite import EXPAND_LEN, Ciphersuite
from .encoding import point_to_octets_E1
from .hashing import i2osp


class _GeneratorStream:
    """The generator sequence of one (ciphersuite, api_id), grown lazily."""

    def __init__(self, suite: Ciphersuite, api_id: bytes, seed: bytes) -> None:
        self._suite = suite
        self._seed_dst = api_id + b"SIG_GENERATOR_SEED_"
        self._generator_dst = api_id + b"SIG_GENERATOR_DST_"
        self._v = suite.expand_message(seed, self._seed_dst, EXPAND_LEN)
        self._lock = threading.Lock()
        self.points: list[G1Point] = []
        self.octets: list[bytes] = []

    def ensure(self, count: int) -> None:
        if len(self.points) >= count:
            return
        with self._lock:
            while len(self.points) < count:
                i = len(self.points) + 1
                self._v = self._suite.expand_message(self._v + i2osp(i, 8), self._seed_dst, EXPAND_LEN)
                point = self._suite.hash_to_curve_g1(self._v, self._generator_dst)
                self.octets.append(point_to_octets_E1(point))
                self.points.append(point)


_streams: dict[tuple[str, bytes, bytes], _GeneratorStream] = {}
_streams_lock = threading.Lock()


def _stream(suite: Ciphersuite, api_id: bytes, seed: bytes | None = None) -> _GeneratorStream:
    seed = api_id + b"MESSAGE_GENERATOR_SEED" if seed is None else seed
    key = (suite.name, api_id, seed)
    stream = _streams.get(key)
    if stream is None:
        with _streams_lock:
            stream = _streams.setdefault(key, _GeneratorStream(suite, api_id, seed))
    return stream


def create_generators(suite: Ciphersuite, count: int, api_id: bytes, seed: bytes | None = None) -> list[G1Point]:
    """Return ``count`` generators; the first is Q_1, the rest H_1..H_L.

    ``seed`` defaults to the draft's generator_seed (api_id || "MESSAGE_GENERATOR_SEED");
    the base point P1 of each suite is the first point for seed
    api_id || "BP_MESSAGE_GENERATOR_SEED".
    """
    stream = _stream(suite, api_id, seed)
    stream.ensure(count)
    return stream.points[:count]


def generator_octets(suite: Ciphersuite, count: int, api_id: bytes) -> list[bytes]:
    """Compressed octets of the first ``count`` generators (for calculate_domain)."""
    stream = _stream(suite, api_id)
    stream.ensure(count)
    return stream.octets[:count]
