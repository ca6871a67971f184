"""The one convention of the training configs (``TrainingConfig``, ``RunConfig``, ``AdapterConfig``,
``PlannerConfig``).

A config is a dataclass decorated with :func:`config`: every field documented and checked at
construction, built from keyword arguments or from a saved dict (:meth:`ConfigMixin.from_dict`),
written back with :meth:`ConfigMixin.to_dict`. A key the config does not know raises
:class:`~kgllm.exceptions.ConfigurationError` naming it and the known ones, whether it comes as a
keyword argument or from a saved file: a misspelt setting never silently falls back to a default.
Fields added later keep older files loadable (they take their defaults).

Example::

    @config
    class RunConfig(ConfigMixin):
        learning_rate: float = 1e-3
        \"\"\"Peak learning rate.\"\"\"

    RunConfig.from_dict({"learning_rate": 3e-3})
    RunConfig(lr=3e-3)  # ConfigurationError: unknown RunConfig key 'lr' (did you mean 'learning_rate'?) ...
"""

from __future__ import annotations

import difflib
import functools
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, TypeVar, dataclass_transform

from kgllm.exceptions import ConfigurationError

C = TypeVar("C", bound="ConfigMixin")
T = TypeVar("T", bound=type)


def unknown_keys_error(cls: type, unknown: Iterable[str]) -> ConfigurationError:
    """The error for keys ``cls`` does not have: each one, a close known key if any, and every known key."""
    known = [f.name for f in fields(cls)]
    parts = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "key" if len(parts) == 1 else "keys"
    return ConfigurationError(f"unknown {cls.__name__} {noun} {', '.join(parts)}; known keys: {', '.join(known)}")


class ConfigMixin:
    """Loading and saving shared by the training configs; see :func:`config`."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values (nested configs become dicts)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a saved dict (``to_dict``'s output, or JSON); nested configs may be dicts.

        Raises ``ConfigurationError`` for a key this config does not know, naming the known ones."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{cls.__name__} needs a mapping of settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise unknown_keys_error(cls, unknown)
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in data.items():
            kind = hints.get(key)
            if isinstance(value, Mapping) and isinstance(kind, type) and issubclass(kind, ConfigMixin):
                value = kind.from_dict(value)
            values[key] = value
        return cls(**values)


@dataclass_transform()
def config(cls: T) -> T:
    """Make ``cls`` a config dataclass whose constructor refuses unknown keyword arguments with
    ``ConfigurationError`` (not ``TypeError``), as :meth:`ConfigMixin.from_dict` refuses unknown keys."""
    dataclass(cls)  # in place: without slots the decorator returns cls itself
    init = cls.__init__  # type: ignore[misc]
    known = frozenset(f.name for f in fields(cls))

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unknown = set(kwargs) - known
        if unknown:
            raise unknown_keys_error(cls, unknown)
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def check_config(value: Any, cls: type[C], name: str) -> C:
    """``value`` if it is a ``cls``, built from it if it is a dict; a ``ConfigurationError`` otherwise."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.from_dict(value)
    if is_dataclass(value):
        raise ConfigurationError(f"{name} must be a {cls.__name__}, got a {type(value).__name__}")
    raise ConfigurationError(f"{name} must be a {cls.__name__} or a dict, got {value!r}")
