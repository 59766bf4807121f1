"""One ``error:`` line and exit code 2 for bad input, from every ``cosim`` command.

Commands catch the errors they expect; whatever escapes them (a malformed file met deep in a
loader, a frame read outside a command's ``try``) reaches :class:`ErrorReportingTyper`, which
prints ``error: <message>`` on one line and exits 2 for input errors (``ValueError`` and its
subclasses: every parser's format error, ``OSError``, ``KeyError``, YAML errors) or 1 for
anything else, which is a bug and says so. ``cosim --debug ...`` re-raises instead, so the
traceback is shown.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import yaml

INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError, yaml.YAMLError)
MAX_LINE = 500
_state = {"debug": False}


def set_debug(on: bool) -> None:
    _state["debug"] = bool(on)


def one_line(err: BaseException) -> str:
    """The error's text on one line, at most :data:`MAX_LINE` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, KeyError):
        text = f"missing key {text}"
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def error_exit_code(err: BaseException) -> int:
    return 2 if isinstance(err, INPUT_ERRORS) else 1


class ErrorReportingTyper(typer.Typer):
    """A Typer app whose console entry point reports escaping errors as one line."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as err:
            if _state["debug"]:
                raise
            code = error_exit_code(err)
            prefix = "" if code == 2 else f"internal error ({type(err).__name__}): "
            hint = "" if code == 2 else " (rerun with --debug for the traceback)"
            print(f"error: {prefix}{one_line(err)}{hint}", file=sys.stderr)
            raise SystemExit(code) from None


def print_error(console: Any, err: BaseException | str) -> None:
    """``error: <message>`` on one line of ``console`` (a rich Console): no wrapping, no
    markup read from the message."""
    from rich.markup import escape

    text = one_line(err) if isinstance(err, BaseException) else " ".join(err.split())
    console.print(f"[red]error:[/red] {escape(text)}", soft_wrap=True)
