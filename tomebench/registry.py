"""A small name -> object registry with aliases and "did you mean" answers, one instance per kind; and the one
close-match search every unknown name (reducers, families, timm and torchvision models) is answered with."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from tomebench.errors import UsageError, one_line

T = TypeVar("T")


def close_matches(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The known names closest to `name` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=cutoff)]


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.5, prefix: str = "") -> str:
    """ "did you mean a or b?" for the closest known names, or "" when none is close."""
    close = close_matches(name, choices, cutoff=cutoff)
    return f"did you mean {' or '.join(prefix + c for c in close)}?" if close else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    aliases: tuple[str, ...] = ()


class Registry(Generic[T]):
    """Maps names (and aliases) to objects. Registering a taken name raises; unknown names suggest close ones.
    Names match case-insensitively (`ToMe` is `tome`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, description: str = "", aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def add(obj: T) -> T:
            for key in (name, *aliases):
                if key.lower() in self._keys():
                    raise ValueError(f"{self.kind} {key!r} is already registered")
            doc_lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            text = description or (doc_lines[0] if doc_lines else "")
            self._entries[name] = Entry(name, obj, text, tuple(aliases))
            self._aliases.update(dict.fromkeys(aliases, name))
            return obj

        return add

    def _keys(self) -> dict[str, str]:
        """Every name and alias, lower-cased -> the registered name."""
        keys = {name.lower(): name for name in self._entries}
        keys.update({alias.lower(): name for alias, name in self._aliases.items()})
        return keys

    def canonical(self, name: str) -> str:
        """The registered name behind `name` (itself or an alias, any case); unknown names raise a UsageError."""
        if name in self._entries:
            return name
        found = self._keys().get(str(name).strip().lower())
        if found is not None:
            return found
        hint = did_you_mean(str(name), [*self._entries, *self._aliases])
        raise UsageError(
            f"unknown {self.kind} {name!r}; {hint + ' ' if hint else ''}(known: {', '.join(sorted(self._entries))})"
        )

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)].obj

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._keys()

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)


def import_submodules(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> None:
    """Import every module of a package (the built-in reducers or model families register themselves on import),
    so adding one is adding one file. Modules whose name starts with "_" or is in `skip` are left alone."""
    skip = set(skip)
    for module in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not module.name.startswith("_") and module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")


def load_plugins(group: str) -> list[str]:
    """Load the third-party plug-ins of an entry point group (each registers itself when loaded); returns one line
    per plug-in that failed to load, which never stops the built-ins from working."""
    failed = []
    for point in entry_points(group=group):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported, not fatal
            failed.append(f"plug-in {point.name} ({point.value}) of {group} failed to load: {one_line(exc)}")
    return failed
