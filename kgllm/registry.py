"""Name -> implementation registries, one per extension point.

Implementations are registered as ``"module:Class"`` strings so heavy back-ends
import only when chosen. Other packages add their own through an entry-point
group (``[project.entry-points."kgllm.stores"] mystore = "pkg.module:MyStore"``),
read the first time a registry is asked for a name. ``resolve`` accepts a name,
a class or a ready instance.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points as installed_entry_points
from typing import Any, Generic, TypeVar, cast

from kgllm.exceptions import ConfigurationError, MissingDependencyError

T = TypeVar("T")


class Registry(Generic[T]):
    """The implementations of one extension point (``base``), by name.

    >>> from kgllm.graph import stores
    >>> stores.names()[:2]
    ['neo4j', 'rdflib']
    """

    def __init__(self, kind: str, base: type[T], entry_points: str | None = None):
        self.kind = kind
        self.base = base
        self.entry_point_group = entry_points
        self._entries: dict[str, str | type[T]] = {}
        self._extras: dict[str, str] = {}
        self._plugins_read = entry_points is None

    def register(self, name: str, target: str | type[T], extra: str | None = None) -> None:
        """Make ``target`` (a class or ``"module:Class"``) available as ``name``; ``extra`` is the
        pip extra that installs its dependencies."""
        self._entries[name.lower()] = target
        if extra:
            self._extras[name.lower()] = extra

    def names(self) -> list[str]:
        """Every registered name, third-party entry points included."""
        self._read_plugins()
        return sorted(self._entries)

    def check(self, name: str) -> str:
        """``name`` normalized, or a :class:`ConfigurationError` listing the known names."""
        if name.lower() not in self.names():
            raise ConfigurationError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return name.lower()

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, imported on first use."""
        key = self.check(name)
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
                raise ConfigurationError(
                    f"{self.kind} instance given: these keyword arguments would be ignored: {sorted(kwargs)}"
                )
            return spec
        cls = self.get(spec) if isinstance(spec, str) else spec
        if not (inspect.isclass(cls) and issubclass(cls, self.base)):
            raise ConfigurationError(f"{spec!r} is not a {self.kind}")
        return cast(T, cls(**kwargs))

    def _read_plugins(self) -> None:
        if self._plugins_read or self.entry_point_group is None:
            return
        self._plugins_read = True
        for point in installed_entry_points(group=self.entry_point_group):
            self._entries.setdefault(point.name.lower(), point.value)
