"""Where eKuiper keeps its files, seen from the plugin's folder: the host root, the host's ``etc/kuiper.yaml``, and
the folders schemas and decoders are looked up in.

eKuiper installs a portable plugin into ``<host root>/plugins/portable/<name>/`` (``docs/host-behaviour.md`` §1), so
the host's ``etc/`` and ``data/`` are three levels up. Example: for ``/kuiper/plugins/portable/pyhttppush``,
``host_root(...)`` is ``/kuiper`` and the protobuf schemas are in ``/kuiper/etc/schemas/protobuf`` and
``/kuiper/data/schemas/protobuf``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: eKuiper's deb/rpm packages are built with ``LoadFileType=absolute``: plugins in ``/var/lib/kuiper/plugins``, the
#: host's own settings in ``/etc/kuiper`` (``internal/conf/path.go`` ``AbsoluteMapping``).
ABSOLUTE_HOST_ROOT = Path("/var/lib/kuiper")
ABSOLUTE_HOST_CONFIG = Path("/etc/kuiper/kuiper.yaml")
#: Extra folders of custom decoders, searched before the plugin's own ``decoders/``.
DECODERS_PATH_VARIABLE = "HTTPPUSH_DECODERS_PATH"


def host_root(plugin_dir: Path) -> Path:
    """eKuiper installs a portable plugin into ``<host root>/plugins/portable/<name>/``."""
    return plugin_dir.parents[2] if len(plugin_dir.parents) > 2 else plugin_dir


def host_config_path(plugin_dir: Path, environ: Mapping[str, str]) -> Path | None:
    """The host's own ``etc/kuiper.yaml``, the one kuiperd reads, or ``None`` if there is none to be found.

    The first that exists of: ``$KuiperBaseKey/etc/kuiper.yaml`` (kuiperd's base folder when that variable is set; the
    plugin inherits kuiperd's environment), ``<host root>/etc/kuiper.yaml`` (relative layout, kuiperd run from the
    host root: release tarballs, the Docker images), ``/etc/kuiper/kuiper.yaml`` for plugins in
    ``/var/lib/kuiper/plugins`` (the deb/rpm layout). Installing, upgrading or deleting a plugin never writes it.
    """
    own = plugin_dir / "etc" / "kuiper.yaml"
    candidates = [Path(environ["KuiperBaseKey"]) / "etc" / "kuiper.yaml"] if environ.get("KuiperBaseKey") else []
    candidates.append(host_root(plugin_dir) / "etc" / "kuiper.yaml")
    if host_root(plugin_dir) == ABSOLUTE_HOST_ROOT:
        candidates.append(ABSOLUTE_HOST_CONFIG)
    return next((path for path in candidates if path != own and path.is_file()), None)


@dataclass(frozen=True)
class SearchPaths:
    """Where schema and decoder files are looked up. The plugin lives in ``<host>/plugins/portable/<name>/``."""

    plugin_dir: Path

    @property
    def host_root(self) -> Path:
        return host_root(self.plugin_dir)

    def protobuf_dirs(self) -> list[Path]:
        # eKuiper's own protobuf converter imports from etc/ then data/ (internal/converter/protobuf/converter.go)
        return [
            self.host_root / "etc" / "schemas" / "protobuf",
            self.host_root / "data" / "schemas" / "protobuf",
            self.plugin_dir / "schemas" / "protobuf",
        ]

    def decoder_dirs(self, environ: Mapping[str, str] | None = None) -> list[Path]:
        env = os.environ if environ is None else environ
        extra = [Path(p) for p in env.get(DECODERS_PATH_VARIABLE, "").split(os.pathsep) if p]
        return [*extra, self.plugin_dir / "decoders"]
