"""The oldest and the newest supported Python (3.10, 3.13) end to end: ``dist/pyhttppush.zip`` installed by its
install.sh for a bare venv of that Python, started by the emulated host, records pushed over HTTP.

The interpreters come from pyenv (``$(pyenv root)/versions/3.10.*``, ``3.13.*``). Without one the test skips with
the reason; under ``CI=true`` it fails instead. Each bare venv (standard library and pip only, like a plain edge
host's python) is created once in ``<repo>/.cache/hostpy-<X.Y>`` and reused. On x86_64 pip finds wheels of every
dependency for 3.10–3.13 (pynng 0.8.1 included), so install.sh builds nothing here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.net import free_port
from harness.realhost import CACHE_DIR, _file_lock, _pip_works
from tests.hostemu import PluginHost, install_zip, loopback_env
from tests.support.http import push, sender
from tests.support.pythons import require_pyenv_python
from tests.support.sentinel import assert_sentinel_next_on_channels

try:  # the test's own zstd encoder (requirements-dev.txt)
    from compression import zstd as ZSTD  # type: ignore[import-not-found]  # noqa: N812
except ImportError:
    from backports import zstd as ZSTD  # type: ignore[import-not-found,no-redef]  # noqa: N812

#: The floor (Ubuntu 22.04's python; install.sh refuses older ones) and the newest release tested.
OLDEST, NEWEST = "3.10", "3.13"


def bare_venv(python: Path, minor: str) -> str:
    """The ``bin/python3`` of a venv made by ``python -m venv`` in ``<repo>/.cache/hostpy-<minor>`` (no system
    site-packages, nothing upgraded), created once and re-created when its pip fails or it was made from another
    interpreter (pyenv upgraded the patch release)."""
    venv = CACHE_DIR / f"hostpy-{minor}"
    venv_python = venv / "bin" / "python3"
    with _file_lock(CACHE_DIR / f"hostpy-{minor}.lock"):
        cfg = venv / "pyvenv.cfg"
        home = f"home = {python.parent}"
        if not (cfg.is_file() and home in cfg.read_text().splitlines() and _pip_works(venv_python)):
            result = subprocess.run([str(python), "-m", "venv", "--clear", str(venv)], capture_output=True,
                                    text=True, timeout=300, check=False)
            if result.returncode != 0 or not _pip_works(venv_python):
                raise RuntimeError(f"could not create {venv} with {python} -m venv (exit {result.returncode}):\n"
                                   f"{result.stdout}{result.stderr}")
    return str(venv_python)


@pytest.fixture(scope="module", params=[OLDEST, NEWEST])
def python_install(request: pytest.FixtureRequest, zips: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """(X.Y, the bare venv's python, the plugin dir of ``dist/pyhttppush.zip`` installed for it)."""
    minor: str = request.param
    python = bare_venv(require_pyenv_python(minor), minor)
    root = tmp_path_factory.mktemp(f"host-py{minor}")
    return minor, python, install_zip(zips["pyhttppush"], root, "pyhttppush", python)


@pytest.fixture
def plugin(python_install: tuple[str, str, Path]) -> Iterator[tuple[str, str, PluginHost, int]]:
    """The installed plugin started by the emulated host under that python, its server on a free loopback port."""
    minor, python, plugin_dir = python_install
    port = free_port()
    host = PluginHost(plugin_dir, "pyhttppush", python, env=loopback_env(port))
    try:
        yield minor, python, host, port
    finally:
        host.close()


def test_install_and_push(plugin: tuple[str, str, PluginHost, int]) -> None:
    """One JSON object, one array, two zstd frames (zstd installed), one undecodable body (400, nothing emitted),
    under Python 3.10 and 3.13."""
    minor, python, host, port = plugin
    try:
        version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert version == minor
        ch = host.start_source("r1", "s1", {"datasource": "/api/data"})

        reply = push(port, "/api/data", '{"temperature": 21.5, "id": "a1"}',
                     headers={"Content-Type": "application/json"})
        assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 1})
        assert ch.messages(1) == [{"temperature": 21.5, "id": "a1"}]

        reply = push(port, "/api/data", '[{"t": 1}, {"t": 2}]')
        assert (reply.status, reply.body) == (200, {"accepted": 2, "sources": 1})
        assert ch.messages(2) == [{"t": 1}, {"t": 2}]

        # zstd bodies: backports.zstd has wheels for both, installed by install.sh from requirements-optional.txt
        reply = push(port, "/api/data", ZSTD.compress(b'[{"z": 1}, ') + ZSTD.compress(b'{"z": 2}]'),
                     headers={"Content-Encoding": "zstd"})
        assert (reply.status, reply.body) == (200, {"accepted": 2, "sources": 1}), reply
        assert ch.messages(2) == [{"z": 1}, {"z": 2}]

        reply = push(port, "/api/data", "{not json")
        assert reply.status == 400, reply
        assert isinstance(reply.body, dict) and reply.body.get("error"), reply
        assert_sentinel_next_on_channels(sender(port, "/api/data"), ch)
        assert host.alive()
    except Exception as exc:
        raise AssertionError(f"Python {minor}: {exc}\n--- {host.log_path} (last lines) ---\n{host.log_tail()}") \
            from exc
