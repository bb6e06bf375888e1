"""The ``vmpooler`` command: run the service (all roles, or one), audit the log, rebuild projections,
check the configuration and the manager's health."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any

import uvicorn
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from commands.settings import ConfigError, Settings
from web.server import uvicorn_options

from . import maintenance
from ._cli_parser import parse_args
from ._output import BROKEN_PIPE_EXIT, SafeFormatter, detach_stdout, printable
from .config import Finding, load_settings
from .config_check import config_check
from .manager_check import check_manager
from .redis_client import open_redis, wait_for_redis
from .wiring import Service, build_app

__all__ = ["main"]

log = logging.getLogger("vmpooler")

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ours stops every role, then closes the embedded Redis."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    """Bind the API's socket before anything else starts, so a busy port fails fast and cleanly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def _serve(
    service: Service, args: argparse.Namespace, roles: set[str], listener: socket.socket | None
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = []
    server = None
    if "api" in roles:
        config = uvicorn.Config(  # httptools parses HTTP when installed (it is a dependency)
            build_app(service),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            # No X-Forwarded-* rewriting: nothing reads the client address yet, and it costs ~10 %.
            proxy_headers=False,
            lifespan="on",
            # Open dashboards hold endless event streams; without a bound, a stop would wait for them.
            timeout_graceful_shutdown=5,
            **uvicorn_options(service.settings),  # read timeouts and a connection limit
        )
        server = _Server(config)
        assert listener is not None
        tasks.append(asyncio.create_task(server.serve(sockets=[listener])))
        log.info(
            "API on http://%s:%d/api/v3 (OpenAPI at /schema/openapi.json), dashboard at http://%s:%d/dashboard/",
            args.host,
            args.port,
            args.host,
            args.port,
        )

    def shutdown() -> None:
        stop.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown)
    if "manager" in roles:
        if "api" not in roles and service.settings.metrics_backend == "prometheus":
            # the registry is served by the API; a manager alone has nowhere to show its metrics
            log.warning(":prometheus: metrics of a manager-only process are not served; run the API with it")
        tasks.append(asyncio.create_task(service.run_manager(stop)))
    # Everything built so far lives as long as the process: keep it out of the cyclic collector,
    # whose full passes over the app's objects otherwise show up as 10-20 ms latency spikes.
    gc.freeze()
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    if server is not None:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return 0


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    command = args.command
    listener = _listen(args.host, args.port) if command in (None, "api") else None
    redis = open_redis(settings, start_embedded=True)
    try:
        await wait_for_redis(redis, settings.redis.startup_timeout)
        service = Service(settings, redis)
    except BaseException:
        await redis.close()
        raise
    try:
        if command in (None, "api", "manager"):
            roles = {"api", "manager"} if command is None else {command}
            return await _serve(service, args, roles, listener)
        if command == "events":
            return await maintenance.audit(service, args)
        if command == "projections":
            return await maintenance.rebuild_projections(service, args)
        if command == "state":
            return await maintenance.rebuild_state(service, args)
        if command == "archive":
            return await maintenance.archive(service, args)
        raise AssertionError(command)
    finally:
        await service.close()


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner where it is installed (a faster event loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run
    return uvloop.run


def _log_to_file(path: str) -> None:
    """``:config: logfile``: log there too (appended), besides stderr.

    Raises:
        ConfigError: the file cannot be opened for appending.
    """
    if not path:
        return
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f":config: logfile {path!r} cannot be opened: {exc.strerror}") from None
    handler.setFormatter(SafeFormatter(_LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    log.info("logging to %s", path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vmpooler`` console script; returns the exit code.

    Expected failures end with one line on stderr, never a traceback: 2 for a bad argument, a bad
    configuration or Redis out of reach (at start or mid-command), 141 when the reader of stdout
    went away (``vmpooler events | head``), 130 on Ctrl-C.
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        detach_stdout()
        return BROKEN_PIPE_EXIT
    except KeyboardInterrupt:
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    _log_to_stderr(args.log_level)
    runner = _event_loop_runner()
    if args.command == "config":
        return _guarded(runner, config_check(args))
    findings: list[Finding] = []
    try:
        settings = load_settings(args.config, findings=findings)
        for attr in ("since", "until", "before"):
            if getattr(args, attr, None):
                maintenance.parse_time(getattr(args, attr))
        _log_to_file(settings.config.logfile)
    except (ConfigError, ValueError) as exc:
        return _refuse(exc, findings)
    if not _accept_warnings(findings, args.strict):
        return 2
    if args.command == "manager" and getattr(args, "check", False):
        return _guarded(runner, check_manager(settings))
    return _guarded(runner, _run(settings, args))


def _guarded(runner: Callable[[Coroutine[Any, Any, int]], int], command: Coroutine[Any, Any, int]) -> int:
    """Run ``command``; an expected failure becomes one line on stderr and its exit code."""
    try:
        return runner(command)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # main's: not an error of the command
    except (ConfigError, ValueError) as exc:  # e.g. a provider knob or key prefix refused at startup
        return _fail(str(exc))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.debug("Redis failed", exc_info=True)
        return _fail(f"Redis is out of reach: {exc}")
    except RedisError as exc:
        log.debug("Redis failed", exc_info=True)
        return _fail(f"Redis refused a command: {exc} (--log-level DEBUG shows where)")
    except OSError as exc:
        log.debug("the command failed", exc_info=True)
        return _fail(_os_error(exc))


def _os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _fail(message: str) -> int:
    print(f"vmpooler: {printable(message)}", file=sys.stderr)
    return 2


def _refuse(exc: Exception, findings: list[Finding]) -> int:
    """A configuration that cannot start: every unknown key found, then the error that stopped it."""
    for finding in findings:
        if not finding.error:
            log.warning("%s", finding)
    errors = [str(finding) for finding in findings if finding.error] or [str(exc)]
    for error in errors:
        _fail(error)
    return 2


def _accept_warnings(findings: list[Finding], strict: bool) -> bool:
    """Log each warning; with ``--strict`` a warning refuses the configuration."""
    for finding in findings:
        if strict:
            _fail(f"{finding} (refused: --strict)")
        else:
            log.warning("%s", finding)
    return not (strict and findings)


def _log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(_LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


if __name__ == "__main__":
    sys.exit(main())
