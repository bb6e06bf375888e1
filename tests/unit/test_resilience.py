"""The vSphere provider's circuit breaker and adaptive timeout (vmpooler §2.8 semantics), on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from providers.resilience import AdaptiveTimeout, BreakerState, CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, **kw: Any) -> CircuitBreaker:
    return CircuitBreaker("vc", clock=clock, **kw)


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.record_failure()


class TestCircuitBreaker:
    def test_defaults(self) -> None:
        breaker = CircuitBreaker("vc")
        assert (breaker.failure_threshold, breaker.timeout, breaker.half_open_attempts) == (5, 30.0, 3)
        assert breaker.state is BreakerState.CLOSED

    def test_opens_at_threshold_and_fails_fast(self) -> None:
        clock = Clock()
        breaker = _breaker(clock)
        _fail(breaker, 4)
        assert breaker.state is BreakerState.CLOSED
        _fail(breaker, 1)
        assert breaker.state is BreakerState.OPEN
        clock.now += 10
        with pytest.raises(CircuitOpenError) as caught:
            breaker.before_call()
        assert caught.value.retry_in == pytest.approx(20)
        assert breaker.transitions[BreakerState.OPEN] == 1

    def test_success_resets_the_failure_count(self) -> None:
        breaker = _breaker(Clock())
        _fail(breaker, 4)
        breaker.record_success()
        assert breaker.failures == 0
        _fail(breaker, 4)
        assert breaker.state is BreakerState.CLOSED

    def test_half_opens_after_timeout_and_closes_after_successes(self) -> None:
        clock = Clock()
        breaker = _breaker(clock)
        _fail(breaker, 5)
        clock.now += 29.9
        with pytest.raises(CircuitOpenError):
            breaker.before_call()
        clock.now += 0.1
        breaker.before_call()
        assert breaker.state is BreakerState.HALF_OPEN
        breaker.before_call()  # every call is allowed while half-open
        breaker.record_success()
        breaker.record_success()
        assert breaker.state is BreakerState.HALF_OPEN
        breaker.record_success()
        assert breaker.state is BreakerState.CLOSED
        assert breaker.failures == 0
        assert breaker.transitions == {
            BreakerState.OPEN: 1,
            BreakerState.HALF_OPEN: 1,
            BreakerState.CLOSED: 1,
        }

    def test_half_open_failure_reopens_from_the_last_failure(self) -> None:
        clock = Clock()
        breaker = _breaker(clock, timeout=5)
        _fail(breaker, 5)
        clock.now += 5
        breaker.before_call()
        breaker.record_success()
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN
        clock.now += 4
        with pytest.raises(CircuitOpenError):
            breaker.before_call()
        clock.now += 1
        breaker.before_call()
        assert breaker.state is BreakerState.HALF_OPEN

    def test_late_failure_while_open_extends_the_wait(self) -> None:
        clock = Clock()
        breaker = _breaker(clock, timeout=5, failure_threshold=1)
        _fail(breaker, 1)
        clock.now += 3
        breaker.record_failure()  # an in-flight call that started before the circuit opened
        clock.now += 3
        with pytest.raises(CircuitOpenError):
            breaker.before_call()

    def test_state_gauge(self) -> None:
        assert [s.gauge for s in BreakerState] == [0.0, 1.0, 0.5]

    def test_from_options(self) -> None:
        assert CircuitBreaker.from_options("vc", {"circuit_breaker_enabled": False}) is None
        breaker = CircuitBreaker.from_options(
            "vc",
            {
                "circuit_breaker_failure_threshold": 2,
                "circuit_breaker_timeout": 0.5,
                "circuit_breaker_half_open_attempts": 1,
            },
        )
        assert breaker is not None
        assert (breaker.failure_threshold, breaker.timeout, breaker.half_open_attempts) == (2, 0.5, 1)
        default = CircuitBreaker.from_options("vc", {})
        assert default is not None
        assert default.failure_threshold == 5

    @pytest.mark.parametrize(
        "options",
        [
            {"circuit_breaker_enabled": "yes"},
            {"circuit_breaker_failure_threshold": 0},
            {"circuit_breaker_failure_threshold": 2.5},
            {"circuit_breaker_timeout": -1},
            {"circuit_breaker_half_open_attempts": "3"},
        ],
    )
    def test_bad_options(self, options: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="circuit_breaker"):
            CircuitBreaker.from_options("vc", options)


class TestAdaptiveTimeout:
    def test_defaults(self) -> None:
        timeout = AdaptiveTimeout()
        assert (timeout.minimum, timeout.maximum, timeout.current) == (5.0, 60.0, 30.0)
        assert timeout.percentile(0.95) is None

    def test_needs_ten_samples(self) -> None:
        timeout = AdaptiveTimeout()
        for _ in range(9):
            timeout.record_success(2.0)
        assert timeout.current == 30.0
        timeout.record_success(2.0)
        assert timeout.current == 5.0  # round(2 * 1.5) = 3, clamped to the minimum

    def test_p95_times_one_and_a_half(self) -> None:
        timeout = AdaptiveTimeout()
        for duration in range(1, 21):  # p95 index ceil(20 * .95) - 1 = 18 -> 19 s
            timeout.record_success(float(duration))
        assert timeout.percentile(0.95) == 19.0
        # 10 samples: 15 s; 18 samples (p95 18 s): 27 s; then 29 s is within 5 s of 27 s, so it stays.
        assert timeout.current == 27.0

    def test_rounds_half_up(self) -> None:
        timeout = AdaptiveTimeout(initial=60.0)
        for _ in range(10):
            timeout.record_success(19.0)
        assert timeout.current == 29.0  # 28.5 rounds half up, as in Ruby

    def test_clamped_to_the_maximum(self) -> None:
        timeout = AdaptiveTimeout()
        for _ in range(10):
            timeout.record_success(100.0)
        assert timeout.current == 60.0

    def test_small_changes_are_ignored(self) -> None:
        timeout = AdaptiveTimeout(initial=30.0)
        for _ in range(10):
            timeout.record_success(17.0)  # candidate round(25.5) = 26: within 5 s of 30
        assert timeout.current == 30.0
        for _ in range(10):
            timeout.record_success(16.0)  # p95 still 17
        assert timeout.current == 30.0

    def test_window_keeps_the_last_hundred(self) -> None:
        timeout = AdaptiveTimeout()
        for _ in range(100):
            timeout.record_success(30.0)
        assert timeout.current == 45.0
        for _ in range(100):
            timeout.record_success(4.0)
        assert timeout.percentile(0.95) == 4.0
        assert timeout.current == 6.0

    def test_failure_shrinks_to_the_minimum(self) -> None:
        timeout = AdaptiveTimeout()
        timeout.record_failure()
        assert timeout.current == 24.0
        for _ in range(20):
            timeout.record_failure()
        assert timeout.current == 5.0

    def test_reset(self) -> None:
        timeout = AdaptiveTimeout(maximum=20.0, initial=10.0)
        timeout.record_success(1.0)
        timeout.reset()
        assert timeout.current == 20.0
        assert timeout.percentile(0.5) is None

    def test_fixed_when_disabled(self) -> None:
        timeout = AdaptiveTimeout.from_options(
            {"adaptive_timeout_enabled": False, "connection_pool_timeout_initial": 12}
        )
        for _ in range(20):
            timeout.record_success(1.0)
        timeout.record_failure()
        assert timeout.current == 12.0

    def test_from_options(self) -> None:
        timeout = AdaptiveTimeout.from_options(
            {
                "connection_pool_timeout_min": 0.2,
                "connection_pool_timeout_max": 2,
                "connection_pool_timeout_initial": 1,
            }
        )
        assert (timeout.minimum, timeout.maximum, timeout.current) == (0.2, 2.0, 1.0)
        assert AdaptiveTimeout.from_options({"connection_pool_timeout_max": 10}).current == 10.0

    @pytest.mark.parametrize(
        "options",
        [
            {"connection_pool_timeout_min": 0},
            {"connection_pool_timeout_min": 10, "connection_pool_timeout_max": 5},
            {"connection_pool_timeout_initial": "soon"},
            {"adaptive_timeout_enabled": 1},
        ],
    )
    def test_bad_options(self, options: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="timeout"):
            AdaptiveTimeout.from_options(options)
