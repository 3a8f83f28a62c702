"""Every shared fixture (helpers live in non-test modules: ``tests/support/``, ``tests/hostemu.py``,
``tests/realhost_support.py``, ``tests/fuzz/``):

* the packaged zips, a bare host python, the plugin installed from the zip into an emulated host tree;
* ``make_host`` / ``host`` / ``plugin``: the installed plugin under the emulated host (``tests/hostemu.py``);
  ``plugin`` starts it with extra environment and fails the test if it logged a traceback;
* ``pki``: the session's openssl certificates (``tests/support/pki.py``);
* ``fuzz``: one plugin per fuzz module with a source per format (``tests/fuzz/runner.py``);
* ``ekuiper`` / ``record_sink`` / ``ctx``: the one real eKuiper that the
  ``test_realhost_{formats,rules,lifecycle,operations}`` modules share (helpers in ``tests/realhost_support.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.net import free_port
from tests.hostemu import SEND_TIMEOUT_MS, PluginHost, install_zip, loopback_env
from tests.support.pki import Pki, make_pki

if TYPE_CHECKING:
    from harness.realhost import EkuiperHost, RecordSink
    from tests.fuzz.runner import Fuzz
    from tests.realhost_support import Ctx

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"


#: The fixture that starts the session's shared real eKuiper (see :func:`ekuiper`).
SHARED_HOST_FIXTURE = "ekuiper"
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realhost: runs against a real eKuiper (kuiperd) process")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests on the session's shared real eKuiper last, together, whatever order the files were given in.

    That host lives until the session ends and listens on ``/tmp/plugin_pyhttppush.ipc``. The emulated host listens
    on the same path (and would not wait: ``harness.hostlock`` is re-entrant within a process), and the benchmark's
    kuiperd runs in another process that would wait on that lock until the session ends. So nothing else may run once
    the shared host has started. Relative order is kept, so the host still starts only once.
    """
    shared = [item for item in items if SHARED_HOST_FIXTURE in getattr(item, "fixturenames", ())]
    if shared:
        ids = {id(item) for item in shared}
        items[:] = [item for item in items if id(item) not in ids] + shared


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so that a fixture's teardown can tell whether the test passed."""
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[report.when] = report


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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session's openssl PKI (tests/support/pki.py): a CA, a server certificate for localhost and 127.0.0.1,
    a client certificate, and a stranger's signed by another CA. Made once: openssl takes a while."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server_port() -> int:
    return free_port()


@pytest.fixture
def make_host(installed: Path, host_python: str) -> Iterator[Callable[..., PluginHost]]:
    """Start the installed plugin under the emulated host, its server on 127.0.0.1:``port`` plus ``extra_env``
    (``send_timeout_ms``: the ``sendTimeout`` the host passes, as eKuiper's ``portable.sendTimeout``).

    At teardown every plugin started must still be running (a test that makes it exit on purpose says
    ``may_exit=True``); then each is closed."""
    started: list[tuple[PluginHost, bool]] = []

    def start(port: int, *, may_exit: bool = False, send_timeout_ms: int = SEND_TIMEOUT_MS,
              **extra_env: str) -> PluginHost:
        started.append((PluginHost(installed, "pyhttppush", host_python, env=loopback_env(port, **extra_env),
                                   send_timeout_ms=send_timeout_ms), may_exit))
        return started[-1][0]

    yield start
    try:
        for plugin_host, may_exit in started:
            if not may_exit:
                plugin_host.assert_alive()
    finally:
        for plugin_host, _ in started:
            plugin_host.close()


@pytest.fixture
def plugin(make_host: Callable[..., PluginHost], server_port: int) -> Iterator[Callable[..., PluginHost]]:
    """Start the plugin with extra environment; at teardown it must be alive (``make_host``) and have logged no
    traceback."""
    started: list[PluginHost] = []

    def start(**env: str) -> PluginHost:
        started.append(make_host(server_port, **env))
        return started[-1]

    yield start
    for host in started:
        log = host.log_text()
        assert "Traceback" not in log, f"the plugin logged a traceback:\n{log[-3000:]}"


@pytest.fixture
def host(make_host: Callable[..., PluginHost], server_port: int) -> PluginHost:
    """The installed plugin, started by the emulated host, its server on a free loopback port."""
    return make_host(server_port)


@pytest.fixture(scope="module")
def fuzz(installed: Path, host_python: str, request: pytest.FixtureRequest) -> Iterator[Fuzz]:
    """One plugin per fuzz module (tests/fuzz/runner.py ``start_fuzz``): a source per format, small limits, short
    timeouts. Its summary (cases per format, time, statuses) is printed when it stops, with or without ``-s``."""
    from tests.fuzz.runner import start_fuzz, summary

    with start_fuzz(installed, host_python) as state:
        yield state
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if capture is None:
            print("\n" + summary(state))
        else:
            with capture.global_and_fixture_disabled():
                print("\n" + summary(state))


@pytest.fixture(autouse=True)
def _no_stray_env() -> Iterator[None]:
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


# --------------------------------------------------------------------------------------------------------------------
# The real eKuiper shared by tests/test_realhost_{formats,rules,lifecycle,operations}.py
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def plugin_port() -> int:
    """The port the real host's plugin serves on (``PYHTTPPUSH_SERVER_PORT``)."""
    return free_port()


@pytest.fixture(scope="session")
def ekuiper(tmp_path_factory: pytest.TempPathFactory, zips: dict[str, Path], plugin_port: int) -> Iterator[EkuiperHost]:
    """ONE real eKuiper for the whole session, with dist/pyhttppush.zip installed once through
    ``POST /plugins/portables`` (starting and installing take ~15-20 s). Tests reach it through :func:`ctx`."""
    from harness.realhost import EkuiperHost, require_kuiperd
    from tests.realhost_support import PLUGIN, realhost_env

    require_kuiperd()
    with EkuiperHost(tmp_path_factory.mktemp("realhost-plugin"), extra_env=realhost_env(plugin_port)) as host:
        host.install_plugin(PLUGIN, zips["pyhttppush"])
        assert host.plugin_status(PLUGIN)["status"] == "running"
        yield host


@pytest.fixture(scope="session")
def record_sink() -> Iterator[RecordSink]:
    """The receiver of every real-host rule's ``rest`` sink action."""
    from harness.realhost import RecordSink

    with RecordSink() as records:
        yield records


@pytest.fixture
def ctx(request: pytest.FixtureRequest, ekuiper: EkuiperHost, record_sink: RecordSink, plugin_port: int,
        zips: dict[str, Path]) -> Iterator[Ctx]:
    """Per-test access to the shared host: creates uniquely named streams/rules and removes them (port released).

    Before the test the host is put at the baseline (``realhost_support.baseline_problems``) if an earlier, failed test
    left it elsewhere; after the test it must be back there: a test that passes but leaves the plugin uninstalled,
    dead, holding sources or its port fails in teardown (and the host is repaired for the next one).
    """
    from tests.realhost_support import Ctx, baseline_problems, restore_baseline

    restore_baseline(ekuiper, plugin_port, zips["pyhttppush"])
    record_sink.clear()
    helper = Ctx(ekuiper, record_sink, plugin_port)
    yield helper
    helper.cleanup()
    problems = baseline_problems(ekuiper, plugin_port)
    if problems:
        restore_baseline(ekuiper, plugin_port, zips["pyhttppush"])
        call = request.node.stash.get(_REPORTS, {}).get("call")
        if call is not None and call.passed:
            pytest.fail(f"the test left the shared eKuiper host changed: {'; '.join(problems)} (now restored)")
