"""Checks shared by the server settings (``settings.py``) and the endpoint properties (``properties.py``): each turns
a value from yaml, eKuiper's config map or the environment into a typed one, or raises :class:`ConfigError` naming it.

``what`` is how the value is named in the message: ``"setting 'httpServerPort'"``, ``"property 'cors.maxAge'"``.
Example: ``whole_number("setting 'httpServerPort'", "abc", 0, 65535)`` raises ``setting 'httpServerPort' is 'abc';
must be a whole number``.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def whole_number(what: str, value: Any, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{what} is {value!r}; must be a whole number") from None
    if number < low or (high is not None and number > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{what} is {number}; must be {bound}")
    return number


def seconds(what: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} is {value!r}; must be a number of seconds (e.g. 10 or 0.5)") from None
    if not 0 < number <= 86400:
        raise ConfigError(f"{what} is {value!r}; must be more than 0 and at most 86400 seconds")
    return number


def seconds_or_off(what: str, value: Any) -> float:
    """Seconds, or 0.0 for none (``0``, ``off``, ``false``, empty)."""
    if switched_off(value):
        return 0.0
    try:
        if float(value) == 0:
            return 0.0
    except (TypeError, ValueError):
        pass  # seconds() says what is wrong with it
    return seconds(what, value)


def string_list(what: str, value: Any) -> list[str]:
    """A list of non-empty strings; a string is split on commas (as eKuiper's UI sends lists)."""
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"{what} is {value!r}; must be a list of non-empty strings")
    return items


def switched_off(value: Any) -> bool:
    """``None``, ``False``, ``""``, ``{}``, ``[]``, or the text ``false``/``off``/``none``: the feature is off."""
    if value is None or value is False or value in ("", {}, []):
        return True
    return isinstance(value, str) and value.strip().lower() in ("false", "off", "none")


def switched_on(value: Any) -> bool:
    """``True`` or the text ``true``."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def mapping(what: str, value: Any, keys: dict[str, str], example: str) -> dict[str, Any]:
    """A mapping whose keys are among ``keys`` (lower-case → shown name), read case-insensitively: eKuiper lowercases
    the nested keys of its yaml files (``maxage``). Returns it with lower-case keys."""
    if not isinstance(value, dict):
        raise ConfigError(f"{what} is {value!r}; must be a mapping, e.g. {example}")
    for key in value:
        if str(key).lower() not in keys:
            names = list(keys.values())
            allowed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
            raise ConfigError(f"{what} has key {key!r}; allowed keys are {allowed}")
    return {str(key).lower(): item for key, item in value.items()}
