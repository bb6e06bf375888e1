"""A small blocking pool of pyvmomi sessions to one vCenter, with reconnect on session expiry.

Used only from the provider's worker threads. Sessions are opened lazily up to ``size``; a checkout waits
at most ``timeout`` seconds for a free one. A session that has expired (``NotAuthenticated``, or no current
session after an idle spell) is replaced by a fresh login.

A caller that gives up on a call (its timeout passed) :meth:`ConnectionPool.abandon` the call's
:class:`Ticket`: the pool slot is freed at once, and the session the blocked thread holds is logged out and
dropped when the thread finally returns, never lent again. Sessions are opened with an HTTP socket timeout
(``socket_timeout``) so such a thread does not block forever. While abandoned calls linger, the pool may hold
more than ``size`` sessions (at most one extra per lingering thread, so bounded by the executor's size).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyVim import connect
from pyVmomi import vim, vmodl

from commands.provider import ProviderError

_connect: Any = connect  # untyped in pyvmomi

__all__ = ["ConnectionPool", "Credentials", "Ticket", "provider_error", "wait_task"]

T = TypeVar("T")

log = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 300.0
"""A session idle longer than this is checked (``currentSession``) before use."""


@dataclass(frozen=True)
class Credentials:
    """Where and how to log in (the provider's ``server``, ``port``, ``username``, ``password``, ``insecure``).

    The password is left out of ``repr`` (and so of tracebacks and log lines that show the object).
    """

    server: str
    username: str
    password: str = field(repr=False)
    port: int = 443
    insecure: bool = False

    @property
    def where(self) -> str:
        """``server:port``, as every error message names the vCenter."""
        return f"{self.server}:{self.port}"


def provider_error(exc: BaseException, where: str = "") -> ProviderError:
    """Translate a pyvmomi or socket error into a :class:`ProviderError` naming the vCenter ``where``
    (``server:port``) and the real cause; permanent for bad credentials and rejected certificates."""
    if isinstance(exc, ProviderError):
        return exc
    at = f"vSphere {where}" if where else "vSphere"
    if isinstance(exc, vim.fault.InvalidLogin):
        return ProviderError(f"{at}: login failed: {getattr(exc, 'msg', '')}", permanent=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProviderError(
            f"{at}: TLS certificate rejected (set insecure to skip checks): {exc}", permanent=True
        )
    if isinstance(exc, vmodl.MethodFault):
        return ProviderError(f"{at}: fault {type(exc).__name__}: {getattr(exc, 'msg', '')}")
    if isinstance(exc, ConnectionRefusedError):
        return ProviderError(f"{at}: connection refused (is vCenter listening on that port?)")
    if isinstance(exc, TimeoutError):
        return ProviderError(f"{at}: no answer within the socket timeout ({exc or 'timed out'})")
    if isinstance(exc, OSError):
        return ProviderError(f"{at}: cannot connect: {type(exc).__name__}: {exc}")
    return ProviderError(f"{at}: call failed: {type(exc).__name__}: {exc}")


class _Session:
    def __init__(self, si: vim.ServiceInstance) -> None:
        self.si = si
        self.used_at = time.monotonic()


class Ticket:
    """One call's claim on a pool slot, so the caller can :meth:`ConnectionPool.abandon` it from elsewhere.

    Args:
        on_start: called (on the worker thread) once the call has a logged-in session, just before it runs.
    """

    __slots__ = ("abandoned", "done", "holding", "on_start")

    def __init__(self, on_start: Callable[[], None] | None = None) -> None:
        self.abandoned = False
        self.holding = False  # the call has a session (and so a pool slot)
        self.done = False
        self.on_start = on_start


class ConnectionPool:
    """Up to ``size`` logged-in sessions; :meth:`run` lends one to a blocking function."""

    def __init__(
        self,
        creds: Credentials,
        *,
        size: int,
        timeout: float,
        socket_timeout: float | None = None,
        on_login: Callable[[bool], None] = lambda ok: None,
        max_tries: int = 1,
        retry_factor: float = 0.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"connection_pool_size must be at least 1, got {size}")
        self.creds = creds
        self.size = size
        self.timeout = timeout
        self.socket_timeout = socket_timeout
        self.on_login = on_login
        """Told of every login attempt: ``True`` when it succeeded (vmpooler's ``connect.open|fail``)."""
        self.max_tries = max(1, max_tries)
        self.retry_factor = retry_factor
        """A login that fails for a reason that may pass is tried ``max_tries`` times in all, waiting
        ``retry_factor`` x the attempt number seconds before the next (vmpooler's connection back-off)."""
        self._closing = threading.Event()
        self.last_login_error = ""
        """Why the last login failed ("" after a success): what a call that never got a session reports."""
        self.discarded = 0
        """Sessions dropped because their call was abandoned."""
        self._idle: queue.LifoQueue[_Session] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._open = 0
        self._closed = False

    def _login(self) -> _Session:
        c = self.creds
        context = ssl.create_default_context()  # explicit: pyvmomi skips verification for localhost otherwise
        if c.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        attempt = 1
        while True:
            try:
                si = _connect.SmartConnect(
                    host=c.server,
                    port=c.port,
                    user=c.username,
                    pwd=c.password,
                    sslContext=context,
                    httpConnectionTimeout=self.socket_timeout,
                )
            except Exception as exc:
                self.on_login(False)
                error = provider_error(exc, c.where)
                self.last_login_error = str(error)
                # wrong credentials stay wrong; closing stops the back-off at once
                last = error.permanent or attempt >= self.max_tries
                wait = self.retry_factor * attempt
                log.warning(
                    "%s (login attempt %d of %d)%s",
                    error,
                    attempt,
                    self.max_tries,
                    "" if last else f"; next attempt in {wait:g} s",
                )
                if last or self._closing.wait(wait):
                    raise error from exc
                attempt += 1
                continue
            self.on_login(True)
            self.last_login_error = ""
            return _Session(si)

    def _checkout(self) -> _Session:
        if self._closed:
            raise ProviderError(f"vSphere {self.creds.where}: provider is closed", permanent=True)
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._open < self.size
            if grow:
                self._open += 1
        if grow:
            try:
                return self._login()
            except BaseException:
                with self._lock:
                    self._open -= 1
                raise
        try:
            return self._idle.get(timeout=self.timeout)
        except queue.Empty:
            raise ProviderError(
                f"vSphere {self.creds.where}: no connection free within {self.timeout:g} s "
                f"(connection_pool_size {self.size})"
            ) from None

    def _checkin(self, session: _Session | None) -> None:
        if session is None or self._closed:
            with self._lock:
                self._open -= 1
            if session is not None:
                _logout(session)
            return
        session.used_at = time.monotonic()
        self._idle.put(session)

    def _fresh(self, session: _Session) -> _Session:
        """Return ``session`` if still logged in after a long idle spell, else a new login."""
        if time.monotonic() - session.used_at < IDLE_CHECK_SECONDS:
            return session
        try:
            manager: Any = session.si.content.sessionManager
            if manager.currentSession is not None:
                return session
        except Exception:
            pass
        _logout(session)
        return self._login()

    @property
    def open_sessions(self) -> int:
        """Sessions counted against ``size`` (idle or lent)."""
        with self._lock:
            return self._open

    def abandon(self, ticket: Ticket) -> None:
        """The caller gave up on ``ticket``'s call: free its slot now; its session is dropped when it returns."""
        with self._lock:
            if ticket.abandoned or ticket.done:
                return
            ticket.abandoned = True
            if ticket.holding:
                self._open -= 1

    def run(self, fn: Callable[[vim.ServiceInstance], T], ticket: Ticket | None = None) -> T:
        """Call ``fn(service_instance)`` on a pooled session; retry once on a fresh login if it expired.

        Raises:
            ProviderError: for any vSphere or connection failure (permanent for bad credentials), or when
                ``ticket`` was abandoned before a session was free.
        """
        ticket = ticket or Ticket()
        session: _Session | None = self._checkout()
        with self._lock:
            late = ticket.abandoned
            ticket.holding = not late
        if late:  # gave up while waiting for a session: it is unused, lend it again
            self._checkin(session)
            raise ProviderError(f"vSphere {self.creds.where}: call abandoned before a connection was free")
        try:
            assert session is not None
            stale, session = session, None
            session = self._fresh(stale)
            if ticket.on_start is not None:
                ticket.on_start()
            try:
                return fn(session.si)
            except vim.fault.NotAuthenticated:
                _logout(session)
                session = None
                session = self._login()
                return fn(session.si)
        except ProviderError:
            raise
        except Exception as exc:
            raise provider_error(exc, self.creds.where) from exc
        finally:
            with self._lock:
                ticket.done = True
                discard = ticket.abandoned
            if not discard:
                self._checkin(session)
            elif session is not None:  # its slot was freed by abandon()
                self.discarded += 1
                _logout(session)

    def close(self) -> None:
        """Log out every idle session; sessions in use are logged out when returned."""
        self._closed = True
        self._closing.set()
        while True:
            try:
                session = self._idle.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._open -= 1
            _logout(session)


def _logout(session: _Session) -> None:
    with contextlib.suppress(Exception):  # already gone: nothing to release
        _connect.Disconnect(session.si)


def wait_task(task: Any, *, poll: float = 0.05) -> Any:
    """Block until a vSphere task finishes; return its result or raise its fault."""
    while True:
        info = task.info
        if info.state == vim.TaskInfo.State.success:
            return info.result
        if info.state == vim.TaskInfo.State.error:
            raise info.error
        time.sleep(poll)
