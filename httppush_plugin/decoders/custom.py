"""FORMAT="custom": a user's function ``decode(body: bytes) -> dict | list[dict]``, named ``"<module>:<function>"``."""

from __future__ import annotations

import importlib.util
import threading
import types
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..layout import SearchPaths
from .base import CustomDecoderFault, DecodeError, Decoder, Record, find_file

# Modules are loaded under this prefix, never into sys.modules: a user's "json.py" can't shadow anything
_MODULE_PREFIX = "httppush_decoders"


class CustomDecoder(Decoder):
    """A user's function ``decode(body: bytes) -> dict | list[dict]`` named ``"<module>:<function>"``, loaded from
    ``<module>.py`` in ``$HTTPPUSH_DECODERS_PATH`` or the plugin's ``decoders/`` folder.

    The function must be defined in that module with ``def`` (not imported into it, not a class or a builtin), so a
    setting like ``"os:system"`` or ``"kv:json"`` can't reach anything but the user's own code. It may raise
    ``ValueError`` to reject a body: the client gets 400 with its message. Example: ``"kv:decode"`` is ``decode`` in
    ``decoders/kv.py``.
    """

    format = "custom"

    def __init__(self, ref: str, paths: SearchPaths) -> None:
        module_name, sep, attr = ref.partition(":")
        if not sep or not module_name.isidentifier() or not attr.isidentifier():
            raise ConfigError(f"property 'decoder' is {ref!r}; must be \"<module>:<function>\" with two Python "
                              "identifiers (e.g. \"kv:decode\")")
        path, mtime = find_file(f"{module_name}.py", paths.decoder_dirs(), "property 'decoder'", ref)
        module = _load_module(path, mtime)
        fn = getattr(module, attr, None)
        if fn is None:
            raise ConfigError(f"property 'decoder' is {ref!r}, but {path} has no function {attr!r}")
        if not isinstance(fn, types.FunctionType) or fn.__module__ != module.__name__:
            raise ConfigError(f"property 'decoder' is {ref!r}, but {attr!r} in {path} is {_describe(fn)}; must be a "
                              f"plain function defined in {path.name} with 'def'")
        self.ref = ref
        self.fn: Callable[[bytes], Any] = fn

    @property
    def key(self) -> Hashable:
        return (type(self), self.fn)

    def decode(self, body: bytes) -> list[Record]:
        try:
            result = self.fn(body)
        except ValueError as exc:
            raise DecodeError(f"decoder {self.ref!r} rejected the body: {exc}") from None
        if isinstance(result, dict):
            return [result]
        if isinstance(result, list) and all(isinstance(item, dict) for item in result):
            return result
        raise CustomDecoderFault(f"decoder {self.ref!r} returned {type(result).__name__}; must be a dict or a "
                                 "list of dicts")


def _describe(value: Any) -> str:
    if isinstance(value, types.FunctionType):
        return f"a function imported from {value.__module__}"
    if isinstance(value, type):
        return "a class"
    return f"a {type(value).__name__}, not a function"


_modules_lock = threading.Lock()
_modules: dict[tuple[Path, float], Any] = {}


def _load_module(path: Path, mtime: float) -> Any:
    with _modules_lock:
        if (path, mtime) not in _modules:
            spec = importlib.util.spec_from_file_location(f"{_MODULE_PREFIX}.{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot load decoder module {path}")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # the user's module failed to import: say so at start
                raise ConfigError(f"decoder module {path} failed to load: {type(exc).__name__}: {exc}") from exc
            _modules[(path, mtime)] = module
        return _modules[(path, mtime)]
