"""The errors tomebench raises for bad input: the CLI turns each into one line and an exit code."""


class TomebenchError(Exception):
    """A problem the user can fix; its message is one line that says what is wrong and what to do."""

    exit_code = 1


class UsageError(TomebenchError):
    """Bad arguments or configuration (unknown name, malformed range, impossible device)."""

    exit_code = 2
