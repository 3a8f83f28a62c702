"""The two zips: what eKuiper's installer requires, each with its own symbol and default port, nothing of the
developer's environment; and the httppush variant served end to end by the emulated host."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from harness.net import free_port
from httppush_plugin import __version__
from httppush_plugin.settings import DEFAULT_PORTS
from tests.hostemu import PluginHost, install_zip
from tests.support.http import push


@pytest.mark.parametrize("variant", sorted(DEFAULT_PORTS))
def test_zip_layout(zips: dict[str, Path], variant: str) -> None:
    with zipfile.ZipFile(zips[variant]) as zf:
        names = set(zf.namelist())
        descriptor = json.loads(zf.read(f"{variant}.json"))
        assert descriptor == {"version": __version__, "language": "python", "executable": "main.py",
                              "sources": [variant]}
        assert {"main.py", "install.sh", "requirements.txt", "requirements-optional.txt", f"sources/{variant}.yaml",
                f"sources/{variant}.json", "etc/kuiper.yaml", "decoders/kv.py", "httppush_plugin/source.py"} <= names
        assert not any(n.startswith(("lib/", ".venv", "tests/", ".cache")) or "__pycache__" in n for n in names)
        assert all(not n.startswith("/") and not n.startswith(variant + "/") for n in names), "no top folder"
        server = yaml.safe_load(zf.read("etc/kuiper.yaml"))["source"]
        assert server["httpServerPort"] == DEFAULT_PORTS[variant]
        meta = json.loads(zf.read(f"sources/{variant}.json"))
        assert f":{DEFAULT_PORTS[variant]}/api/data" in meta["dataSource"]["hint"]["en_US"]
        assert yaml.safe_load(zf.read(f"sources/{variant}.yaml"))["default"]["method"] == "POST"
    other = {"pyhttppush": "httppush", "httppush": "pyhttppush"}[variant]
    assert not any(n.startswith(f"sources/{other}.") for n in names), "a zip must not touch the other symbol's files"


def test_httppush_variant_serves_type_httppush(zips: dict[str, Path], host_python: str,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    plugin_dir = install_zip(zips["httppush"], tmp_path_factory.mktemp("host-httppush"), "httppush", host_python)
    port = free_port()
    host = PluginHost(plugin_dir, "httppush", host_python,
                      env={"HTTPPUSH_SERVER_IP": "127.0.0.1", "HTTPPUSH_SERVER_PORT": str(port),
                           "PYHTTPPUSH_SERVER_PORT": "1"})  # the other variant's variable must not apply
    try:
        assert host.symbol == "httppush"
        ch = host.start_source("r1", "s1", {"datasource": "/legacy"})
        assert push(port, "/legacy", '{"v": 1}').status == 200
        assert ch.messages(1) == [{"v": 1}]
    finally:
        host.close()
