"""One call path for blocking provider SDKs (pyvmomi, boto3): a bounded thread pool behind a circuit breaker
and an adaptive timeout (:mod:`providers.resilience`), so every provider gets the same resilience.

The adaptive timeout bounds getting a worker thread and the call's start (a vSphere session and its login;
for boto3, being picked up by a thread) and, unless the call passes ``task_timeout``, the whole call. A call
with ``task_timeout`` (clone, destroy, snapshot: waits whose length says nothing about the endpoint's health)
has that long once it started. Retryable failures and timeouts count against the breaker; permanent errors
(the endpoint answered) count as successes for it and teach the timeout nothing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from commands.provider import ProviderError
from providers.resilience import AdaptiveTimeout, CircuitBreaker, CircuitOpenError

__all__ = [
    "RESILIENCE_KEYS",
    "Guard",
    "ProviderMetrics",
    "Started",
    "merge_options",
    "metric_segment",
    "port_open",
]

RESILIENCE_KEYS = (
    "circuit_breaker_enabled",
    "circuit_breaker_failure_threshold",
    "circuit_breaker_timeout",
    "circuit_breaker_half_open_attempts",
    "adaptive_timeout_enabled",
    "connection_pool_timeout_min",
    "connection_pool_timeout_max",
    "connection_pool_timeout_initial",
)
"""vmpooler's ``:config:`` keys of the breaker and the timeout, which a provider block may override."""


class ProviderMetrics(Protocol):
    """What providers emit metrics through (structurally the core's metrics port, which providers may not
    import): best effort, never blocking, never raising."""

    def increment(self, label: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``label``."""
        ...

    def gauge(self, label: str, value: float) -> None:
        """Set the gauge ``label`` to ``value``."""
        ...

    def timing(self, label: str, ms: float) -> None:
        """Record one duration of ``ms`` milliseconds under ``label``."""
        ...


def metric_segment(value: str) -> str:
    """``value`` as one segment of a dotted metric name (a host's FQDN must not add levels)."""
    return value.translate(_UNSAFE) or "unknown"


_UNSAFE = str.maketrans({c: "_" for c in ". \t\n:|@"})


def port_open(ip: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``ip:port`` succeeds within ``timeout`` seconds (a guest's readiness)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def merge_options(
    options: Mapping[str, Any], global_options: object, keys: Sequence[str] = RESILIENCE_KEYS
) -> dict[str, Any]:
    """The provider block over the ``keys`` of ``:config:`` (unset or ``None`` values skipped).

    ``global_options`` is a mapping or an object with those keys as attributes (the core's settings of
    ``:config:``), or ``None``.
    """
    if isinstance(global_options, Mapping):
        given = {key: global_options.get(key) for key in keys}
    else:
        given = {key: getattr(global_options, key, None) for key in keys}
    merged = {key: value for key, value in given.items() if value is not None}
    merged.update({key: value for key, value in options.items() if value is not None})
    return merged


T = TypeVar("T")

Started = Callable[[], None]
"""Called by a guarded function, on its thread, once its call has really begun."""


def _nothing() -> None:
    pass


class Guard:
    """A provider's executor, breaker and timeout.

    Args:
        name: the provider's name (names the breaker).
        label: how errors name the endpoint (``vSphere vc.example:443``, ``EC2 us-east-1``).
        options: the provider's merged options (``circuit_breaker_*``, ``connection_pool_timeout_*``,
            ``adaptive_timeout_enabled``).
        workers: threads running blocking calls.
    """

    def __init__(self, name: str, label: str, options: Mapping[str, Any], *, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"executor_workers must be at least 1, got {workers}")
        self.label = label
        self.breaker = CircuitBreaker.from_options(name, options)
        self.timeout = AdaptiveTimeout.from_options(options)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"provider-{name}")

    async def call(
        self,
        fn: Callable[[Started], T],
        *,
        task_timeout: float | None = None,
        abandon: Callable[[], None] = _nothing,
        timed_out: Callable[[bool, float], str] | None = None,
    ) -> T:
        """Run ``fn(started)`` on a worker thread behind the breaker and the timeouts.

        Args:
            fn: the blocking call; it calls ``started()`` once its call has begun.
            task_timeout: the limit once started, for calls that wait for long work; ``None``: the adaptive
                timeout bounds the whole call.
            abandon: called when the caller gives up on a call still running (to release what it holds).
            timed_out: the error message for a timeout, given whether the call had started and the limit.

        Raises:
            ProviderError: the call failed, timed out (retryable), or the breaker is open (retryable, with
                ``retry_in`` the seconds until it lets a call through).
        """
        self._admit()
        loop = asyncio.get_running_loop()
        begun = asyncio.Event()

        def started() -> None:
            loop.call_soon_threadsafe(begun.set)

        limit = self.timeout.current
        clock = time.monotonic()
        call = asyncio.wrap_future(self.executor.submit(fn, started))
        try:
            result = await self._finish(call, begun, limit, task_timeout)
        except TimeoutError:
            abandon()
            call.cancel()
            self._failed()
            was_started = begun.is_set()
            used = task_timeout if task_timeout is not None and was_started else limit
            message = (
                timed_out(was_started, used)
                if timed_out
                else f"{self.label}: call timed out after {used:g} s"
            )
            raise ProviderError(message) from None
        except ProviderError as exc:
            # the endpoint answered (a permanent error, or "not now, retry in ..."): healthy, no sample
            if exc.permanent or exc.retry_in > 0:
                self._succeeded(None)
            else:
                self._failed()
            raise
        except asyncio.CancelledError:
            abandon()
            call.cancel()
            raise
        except Exception as exc:  # an SDK error the provider did not translate: retryable
            self._failed()
            raise ProviderError(f"{self.label}: call failed: {type(exc).__name__}: {exc}") from exc
        self._succeeded(None if task_timeout is not None else time.monotonic() - clock)
        return result

    def _admit(self) -> None:
        if self.breaker is None:
            return
        try:
            self.breaker.before_call()
        except CircuitOpenError as exc:
            raise ProviderError(f"{self.label}: {exc}", retry_in=exc.retry_in) from exc

    def _failed(self) -> None:
        self.timeout.record_failure()
        if self.breaker is not None:
            self.breaker.record_failure()

    def _succeeded(self, duration: float | None) -> None:
        if duration is not None:
            self.timeout.record_success(duration)
        if self.breaker is not None:
            self.breaker.record_success()

    async def _finish(
        self, call: asyncio.Future[T], begun: asyncio.Event, limit: float, task_timeout: float | None
    ) -> T:
        if task_timeout is None:
            return await asyncio.wait_for(asyncio.shield(call), limit)
        waiter = asyncio.ensure_future(begun.wait())
        either: set[asyncio.Future[Any]] = {call, waiter}
        try:
            await asyncio.wait(either, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not (call.done() or begun.is_set()):
            raise TimeoutError
        return await asyncio.wait_for(asyncio.shield(call), task_timeout)

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the executor with no breaker or timeout (e.g. a TCP check of a guest)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
