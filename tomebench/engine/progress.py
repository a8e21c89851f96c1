"""How the engine tells what it is doing: phases with a count, and one-line notes the user should read."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def phase(self, name: str, total: int) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def note(self, text: str) -> None:
        """One line the user should read, not an error (optional: progress objects without it skip notes)."""
        ...


class Silent:
    """Progress that says nothing (the Python API's default)."""

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass
