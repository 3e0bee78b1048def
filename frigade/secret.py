"""The API key as a secret type: every way of printing it shows a mask, never the key."""

from __future__ import annotations

import hmac
from typing import Literal

__all__ = ["ApiKey", "KeyKind"]

KeyKind = Literal["public", "private", "unknown"]

_PREFIXES: tuple[tuple[str, KeyKind], ...] = (("api_public_", "public"), ("api_private_", "private"))
_MASK = "**********"


class ApiKey:
    """A Frigade API key. ``str``/``repr``/``format`` show only the kind prefix; ``reveal()`` is for the
    Authorization header and nothing else.

    Pickling keeps the key (like ``pydantic.SecretStr``), so that a process-based runner can pass it on;
    pickled bytes are therefore as secret as the key itself.
    """

    __slots__ = ("_value",)

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("ApiKey needs a str")
        value = value.strip()
        if not value:
            raise ValueError("the API key is empty")
        if not all(33 <= ord(c) <= 126 for c in value):
            # Said without echoing the value: the message could end up in a log.
            raise ValueError("the API key has spaces or characters that cannot go in an HTTP header")
        # __setattr__ is blocked below so that the value cannot be swapped after construction
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    @property
    def kind(self) -> KeyKind:
        return next((kind for prefix, kind in _PREFIXES if self._value.startswith(prefix)), "unknown")

    @property
    def masked(self) -> str:
        prefix = next((p for p, _ in _PREFIXES if self._value.startswith(p)), "")
        return prefix + _MASK

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"ApiKey({self.masked!r})"

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiKey):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((ApiKey, self._value))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ApiKey is immutable")

    def __reduce__(self) -> tuple[type[ApiKey], tuple[str]]:
        return (ApiKey, (self._value,))

    def __copy__(self) -> ApiKey:
        return self

    def __deepcopy__(self, memo: object) -> ApiKey:
        return self
