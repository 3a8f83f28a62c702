"""Shared fixtures: the packaged zips, a plugin installed from them, an emulated host, and a small HTTP client."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port
from tests.hostemu import PluginHost, install_zip

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realhost: runs against a real eKuiper (kuiperd) process")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


def push(port: int, path: str, body: bytes | str, method: str = "POST", headers: dict[str, str] | None = None,
         tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> Reply:
    """One HTTP request to the plugin over loopback; the JSON answer parsed (or the raw text)."""
    data = body.encode() if isinstance(body, str) else body
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Reply(resp.status, parsed, {k: v for k, v in resp.getheaders()})
    finally:
        conn.close()


@pytest.fixture(scope="session")
def zips() -> dict[str, Path]:
    """``make package`` output, built once per session from the working tree."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "package.py"), "--out", str(DIST)], check=True,
                   capture_output=True)
    return {name: DIST / f"{name}.zip" for name in ("pyhttppush", "httppush")}


@pytest.fixture(scope="session")
def host_python() -> str:
    """A python with only the standard library and pip, as on a plain edge host: install.sh must bring the rest."""
    from harness.realhost import host_python as make

    return make()


@pytest.fixture(scope="session")
def installed(zips: dict[str, Path], host_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dist/pyhttppush.zip`` installed into an emulated host tree, install.sh included; returns the plugin dir."""
    root = tmp_path_factory.mktemp("host")
    return install_zip(zips["pyhttppush"], root, "pyhttppush", host_python)


@pytest.fixture
def server_port() -> int:
    return free_port()


@pytest.fixture
def make_host(installed: Path, host_python: str) -> Iterator[Callable[..., PluginHost]]:
    """Start the installed plugin under the emulated host, its server on 127.0.0.1:``port`` plus ``extra_env``;
    every host started is closed at teardown."""
    started: list[PluginHost] = []

    def start(port: int, **extra_env: str) -> PluginHost:
        env = {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(port), **extra_env}
        started.append(PluginHost(installed, "pyhttppush", host_python, env=env))
        return started[-1]

    yield start
    for plugin_host in started:
        plugin_host.close()


@pytest.fixture
def host(make_host: Callable[..., PluginHost], server_port: int) -> Iterator[PluginHost]:
    """The installed plugin, started by the emulated host, its server on a free loopback port."""
    plugin_host = make_host(server_port)
    yield plugin_host
    assert plugin_host.alive(), f"the plugin process died during the test; its log:\n{plugin_host.log_tail()}"


@pytest.fixture(autouse=True)
def _no_stray_env() -> Iterator[None]:
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)
