"""Reading the settings files: the section of a yaml file that holds a plugin's settings, the check that a key of
the host's section is a setting, and the note of where a bad value came from (``settings.load_server_config``).

Example: ``read_section(Path("etc/kuiper.yaml"), ("source", "pyhttppush"), where)`` → ``{"httpServerPort": 10090}``,
and ``where["httpServerPort"]`` → ``"etc/kuiper.yaml, key 'source.pyhttppush.httpServerPort'"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def read_section(path: Path, keys: tuple[str, ...], where: dict[str, str]) -> dict[str, Any]:
    """The mapping under ``keys`` (``("source",)``, ``("source", "pyhttppush")``) of the yaml file ``path``; ``{}``
    when the file or a key is absent. Notes in ``where`` the file and key each setting comes from."""
    if not path.is_file():
        return {}
    try:
        node: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(node, dict) or not isinstance(node.get(keys[0]) or {}, dict):
        raise ConfigError(f"{path}: expected a mapping with a '{keys[0]}:' section")
    for depth, key in enumerate(keys):
        node = node.get(key)
        if node is None:
            return {}
        if not isinstance(node, dict):
            dotted = ".".join(keys[: depth + 1])
            raise ConfigError(f"{path}, key '{dotted}' is {node!r}; must be a mapping of settings, e.g. "
                              f"{{httpServerPort: 10090}}")
    dotted = ".".join(keys)
    where.update({str(key): f"{path}, key '{dotted}.{key}'" for key in node})
    return dict(node)


def check_known(section: Mapping[Any, Any], known: list[str], path: Path, dotted: str) -> None:
    """Refuse a key of the host's ``source.<symbol>`` that is no setting: that section is the plugin's alone, and a
    misspelt setting would otherwise do nothing at all. Keys are case-sensitive: the file is read as written."""
    for key in section:
        if key not in known:
            near = [name for name in known if name.lower() == str(key).lower()]
            hint = f"did you mean '{near[0]}'?" if near else f"the settings are {', '.join(known)}"
            raise ConfigError(f"{path}, key '{dotted}.{key}' is not a setting of this plugin; {hint}")


def with_origin(message: str, where: Mapping[str, str]) -> str:
    """``message`` (``setting '<key>' …``) followed by where that key's value came from, if not a default."""
    if not message.startswith("setting '"):
        return message
    key = message.split("'", 2)[1]
    parent = key.split(".", 1)[0]
    origins = [where[key]] if key in where else [where[parent]] if parent in where else []
    origins += [origin for name, origin in where.items() if name.startswith(key + ".")]
    origins = list(dict.fromkeys(origins))
    return f"{message} (from {'; '.join(origins)})" if origins else message
