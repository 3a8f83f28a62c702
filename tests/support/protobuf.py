"""A protobuf message class compiled from a ``.proto`` file exactly as the plugin compiles the schemas it decodes
with: the tests encode bodies with it (test_plugin_protocol, test_realhost_formats) and the protobuf fuzz oracle
parses bodies with it, so that all agree with the plugin on the schema and differ from it only in what they check.

This is the one place the tests reach into the plugin's protobuf internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from httppush_plugin.decoders import _compile_message


def message_class(proto: Path, name: str) -> Any:
    """The message class ``name`` of ``proto`` (imports are looked up in the file's own folder)."""
    return _compile_message(proto, proto.stat().st_mtime, name, (proto.parent,))
