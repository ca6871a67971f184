"""Readable labels from identifiers: ``south_africa`` -> "South Africa", ``neighborOf`` -> "neighbor of"."""

from __future__ import annotations

import re
from urllib.parse import unquote

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[_\s]+")
_MINOR_WORDS = frozenset({"and", "of", "the", "in", "on", "at", "for", "to", "a", "an", "de", "da"})


def local_name(identifier: str) -> str:
    """The last segment of an IRI (after ``#``, ``/`` or ``:``), unquoted."""
    for sep in ("#", "/", ":"):
        if sep in identifier.rstrip(sep):
            identifier = identifier.rstrip(sep).rsplit(sep, 1)[1]
            break
    return unquote(identifier)


def readable(identifier: str, relation: bool = False) -> str:
    """A label for people: words split at camelCase and underscores.

    Entities get each lower-case word capitalized (hyphenated parts too);
    relations stay lower case, as they read inside a sentence.
    """
    words = _SEPARATORS.split(_CAMEL.sub(" ", local_name(identifier)).strip())
    words = [w for w in words if w]
    if relation:
        return " ".join(w.lower() if not w.isupper() else w for w in words)
    return " ".join(w if i and w in _MINOR_WORDS else _capitalize(w) for i, w in enumerate(words))


def _capitalize(word: str) -> str:
    return "-".join(p[:1].upper() + p[1:] if p.islower() else p for p in word.split("-"))


def normalize(text: str) -> str:
    """Case- and separator-insensitive key for matching labels."""
    return " ".join(_SEPARATORS.split(text.replace("-", " ").lower())).strip()
