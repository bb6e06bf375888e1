"""A circuit breaker and an adaptive call timeout for provider calls (vmpooler's ``circuit_breaker.rb`` and
``adaptive_timeout.rb``, reference §2.8). Pure logic: no I/O, an injectable monotonic clock, thread-safe.

Unlike vmpooler, where both are created but no call is routed through them, every call of the vSphere and
EC2 providers goes through one of each (see :class:`providers.guard.Guard`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

__all__ = ["AdaptiveTimeout", "BreakerState", "CircuitBreaker", "CircuitOpenError"]

Clock = Callable[[], float]


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> float:
        """vmpooler's ``circuit_breaker.state.<name>`` value: 0 closed, 0.5 half-open, 1 open."""
        return {"closed": 0.0, "half_open": 0.5, "open": 1.0}[self.value]


class CircuitOpenError(Exception):
    """A call was refused because the circuit is open; ``retry_in`` seconds until it may half-open."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; next attempt in {retry_in:.1f} s")
        self.name = name
        self.retry_in = retry_in


def _number(options: Mapping[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"option {key!r} must be a number >= {minimum}, got {value!r}")
    return float(value)


def _round(value: float) -> float:
    """Ruby's ``Float#round``: halves away from zero (Python's ``round`` goes to even)."""
    return float(math.floor(value + 0.5))


def _flag(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key, True)
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ValueError(f"option {key!r} must be true or false, got {value!r}")
    return value


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures; open refuses calls until ``timeout``
    seconds after the last failure, then lets the next call through as half-open; half-open closes after
    ``half_open_attempts`` successes and re-opens on any failure (every call is allowed while half-open).

    Use :meth:`before_call` (raises :class:`CircuitOpenError`), then :meth:`record_success` or
    :meth:`record_failure` with the outcome.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        timeout: float = 30.0,
        half_open_attempts: int = 3,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or half_open_attempts < 1 or timeout < 0:
            raise ValueError(
                "circuit breaker needs failure_threshold >= 1, half_open_attempts >= 1, timeout >= 0"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.timeout = timeout
        self.half_open_attempts = half_open_attempts
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._last_failure = 0.0
        self.transitions: dict[BreakerState, int] = dict.fromkeys(BreakerState, 0)
        """How often each state was entered (vmpooler's ``circuit_breaker.{opened,half_open,closed}``)."""

    @classmethod
    def from_options(
        cls, name: str, options: Mapping[str, Any], *, clock: Clock = time.monotonic
    ) -> CircuitBreaker | None:
        """Built from ``circuit_breaker_*`` keys; ``None`` when ``circuit_breaker_enabled`` is false."""
        if not _flag(options, "circuit_breaker_enabled"):
            return None
        threshold = _number(options, "circuit_breaker_failure_threshold", 5, minimum=1)
        attempts = _number(options, "circuit_breaker_half_open_attempts", 3, minimum=1)
        if threshold != int(threshold) or attempts != int(attempts):
            raise ValueError("circuit_breaker_failure_threshold and _half_open_attempts must be integers")
        return cls(
            name,
            failure_threshold=int(threshold),
            timeout=_number(options, "circuit_breaker_timeout", 30, minimum=0),
            half_open_attempts=int(attempts),
            clock=clock,
        )

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    def _enter(self, state: BreakerState) -> None:
        self._state = state
        self.transitions[state] += 1
        self._successes = 0
        if state is BreakerState.CLOSED:
            self._failures = 0

    def before_call(self) -> None:
        """Admit a call, or raise :class:`CircuitOpenError`; moves open → half-open once the timeout passed."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return
            waited = self._clock() - self._last_failure
            if waited < self.timeout:
                raise CircuitOpenError(self.name, self.timeout - waited)
            self._enter(BreakerState.HALF_OPEN)

    def record_success(self) -> None:
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._successes += 1
                if self._successes >= self.half_open_attempts:
                    self._enter(BreakerState.CLOSED)
            elif self._state is BreakerState.CLOSED:
                self._failures = 0

    def record_failure(self) -> None:
        with self._lock:
            self._last_failure = self._clock()
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                self._enter(BreakerState.OPEN)


class AdaptiveTimeout:
    """A call timeout learnt from the last ``window`` successful durations.

    Starts at ``initial``. Once there are at least ``min_samples`` samples, each success sets the timeout to
    ``round(p95 * 1.5)`` clamped to [``minimum``, ``maximum``] when that differs from the current value by more
    than ``hysteresis`` seconds (percentile index ``ceil(n*p) - 1``). Each failure sets it to
    ``max(round(current * 0.8), minimum)``. ``adaptive=False`` keeps it fixed at ``initial``.
    """

    def __init__(
        self,
        *,
        minimum: float = 5.0,
        maximum: float = 60.0,
        initial: float = 30.0,
        window: int = 100,
        min_samples: int = 10,
        hysteresis: float = 5.0,
        adaptive: bool = True,
    ) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"adaptive timeout needs 0 < min <= max, got min {minimum}, max {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        self.initial = initial
        self.min_samples = min_samples
        self.hysteresis = hysteresis
        self.adaptive = adaptive
        self._lock = threading.Lock()
        self._samples: deque[float] = deque(maxlen=window)
        self._current = initial

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AdaptiveTimeout:
        """Built from ``connection_pool_timeout_min/_max/_initial`` and ``adaptive_timeout_enabled``."""
        minimum = _number(options, "connection_pool_timeout_min", 5, minimum=0.001)
        maximum = _number(options, "connection_pool_timeout_max", 60, minimum=minimum)
        initial = _number(options, "connection_pool_timeout_initial", min(maximum, 30), minimum=0.001)
        return cls(
            minimum=minimum,
            maximum=maximum,
            initial=initial,
            adaptive=_flag(options, "adaptive_timeout_enabled"),
        )

    @property
    def current(self) -> float:
        with self._lock:
            return self._current

    def percentile(self, p: float) -> float | None:
        """The ``p`` percentile (0 to 1) of the kept durations, ``None`` without samples."""
        with self._lock:
            return self._percentile(p)

    def _percentile(self, p: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[max(math.ceil(len(ordered) * p) - 1, 0)]

    def record_success(self, duration: float) -> None:
        with self._lock:
            self._samples.append(duration)
            if not self.adaptive or len(self._samples) < self.min_samples:
                return
            p95 = self._percentile(0.95)
            assert p95 is not None
            candidate = min(max(_round(p95 * 1.5), self.minimum), self.maximum)
            if abs(candidate - self._current) > self.hysteresis:
                self._current = candidate

    def record_failure(self) -> None:
        with self._lock:
            if self.adaptive:
                self._current = max(_round(self._current * 0.8), self.minimum)

    def reset(self) -> None:
        """Back to ``min(max, 30)`` with no samples (vmpooler's ``reset``)."""
        with self._lock:
            self._samples.clear()
            self._current = min(self.maximum, 30.0)
