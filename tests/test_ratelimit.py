"""The per-principal token bucket that bounds how fast one session grows the decision log."""

import pytest

from gateway.node.ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate():
    clock = Clock()
    limit = RateLimit(2.0, 3, clock=clock)
    assert [limit.take("bob") for _ in range(3)] == [None, None, None]
    assert limit.take("bob") == pytest.approx(0.5)  # empty: one token in half a second at 2 a second
    assert limit.take("alice") is None  # each principal has its own bucket
    clock.now += 0.5
    assert limit.take("bob") is None
    assert limit.take("bob") == pytest.approx(0.5)
    clock.now += 100
    assert [limit.take("bob") for _ in range(4)][-1] is not None  # refilled to the burst, never beyond


def test_refusals_do_not_spend_tokens():
    clock = Clock()
    limit = RateLimit(1.0, 1, clock=clock)
    assert limit.take("bob") is None
    for _ in range(50):  # hammering while empty never pushes the next token further away
        assert limit.take("bob") == pytest.approx(1.0)
    clock.now += 1.0
    assert limit.take("bob") is None


def test_the_least_recently_seen_are_forgotten_first():
    clock = Clock()
    limit = RateLimit(1.0, 1, max_keys=2, clock=clock)
    limit.take("a"), limit.take("b")
    assert limit.take("a") is not None  # "a" seen again: "b" is now the oldest
    limit.take("c")  # a third key forgets "b", whose bucket starts full again
    assert limit.take("b") is None  # and forgets "a" in turn
    assert limit.take("c") is not None  # "c", seen since, is remembered empty


@pytest.mark.parametrize("rate, burst, keys", [(0, 1, 1), (1, 0, 1), (1, 1, 0), (-1, 5, 5)])
def test_a_limit_that_admits_nothing_is_refused(rate, burst, keys):
    with pytest.raises(ValueError, match="rate > 0"):
        RateLimit(rate, burst, max_keys=keys)
