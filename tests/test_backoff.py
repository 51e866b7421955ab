"""Reconnect delays: exponential, capped, with jitter from the system's random bytes."""

from __future__ import annotations

from fructosa.backoff import Backoff, jitter


def test_backoff_delays_double_up_to_the_maximum_with_jitter_between_half_and_all() -> None:
    """The jitter comes from the system's random bytes (no ``random`` module in the agent)."""
    factors = [jitter() for _ in range(2000)]
    assert all(0.5 <= factor < 1.0 for factor in factors)
    assert min(factors) < 0.55 and max(factors) > 0.95 and len(set(factors)) > 1900
    backoff = Backoff(initial=0.5, maximum=4.0)
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for ceiling in ceilings:
        assert ceiling / 2 <= backoff.next_delay() < ceiling
    backoff.reset()
    assert 0.25 <= backoff.next_delay() < 0.5
