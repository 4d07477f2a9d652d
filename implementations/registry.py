"""What the extension points share: a registry of named entries, and config fields declared by an
entry beside its code.

An extension (a compressor, a teacher kind, a distillation objective) is one class registered by
name in its own module (``compressors.py``, ``teachers.py``, ``objectives.py``). The config fields
that only it uses (a compressor's ``topk``, a teacher kind's ``members``) are declared with it as
``ConfigField``s: ``spec.py`` adds them to its section (``with_fields``), so that the TOML files,
sweeps and error messages know them, and checks their values with the rule declared beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from distillbench.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config value or file that cannot be used."""


def is_int(value: Any) -> bool:
    """An integer, not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ConfigField:
    """A config field declared by an extension: its default (which also gives its type in a TOML
    file), and its rule: ``valid(value)``, and what the error says the value must be."""

    default: bool | int | float | str
    valid: Callable[[Any], bool]
    must_be: str  # e.g. "an integer >= 1": the error reads "<field>: must be an integer >= 1, got 0"

    def check(self, where: str, value: Any) -> None:
        if not self.valid(value):
            raise ConfigError(f"{where}: must be {self.must_be}, got {value!r}")


class Registry(dict[str, T]):
    """Named entries of one extension point, in registration order (the order errors list them)."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what  # as errors name an entry: "teacher kind", "compressor"

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self[name] = entry
        return entry

    def known(self, name: str, where: str) -> T:
        """The entry of this name; a config naming another is refused, listing the known ones."""
        if name not in self:
            raise ConfigError(f"{where}: unknown {self.what} {name!r} (known: {', '.join(self)})")
        return self[name]


def merge_fields(owners: dict[str, dict[str, ConfigField]]) -> dict[str, ConfigField]:
    """The fields of all these entries (owner name -> its fields), each once, in order. Two entries
    may share a field (both ``quantize`` compressors use ``bits``) only by declaring the same one."""
    merged: dict[str, ConfigField] = {}
    for owner, fields in owners.items():
        for name, declared in fields.items():
            if merged.setdefault(name, declared) != declared:
                raise ValueError(f"{owner}: field {name!r} is declared differently by another entry")
    return merged


def with_fields(fields: dict[str, ConfigField]) -> Callable[[type[T]], type[T]]:
    """Class decorator, under ``@dataclass``: append these fields (with their defaults) to the
    class's own, so that they are dataclass fields like the others."""

    def add(cls: type[T]) -> type[T]:
        for name, declared in fields.items():
            if name in cls.__annotations__:
                raise ValueError(f"{cls.__name__}.{name} is declared twice")
            cls.__annotations__[name] = type(declared.default).__name__
            setattr(cls, name, declared.default)
        return cls

    return add
