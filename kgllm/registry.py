"""Name -> implementation registries for every extension point.

Implementations are registered as ``"module:Class"`` strings so heavy back-ends
import only when chosen. ``resolve`` accepts a name, a class or a ready instance.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Generic, TypeVar

from kgllm.exceptions import ConfigurationError, MissingDependencyError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, base: type[T]):
        self.kind = kind
        self.base = base
        self._entries: dict[str, str | type[T]] = {}
        self._extras: dict[str, str] = {}

    def register(self, name: str, target: str | type[T], extra: str | None = None) -> None:
        self._entries[name.lower()] = target
        if extra:
            self._extras[name.lower()] = extra

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        key = name.lower()
        if key not in self._entries:
            raise ConfigurationError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        target = self._entries[key]
        if isinstance(target, str):
            module_name, _, class_name = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                extra = self._extras.get(key)
                hint = f'pip install "kgllm[{extra}]"' if extra else "reinstall kgllm"
                raise MissingDependencyError(f"{self.kind} {name!r} needs {exc.name!r}: {hint}") from exc
            target = getattr(module, class_name)
            self._entries[key] = target
        return target

    def resolve(self, spec: str | type[T] | T, kwargs: dict[str, Any] | None = None) -> T:
        """Build an instance from a name, a class or an instance (kwargs must then be empty)."""
        kwargs = kwargs or {}
        if isinstance(spec, self.base):
            if kwargs:
                raise ConfigurationError(f"{self.kind} instance given: these keyword arguments would be ignored: {sorted(kwargs)}")
            return spec
        cls = self.get(spec) if isinstance(spec, str) else spec
        if not (inspect.isclass(cls) and issubclass(cls, self.base)):
            raise ConfigurationError(f"{spec!r} is not a {self.kind}")
        return cls(**kwargs)
