"""What the command line prints when a command fails, and the exit code it returns.

Exit codes: 0 ok, 1 a check failed (drift found, skew found, a gate failed), 2 bad
input, usage or environment (a missing file, a store that cannot be reached, an extra
that is not installed), 3 an internal error (a bug: please report it). Every failure
is one line on stderr, with credentials masked; ``--debug`` adds the traceback.

>>> describe_failure(FileNotFoundError(2, "No such file or directory", "/data/x.parquet"))
(2, 'No such file or directory: /data/x.parquet')
>>> describe_failure(ModuleNotFoundError("No module named 'skl2onnx'", name="skl2onnx"))
(2, "The module 'skl2onnx' needs the 'onnx' extra: pip install 'modelyard[onnx]'")
>>> describe_failure(KeyError("x"))[0]
3
"""

from __future__ import annotations

import traceback

from sqlalchemy import exc as sa_exc

from modelyard.errors import (
    FilterSyntaxError,
    GateFailedError,
    MissingExtraError,
    ModelyardError,
    StepFailedError,
)
from modelyard.store.urls import redact_text

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_INTERNAL",
    "EXIT_USAGE",
    "describe_failure",
    "printable_line",
    "traceback_of",
]

EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _printable(line: str) -> str:
    """Control and format characters escaped: a message must not drive the terminal."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in line)


def _os_error(exc: OSError) -> str:
    """``Permission denied: /data/out.html`` rather than ``[Errno 13] ...: '/data/out.html'``."""
    if exc.filename is None:
        return _one_line(str(exc))
    what = exc.strerror or type(exc).__name__
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{what}: {where}"


# errors of the data engines that mean "this file is not what it claims to be" (a text file
# named .parquet, a truncated CSV); matched by name so the CLI need not import the engines
_DATA_ERRORS = {
    ("pyarrow.lib", "ArrowInvalid"),
    ("_duckdb", "IOException"),
    ("_duckdb", "InvalidInputException"),
}
_DATA_WORDS = ("parquet", "csv", "json", "file", "magic bytes")


def _unreadable_data(exc: BaseException) -> bool:
    names = {(c.__module__, c.__name__) for c in type(exc).__mro__}
    message = str(exc).lower()
    return bool(names & _DATA_ERRORS) and any(word in message for word in _DATA_WORDS)


def printable_line(text: str) -> str:
    """``text`` on one line, credentials masked, control characters escaped."""
    return _printable(redact_text(_one_line(text)))


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line (or, for a filter, the caret block) for ``exc``."""
    code, message = _classify(exc)
    # A filter error keeps its caret block and an error listing problems keeps one line
    # per problem; every other message is one line, however its parts were written
    keep_lines = isinstance(exc, FilterSyntaxError) or (
        isinstance(exc, ModelyardError) and bool(exc.problems)
    )
    if keep_lines:
        return code, "\n".join(_printable(redact_text(line)) for line in message.splitlines())
    return code, printable_line(message)


def _classify(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, (GateFailedError, StepFailedError)):
        return EXIT_CHECK_FAILED, str(exc)
    if isinstance(exc, ModelyardError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ImportError):
        extra = MissingExtraError.from_import_error(exc)
        if extra is not None:
            return EXIT_USAGE, str(extra)
        return EXIT_INTERNAL, (
            f"internal error: {type(exc).__name__}: {_one_line(str(exc))} - a package modelyard "
            "needs is missing or broken; reinstall it: pip install --force-reinstall modelyard"
        )
    if isinstance(exc, OSError):
        return EXIT_USAGE, _os_error(exc)
    if isinstance(exc, sa_exc.ArgumentError):
        return EXIT_USAGE, f"Bad database URL or option: {_one_line(str(exc))}"
    if isinstance(exc, sa_exc.DBAPIError | sa_exc.OperationalError):
        detail = str(exc.orig) if exc.orig is not None else str(exc)
        return EXIT_USAGE, f"The metadata store failed: {_one_line(detail)}"
    if _unreadable_data(exc):
        return EXIT_USAGE, f"Cannot read the data: {_one_line(str(exc))}"
    if isinstance(exc, RecursionError):
        return EXIT_USAGE, (
            "The input is nested too deeply to process (a filter, JSON or YAML document "
            "with hundreds of levels of brackets); flatten it"
        )
    if isinstance(exc, OverflowError):
        return EXIT_USAGE, f"A number is too large: {_one_line(str(exc))}"
    name = type(exc).__name__
    detail = _one_line(str(exc))
    return EXIT_INTERNAL, (
        f"internal error: {name}{': ' + detail if detail else ''} "
        "(run with --debug for the traceback)"
    )


def traceback_of(exc: BaseException) -> str:
    """The full traceback as text, with credentials masked."""
    return redact_text("".join(traceback.format_exception(exc)))
