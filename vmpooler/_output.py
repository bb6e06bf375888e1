"""What the CLI prints for people is safe to show on a terminal.

User names, tags, VM and pool names come from clients and from the log; printed raw, an ESC could
move the cursor or recolour the screen and a newline could fake a line. Every human-readable line
goes through :func:`printable`; JSON goes through :func:`json_printable`, which keeps it JSON. And a
stdout closed by its reader (``vmpooler events | head``) ends the command quietly.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["BROKEN_PIPE_EXIT", "SafeFormatter", "detach_stdout", "json_printable", "printable"]

BROKEN_PIPE_EXIT = 141
"""Exit status after the reader of stdout went away: 128 + SIGPIPE, what a shell reports for a
tool that SIGPIPE ended (``yes | head``)."""


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped as Python writes it
    (``\\x1b``, ``\\n``, ``\\u202e``); printable text is returned as it is."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def json_printable(text: str) -> str:
    """JSON text with every non-printable character written as a ``\\u`` escape.

    JSON escapes only the characters below U+0020; DEL, the C1 controls (U+009B is a CSI on some
    terminals) and bidirectional overrides may stand raw in a string. Escaped, the text is the
    same JSON. Line breaks between tokens (indented JSON) are kept: inside strings the encoder has
    already escaped them.
    """
    if text.isprintable():
        return text
    return "\n".join(_json_line(line) for line in text.split("\n"))


def _json_line(line: str) -> str:
    return line if line.isprintable() else "".join(ch if ch.isprintable() else _u(ch) for ch in line)


def _u(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


class SafeFormatter(logging.Formatter):
    """A log formatter whose lines cannot carry control characters from the message or its
    arguments; a traceback appended below stays as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def detach_stdout() -> None:
    """Point stdout at ``/dev/null`` after its reader went away, so the interpreter's last flush
    at exit does not report the broken pipe again ("Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
