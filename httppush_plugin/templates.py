"""Path templates: a DATASOURCE with ``{name}`` segments (``/devices/{id}/telemetry``), each variable one whole,
non-empty segment. The endpoint table (``routing.py``) tries them when no literal route matches.

Example: ``Template.parse("/devices/{id}/telemetry").params("/devices/42/telemetry")`` → ``{"id": "42"}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .meta import TEMPLATE_VARIABLE


@dataclass(frozen=True)
class Template:
    """A DATASOURCE with ``{name}`` segments. Example: ``Template.parse("/devices/{id}/telemetry")`` matches
    ``/devices/42/telemetry`` with ``params(...) == {"id": "42"}``."""

    path: str
    #: per segment of ``path.split("/")``: ``(literal text, False)`` or ``(variable name, True)``
    parts: tuple[tuple[str, bool], ...]

    @classmethod
    def parse(cls, path: str) -> Template:
        parts: list[tuple[str, bool]] = []
        for segment in path.split("/"):
            variable = TEMPLATE_VARIABLE.fullmatch(segment)
            if variable is not None:
                parts.append((variable.group(1), True))
            elif "{" in segment or "}" in segment:
                raise ConfigError(f"DATASOURCE is {path!r}; segment {segment!r} is not a template variable: a "
                                  "variable is {name} (letters, digits, _) filling a whole segment, e.g. "
                                  "'/devices/{id}/telemetry'")
            else:
                parts.append((segment, False))
        names = [text for text, variable in parts if variable]
        if len(set(names)) != len(names):
            raise ConfigError(f"DATASOURCE is {path!r}; a template variable name may appear once")
        return cls(path, tuple(parts))

    def matches(self, segments: list[str]) -> bool:
        """``segments``: a request path split on ``/``. A variable matches any one non-empty segment."""
        if len(segments) != len(self.parts):
            return False
        for (text, variable), segment in zip(self.parts, segments, strict=True):
            if (not segment) if variable else segment != text:
                return False
        return True

    def params(self, path: str) -> dict[str, str]:
        """The variables' values in ``path``, which :meth:`matches`."""
        segments = path.split("/")
        return {text: segment for (text, variable), segment in zip(self.parts, segments, strict=True) if variable}

    def overlaps(self, other: Template) -> str | None:
        """A path both templates match (e.g. ``/devices/x/telemetry``), or ``None`` when there is none."""
        if len(self.parts) != len(other.parts):
            return None
        example: list[str] = []
        for (text, variable), (other_text, other_variable) in zip(self.parts, other.parts, strict=True):
            if not variable and not other_variable and text != other_text:
                return None
            example.append(text if not variable else other_text if not other_variable else "x")
        return "/".join(example)
