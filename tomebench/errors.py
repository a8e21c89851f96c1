"""The errors tomebench raises for bad input: the CLI turns each into one line and an exit code."""


class TomebenchError(Exception):
    """A problem the user can fix; its message is one line that says what is wrong and what to do."""

    exit_code = 1


class UsageError(TomebenchError):
    """Bad arguments or configuration (unknown name, malformed range, impossible device)."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """An exception as one line for a CSV `error` cell: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
