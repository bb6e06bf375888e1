"""The ``vmpooler`` command line: commands, options, and one-line usage errors."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from ._output import printable

__all__ = ["parse_args"]

_DEFAULTS = {"config": None, "log_level": "INFO", "host": "127.0.0.1", "port": 4567, "strict": False}


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error on one line (``vmpooler events: unrecognized arguments: -x``)
    and exit code 2, instead of the usage text followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{printable(self.prog)}: {printable(message)} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    # Options may come before or after the command; SUPPRESS keeps a subcommand from resetting them.
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--config", metavar="FILE", help="vmpooler YAML (default: $VMPOOLER_CONFIG_FILE or ./vmpooler.yaml)"
    )
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    common.add_argument(
        "--strict", action="store_true", help="refuse a configuration with warnings (unknown keys) too"
    )
    serve = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    serve.add_argument("--host", help="address the API listens on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="API port (default 4567)")

    parser = _Parser(
        prog="vmpooler",
        parents=[common, serve],
        description="Pools of ready VMs for CI. With no command: API, manager, workers and projectors in one process.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("api", parents=[common, serve], help="serve the HTTP API only")
    manager = sub.add_parser(
        "manager", parents=[common], help="run the pool manager, workers and projectors only"
    )
    manager.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 0 if a manager of this host is live and every pool has a live manager",
    )
    _add_log_commands(sub, common)
    config = sub.add_parser("config", parents=[common], help="inspect the configuration")
    config.add_argument(
        "action",
        choices=["check"],
        help="check: print the effective configuration (secrets redacted) and every warning",
    )
    config.add_argument(
        "--format", choices=["yaml", "json"], default="yaml", help="output format (default yaml)"
    )
    return parser


def _add_log_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The commands that read or rewrite the log: ``events``, ``projections``, ``state``, ``archive``."""
    events = sub.add_parser("events", parents=[common], help="print events from the log (an audit)")
    which = events.add_mutually_exclusive_group()
    which.add_argument("--vm", help="one VM's whole history")
    which.add_argument("--pool", help="one pool's events")
    events.add_argument("--since", help="start time: ISO 8601, epoch ms, or an age like 30m, 2h, 7d")
    events.add_argument("--until", help="end time, same forms as --since")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--archive", metavar="DIR", help="also read the archived part of the log from DIR")
    from_archive = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    from_archive.add_argument(
        "--archive", metavar="DIR", help="where `vmpooler archive` put the archived part of the log"
    )
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line, with the defaults of options a command did not get.

    A usage error prints one line and exits with code 2 (``SystemExit``).
    """
    args = _parser().parse_args(argv)
    for name, default in _DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    return args
