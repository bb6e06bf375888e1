"""The ``vmpooler`` command: run the service (all roles, or one), audit the log, rebuild projections."""

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

from commands.settings import ConfigError, Settings

from . import maintenance
from .config import load_settings
from .redis_client import open_redis, wait_for_redis
from .wiring import Service, build_app

__all__ = ["main"]

log = logging.getLogger("vmpooler")


def _parser() -> argparse.ArgumentParser:
    # Options may come before or after the command; SUPPRESS keeps a subcommand from resetting them.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--config", metavar="FILE", help="vmpooler YAML (default: $VMPOOLER_CONFIG_FILE or ./vmpooler.yaml)"
    )
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    serve = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    serve.add_argument("--host", help="address the API listens on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="API port (default 4567)")

    parser = argparse.ArgumentParser(
        prog="vmpooler",
        parents=[common, serve],
        description="Pools of ready VMs for CI. With no command: API, manager, workers and projectors in one process.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("api", parents=[common, serve], help="serve the HTTP API only")
    sub.add_parser("manager", parents=[common], help="run the pool manager, workers and projectors only")
    events = sub.add_parser("events", parents=[common], help="print events from the log (an audit)")
    which = events.add_mutually_exclusive_group()
    which.add_argument("--vm", help="one VM's whole history")
    which.add_argument("--pool", help="one pool's events")
    events.add_argument("--since", help="start time: ISO 8601, epoch ms, or an age like 30m, 2h, 7d")
    events.add_argument("--until", help="end time, same forms as --since")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    from_archive = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    from_archive.add_argument(
        "--archive", metavar="DIR", help="where `vmpooler archive` put the archived part of the log"
    )
    events.add_argument("--archive", metavar="DIR", help="also read the archived part of the log from DIR")
    proj = sub.add_parser("projections", parents=[common, from_archive], help="manage read models")
    proj.add_argument(
        "action", choices=["rebuild"], help="rebuild: drop every read model and fold the log again"
    )
    state = sub.add_parser("state", parents=[common, from_archive], help="manage decision state")
    state.add_argument(
        "action", choices=["rebuild"], help="rebuild: drop the pools' decision state and replay the log"
    )
    archive = sub.add_parser(
        "archive", parents=[common], help="move old events out of Redis into an archive (retention)"
    )
    archive.add_argument(
        "--before", required=True, help="archive events older than this (e.g. 90d, ISO 8601)"
    )
    archive.add_argument("--to", required=True, metavar="DIR", help="the archive directory (keep it)")
    return parser


_DEFAULTS = {"config": None, "log_level": "INFO", "host": "127.0.0.1", "port": 4567}


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
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    log.info("logging to %s", path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vmpooler`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    for name, default in _DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        for attr in ("since", "until", "before"):
            if getattr(args, attr, None):
                maintenance.parse_time(getattr(args, attr))
        _log_to_file(settings.config.logfile)
    except (ConfigError, ValueError) as exc:
        print(f"vmpooler: {exc}", file=sys.stderr)
        return 2
    try:
        return _event_loop_runner()(_run(settings, args))
    except KeyboardInterrupt:
        return 130
    except (ConfigError, ValueError) as exc:  # e.g. a provider knob or key prefix refused at startup
        print(f"vmpooler: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
