"""Harness to run a REAL eKuiper host (``kuiperd``) in tests.

* :func:`kuiperd_path` obtains the binary through ``scripts/get-ekuiper.sh`` (cached build in ``<repo>/.cache``);
  given a version (``"v2.4.0"``), that release whatever ``EKUIPER_VERSION`` and ``KUIPERD`` say.
* :func:`require_kuiperd` applies the test policy: skip when no kuiperd can be had, fail when ``CI=true``.
* :func:`host_python` is a plain venv (standard library + pip only), the ``python`` a bare edge host would have.
* :class:`EkuiperHost` runs one kuiperd in its own host root on free loopback ports, with REST helpers.
* :class:`RecordSink` is a local HTTP receiver for eKuiper ``rest`` sink actions.

Constraint: only ONE eKuiper host may run on a machine at a time. eKuiper's portable-plugin IPC paths live in /tmp and
carry only plugin and rule names (``/tmp/plugin_<name>.ipc``, ``/tmp/<rule>_<op>_<instance>.ipc``), so two hosts
collide. Nothing here enforces it: run real-host tests serially (no pytest-xdist across them).

Only the standard library and pytest are used.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from harness.hostlock import HOST_LOCK
from harness.net import free_tcp_ports
from harness.procstat import children_by_parent

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"
GET_EKUIPER_SCRIPT = REPO_ROOT / "scripts" / "get-ekuiper.sh"
HOSTPY_DIR = CACHE_DIR / "hostpy"

#: Sub-folders kuiperd refuses to start without (it panics if one is missing).
HOST_ROOT_DIRS = ("data", "log", "plugins/portable", "plugins/sources", "plugins/sinks", "plugins/functions")

#: Seconds allowed for get-ekuiper.sh (a cold Go build takes a few minutes).
GET_EKUIPER_TIMEOUT = 1800.0

_kuiperd_path: str | None = None
_kuiperd_paths: dict[str, str] = {}  # kuiperd_path(version): one build per explicitly requested version
_host_python: str | None = None


# --------------------------------------------------------------------------------------------------------------------
# Obtaining the binary, the policy, the host python
# --------------------------------------------------------------------------------------------------------------------


def kuiperd_path(version: str | None = None) -> str:
    """Return the absolute path of a ``kuiperd`` binary, building it on first use (cached in-process).

    Runs ``scripts/get-ekuiper.sh``. Without ``version`` the script honours ``KUIPERD`` and ``EKUIPER_VERSION`` (the
    default host of every harness). With ``version`` (e.g. ``"v2.4.0"``) it gets exactly that eKuiper release:
    ``EKUIPER_VERSION`` is set to it and ``KUIPERD`` is ignored (a binary of unknown version). Raises
    :class:`RuntimeError` carrying the script's stderr when it fails or prints no usable path.
    """
    global _kuiperd_path
    if version is None and _kuiperd_path is not None:
        return _kuiperd_path
    if version is not None and version in _kuiperd_paths:
        return _kuiperd_paths[version]
    env = None
    if version is not None:
        env = {key: value for key, value in os.environ.items() if key != "KUIPERD"}
        env["EKUIPER_VERSION"] = version
    try:
        proc = subprocess.run(
            ["bash", str(GET_EKUIPER_SCRIPT)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=GET_EKUIPER_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not run {GET_EKUIPER_SCRIPT}: {exc}") from exc
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    path = lines[-1] if lines else ""
    if proc.returncode != 0 or not path or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"{GET_EKUIPER_SCRIPT.name} failed (exit {proc.returncode}, stdout last line {path!r}):\n"
            f"{proc.stderr.strip()}"
        )
    if version is None:
        _kuiperd_path = path
    else:
        _kuiperd_paths[version] = path
    return path


def ekuiper_etc_dir(version: str | None = None) -> Path:
    """Return the eKuiper ``etc/`` folder that new host roots are copied from.

    Order: env ``EKUIPER_ETC`` (only without ``version``: it goes with ``KUIPERD``); ``etc/`` next to the binary (the
    get-ekuiper.sh cache layout); ``../etc`` relative to the binary (a release tarball's ``bin/kuiperd``).
    """
    candidates: list[Path] = []
    if version is None and os.environ.get("EKUIPER_ETC"):
        candidates.append(Path(os.environ["EKUIPER_ETC"]))
    binary = Path(kuiperd_path(version)).resolve()
    candidates += [binary.parent / "etc", binary.parent.parent / "etc"]
    for candidate in candidates:
        if (candidate / "kuiper.yaml").is_file():
            return candidate
    raise RuntimeError(
        "no eKuiper etc/ folder (with kuiper.yaml) found; looked at: " + ", ".join(str(c) for c in candidates)
        + ". Set EKUIPER_ETC to the etc/ folder that matches KUIPERD."
    )


def require_kuiperd(version: str | None = None) -> str:
    """Return :func:`kuiperd_path` (of ``version`` when given), or skip the calling test when there is none — but
    fail when ``CI=true``.

    Real-host tests must not silently vanish in CI; on a developer machine without Go they are skipped.
    """
    try:
        return kuiperd_path(version)
    except RuntimeError as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(f"CI=true and no real eKuiper host is available: {exc}") from exc
        pytest.skip(f"no real eKuiper host available: {exc}")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _pip_works(python: Path) -> bool:
    """Tell whether ``python -m pip --version`` succeeds."""
    if not python.exists():
        return False
    result = subprocess.run(
        [str(python), "-m", "pip", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    return result.returncode == 0


def host_python() -> str:
    """Return the ``bin/python3`` of a bare venv in ``<repo>/.cache/hostpy`` (created once, cached in-process).

    The venv is made with ``-m venv`` of the interpreter running the tests, WITHOUT system site-packages and with
    nothing upgraded: it has the standard library and pip only (plus the setuptools that ``ensurepip`` still bundles on
    Python <= 3.11), like the python of a plain edge host. It is created in place (venv scripts embed absolute paths)
    under a file lock.
    """
    global _host_python
    if _host_python is not None:
        return _host_python
    python = HOSTPY_DIR / "bin" / "python3"
    with _file_lock(CACHE_DIR / "hostpy.lock"):
        if not _pip_works(python):
            result = subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(HOSTPY_DIR)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode != 0 or not _pip_works(python):
                raise RuntimeError(
                    f"could not create the host venv {HOSTPY_DIR} with {sys.executable} -m venv "
                    f"(exit {result.returncode}):\n{result.stdout}{result.stderr}"
                )
    _host_python = str(python)
    return _host_python


# --------------------------------------------------------------------------------------------------------------------
# Small HTTP helpers
# --------------------------------------------------------------------------------------------------------------------


class EkuiperError(RuntimeError):
    """An eKuiper REST call answered with an unexpected status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body.strip()}")
        self.method = method
        self.url = url
        self.status = status
        self.body = body


def _encode_body(body: Any) -> tuple[bytes | None, str | None]:
    """Encode a request body: bytes as is, str as UTF-8 text, anything else as JSON. Returns (data, content type)."""
    if body is None:
        return None, None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body), "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json"


def _decode_body(raw: bytes) -> Any:
    """Parse a response body as JSON when possible, else return it as text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def http_request(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """Send one HTTP request and return ``(status, raw body)`` for ANY status (no exception on 4xx/5xx).

    ``body``: bytes (sent as is), str (UTF-8), or any JSON-serialisable value. Connection errors propagate
    (``urllib.error.URLError`` / ``OSError``).
    """
    data, content_type = _encode_body(body)
    request = urllib.request.Request(url, data=data, method=method.upper())
    if content_type:
        request.add_header("Content-Type", content_type)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def http_post(url: str, body: Any, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """POST ``body`` to ``url`` (see :func:`http_request`) and return ``(status, raw body)``."""
    return http_request("POST", url, body, timeout=timeout)


def _tail_lines(path: Path, n: int) -> list[str]:
    """Return the last ``n`` lines of a text file (empty list if unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]


# --------------------------------------------------------------------------------------------------------------------
# The host
# --------------------------------------------------------------------------------------------------------------------


class EkuiperHost:
    """A real ``kuiperd`` in its own host root ``<workdir>/kuiper``, on free loopback ports.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). The root survives :meth:`stop`, so
    :meth:`restart` boots the same host again (eKuiper 2.x restarts installed plugins and rules at boot).

    Ports: REST (:attr:`rest_port`), CLI (:attr:`cli_port`) and the built-in httppush data server
    (:attr:`data_port`, ``source.httpServerPort``) are picked at the first start and kept across restarts.
    """

    #: Seconds to wait for ``GET /ping`` after starting kuiperd.
    START_TIMEOUT = 60.0
    #: Seconds to wait after SIGTERM before SIGKILL.
    STOP_TIMEOUT = 10.0

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None, version: str | None = None, *,
                 address: str = "127.0.0.1", wrapper: Sequence[str] = ()) -> None:
        """Prepare (but do not start) a host rooted at ``workdir / "kuiper"``; ``extra_env`` overrides the env.

        ``version``: run that eKuiper release (``kuiperd_path(version)``) instead of the default binary.
        ``address``: the loopback address its REST API, CLI port and built-in data server listen on (one per host
        when several run side by side, e.g. ``127.0.0.2``). ``wrapper``: a command line that runs kuiperd, which is
        passed as its last argument; it must ``exec`` kuiperd, so that the process started is kuiperd itself (e.g.
        ``unshare -m … sh -c '…; exec "$0"'``, harness/cluster.py's private ``/tmp``).
        """
        self.workdir = Path(workdir).resolve()
        self.version = version
        self.address = address
        self.wrapper: tuple[str, ...] = tuple(wrapper)
        self.root = self.workdir / "kuiper"
        self.extra_env: dict[str, str] = dict(extra_env or {})
        for key, value in self.extra_env.items():
            # eKuiper's env loader splits "KEY=VALUE" on every "=" and silently drops entries with more than one.
            if key.upper().startswith("KUIPER__") and "=" in value:
                raise ValueError(f"eKuiper ignores env values containing '=': {key}={value!r}")
        self.rest_port = 0
        self.cli_port = 0
        self.data_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None
        self._out_file: Any = None

    # -- paths and urls -------------------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """Base URL of the host's REST API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.address}:{self.rest_port}"

    def data_url(self, path: str) -> str:
        """URL of the host's built-in httppush data server for endpoint ``path`` (e.g. ``/b``)."""
        return f"http://{self.address}:{self.data_port}{path}"

    @property
    def out_path(self) -> Path:
        """File receiving kuiperd's stdout and stderr."""
        return self.root / "log" / "kuiperd.out"

    @property
    def plugin_dir(self) -> Path:
        """Folder where the host installs portable plugins (``plugins/portable``)."""
        return self.root / "plugins" / "portable"

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def _create_root(self) -> None:
        """Create the host root: a copy of eKuiper's ``etc/`` (only the first time) and the required folders."""
        etc = self.root / "etc"
        if not (etc / "kuiper.yaml").is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(ekuiper_etc_dir(self.version), etc, dirs_exist_ok=True)
        for sub in HOST_ROOT_DIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        """Return the environment kuiperd is started with (also inherited by its plugin processes)."""
        python = host_python()
        env = dict(os.environ)
        # The test runner's python settings must not leak into the bare host python.
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"):
            env.pop(key, None)
        env.update(
            {
                "KuiperBaseKey": str(self.root),
                "KUIPER__BASIC__RESTIP": self.address,
                "KUIPER__BASIC__RESTPORT": str(self.rest_port),
                "KUIPER__BASIC__IP": self.address,
                "KUIPER__BASIC__PORT": str(self.cli_port),
                "KUIPER__BASIC__PPROF": "false",
                "KUIPER__BASIC__ENABLEPRIVATENET": "true",
                "KUIPER__SOURCE__HTTPSERVERIP": self.address,
                "KUIPER__SOURCE__HTTPSERVERPORT": str(self.data_port),
                "KUIPER__PORTABLE__PYTHONBIN": python,
                "PATH": os.pathsep.join([str(Path(python).parent), env.get("PATH", os.defpath)]),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> EkuiperHost:
        """Create the root if needed, start kuiperd and wait until ``GET /ping`` answers."""
        if self.process is not None:
            raise RuntimeError("EkuiperHost already started")
        binary = kuiperd_path(self.version)
        HOST_LOCK.acquire()
        self._create_root()
        if not self.rest_port:
            self.rest_port, self.cli_port, self.data_port = free_tcp_ports(3, self.address)
        env = self.environment()
        self._out_file = open(self.out_path, "ab")
        self._out_file.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {binary}\n".encode())
        self._out_file.flush()
        self.process = subprocess.Popen(
            [*self.wrapper, binary],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pgid = self.process.pid  # start_new_session: the child leads its own process group
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll ``GET /ping`` until it answers 200; raise with the log tail if kuiperd exits or times out."""
        assert self.process is not None
        deadline = time.monotonic() + self.START_TIMEOUT
        last_error = ""
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"kuiperd exited with code {code} during startup:\n{self.log_tail(60)}")
            try:
                status, body = http_request("GET", self.rest_url + "/ping", timeout=2.0)
                if status == 200:
                    return
                last_error = f"HTTP {status}: {body[:200]!r}"
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"kuiperd did not answer GET /ping within {self.START_TIMEOUT}s (last: {last_error}):\n{self.log_tail(60)}"
        )

    def _descendants(self) -> list[int]:
        """PIDs of all live descendants of kuiperd (Linux /proc walk; empty elsewhere)."""
        if self.process is None:
            return []
        children = children_by_parent()
        found: list[int] = []
        stack = [self.process.pid]
        while stack:
            for child in children.get(stack.pop(), []):
                found.append(child)
                stack.append(child)
        return found

    def stop(self) -> None:
        """Stop kuiperd (SIGTERM, then SIGKILL after :attr:`STOP_TIMEOUT`) and kill its leftover plugin processes."""
        proc = self.process
        if proc is None:
            return
        leftovers = self._descendants()
        try:
            if proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    proc.wait(timeout=10)
        finally:
            # Plugin processes are in kuiperd's process group (kuiperd does not setpgid them); also kill any
            # descendant seen before the stop, in case one moved to another group.
            self._signal_group(signal.SIGKILL)
            for pid in leftovers + self._descendants():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.process = None
            self._pgid = None
            if self._out_file is not None:
                self._out_file.close()
                self._out_file = None
            HOST_LOCK.release()

    def _signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to kuiperd's process group, ignoring a group that is already gone."""
        if self._pgid is None:
            return
        try:
            os.killpg(self._pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def restart(self) -> EkuiperHost:
        """Stop and start the host again on the same root and ports."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        """Whether the kuiperd process is alive."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EkuiperHost:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- logs -----------------------------------------------------------------------------------------------------

    def log_files(self) -> list[Path]:
        """The host's log files: ``<root>/log/**/*.log`` then the kuiperd stdout/stderr file.

        eKuiper writes ``stream.<date>.log`` with ``stream.log`` as a symlink to it; each file is listed once.
        """
        log_dir = self.root / "log"
        files: list[Path] = []
        seen: set[Path] = set()
        for path in sorted(log_dir.rglob("*.log")) if log_dir.is_dir() else []:
            real = path.resolve()
            if path.is_file() and real not in seen:
                seen.add(real)
                files.append(path)
        return files + [self.out_path]

    def log_tail(self, n: int = 50) -> str:
        """Last ``n`` lines of each host log file (see :meth:`log_files`), with a header per file, for messages."""
        parts = []
        for path in self.log_files():
            lines = _tail_lines(path, n)
            if lines:
                parts.append(f"--- {path.relative_to(self.root)} (last {len(lines)} lines) ---")
                parts.extend(lines)
        return "\n".join(parts) if parts else "(no host log output)"

    # -- REST -----------------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int | Iterable[int] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Call the REST API; return the parsed JSON (or text) body.

        ``expect``: the accepted status(es); default any 2xx. Anything else raises :class:`EkuiperError` (status
        and body in the message).
        """
        url = self.rest_url + path
        status, raw = http_request(method, url, body, timeout=timeout)
        if expect is None:
            ok = 200 <= status < 300
        elif isinstance(expect, int):
            ok = status == expect
        else:
            ok = status in set(expect)
        if not ok:
            raise EkuiperError(method.upper(), url, status, raw.decode("utf-8", errors="replace"))
        return _decode_body(raw)

    def get(self, path: str, *, expect: int | Iterable[int] | None = None, timeout: float = 30.0) -> Any:
        """``GET path`` (see :meth:`request`)."""
        return self.request("GET", path, expect=expect, timeout=timeout)

    def post(
        self, path: str, body: Any = None, *, expect: int | Iterable[int] | None = None, timeout: float = 30.0
    ) -> Any:
        """``POST path`` with a JSON body (see :meth:`request`)."""
        return self.request("POST", path, body, expect=expect, timeout=timeout)

    def put(
        self, path: str, body: Any = None, *, expect: int | Iterable[int] | None = None, timeout: float = 30.0
    ) -> Any:
        """``PUT path`` with a JSON body (see :meth:`request`)."""
        return self.request("PUT", path, body, expect=expect, timeout=timeout)

    def delete(self, path: str, *, expect: int | Iterable[int] | None = None, timeout: float = 30.0) -> Any:
        """``DELETE path`` (see :meth:`request`)."""
        return self.request("DELETE", path, expect=expect, timeout=timeout)

    # -- plugins --------------------------------------------------------------------------------------------------

    def install_plugin(self, name: str, zip_path: Path | str, *, timeout: float = 600.0) -> Any:
        """Install a portable plugin from a local zip (``POST /plugins/portables``, expects 201).

        Slow: the host runs the plugin's install.sh (pip) and waits for the plugin's handshake inside this call.
        """
        uri = Path(zip_path).resolve().as_uri()
        return self.post("/plugins/portables", {"name": name, "file": uri}, expect=201, timeout=timeout)

    def update_plugin(self, name: str, zip_path: Path | str, *, timeout: float = 600.0) -> Any:
        """Update an installed portable plugin from a local zip (``PUT /plugins/portables/{name}``)."""
        uri = Path(zip_path).resolve().as_uri()
        return self.put(f"/plugins/portables/{_q(name)}", {"name": name, "file": uri}, timeout=timeout)

    def delete_plugin(self, name: str) -> Any:
        """Uninstall a portable plugin (``DELETE /plugins/portables/{name}``; the host SIGKILLs its process)."""
        return self.delete(f"/plugins/portables/{_q(name)}", timeout=60.0)

    def plugin_status(self, name: str) -> dict[str, Any]:
        """``GET /plugins/portables/{name}/status`` → ``{"refCount", "status", "errMsg", ...}``."""
        return self.get(f"/plugins/portables/{_q(name)}/status")

    # -- streams, tables ------------------------------------------------------------------------------------------

    def create_stream(self, sql: str) -> Any:
        """``POST /streams {"sql": sql}``, expects 201."""
        return self.post("/streams", {"sql": sql}, expect=201)

    def create_table(self, sql: str) -> Any:
        """``POST /tables {"sql": sql}``, expects 201."""
        return self.post("/tables", {"sql": sql}, expect=201)

    def delete_stream(self, name: str) -> Any:
        """``DELETE /streams/{name}``."""
        return self.delete(f"/streams/{_q(name)}")

    def delete_table(self, name: str) -> Any:
        """``DELETE /tables/{name}``."""
        return self.delete(f"/tables/{_q(name)}")

    # -- rules ----------------------------------------------------------------------------------------------------

    def create_rule(
        self,
        rule_id: str,
        sql: str,
        actions: list[dict[str, Any]],
        options: dict[str, Any] | None = None,
    ) -> Any:
        """``POST /rules`` (expects 201); the host starts the rule at once."""
        rule: dict[str, Any] = {"id": rule_id, "sql": sql, "actions": actions}
        if options:
            rule["options"] = options
        return self.post("/rules", rule, expect=201)

    def rule_status(self, rule_id: str) -> dict[str, Any]:
        """``GET /rules/{id}/status``: ``status``, ``message`` and metrics such as
        ``source_<stream>_0_records_in_total``."""
        return self.get(f"/rules/{_q(rule_id)}/status")

    def start_rule(self, rule_id: str) -> Any:
        """``POST /rules/{id}/start``."""
        return self.post(f"/rules/{_q(rule_id)}/start")

    def stop_rule(self, rule_id: str) -> Any:
        """``POST /rules/{id}/stop``."""
        return self.post(f"/rules/{_q(rule_id)}/stop")

    def delete_rule(self, rule_id: str) -> Any:
        """``DELETE /rules/{id}``."""
        return self.delete(f"/rules/{_q(rule_id)}")

    def wait_rule_running(self, rule_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll :meth:`rule_status` until ``status == "running"``; return that status.

        Raises :class:`AssertionError` with the last status and the log tail on timeout.
        """
        deadline = time.monotonic() + timeout
        status: Any = None
        while True:
            status = self.rule_status(rule_id)
            if isinstance(status, dict) and status.get("status") == "running":
                return status
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"rule {rule_id!r} not running after {timeout}s; last status: {status!r}\n{self.log_tail(40)}"
        )

    def wait_rule_metric(self, rule_id: str, metric: str, expected: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Poll :meth:`rule_status` until ``status[metric] == expected``; return that status.

        Metrics are updated asynchronously, so assertions on them should poll. Raises :class:`AssertionError`.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.rule_status(rule_id)
            if status.get(metric) == expected:
                return status
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"rule {rule_id!r}: {metric} is {status.get(metric)!r}, expected {expected!r} after {timeout}s; "
                    f"status: {status!r}"
                )
            time.sleep(0.1)


def _q(segment: str) -> str:
    """Quote one URL path segment."""
    return urllib.parse.quote(segment, safe="")


# --------------------------------------------------------------------------------------------------------------------
# The result receiver
# --------------------------------------------------------------------------------------------------------------------


class RecordSink:
    """A threaded HTTP server on 127.0.0.1 that stores every POST/PUT body (parsed JSON, else text) in order.

    Point an eKuiper ``rest`` sink at it with :meth:`action` (the host needs ``enablePrivateNet``, which
    :class:`EkuiperHost` sets).
    """

    def __init__(self) -> None:
        """Start serving at once on a free port."""
        self._records: list[Any] = []
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            """Store the body, answer 200. HTTP/1.1: eKuiper's rest sink keeps its connection (one request per row;
            a new connection and thread per row made the sink lag behind a rule fed a few hundred rows a second)."""

            protocol_version = "HTTP/1.1"

            def _store(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                sink._append(_decode_body(raw))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = _store
            do_PUT = _store

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="RecordSink", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port the sink listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The URL to POST records to."""
        return f"http://127.0.0.1:{self.port}/records"

    def action(self) -> dict[str, Any]:
        """An eKuiper rule action sending each result row to this sink as one JSON object."""
        return {"rest": {"url": self.url, "method": "post", "sendSingle": True}}

    def _append(self, record: Any) -> None:
        with self._cond:
            self._records.append(record)
            self._cond.notify_all()

    @property
    def records(self) -> list[Any]:
        """A copy of all records received so far."""
        with self._cond:
            return list(self._records)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Any]:
        """Return the first ``n`` records once received; :class:`AssertionError` with what arrived on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._records) >= n, timeout=timeout):
                raise AssertionError(
                    f"expected {n} record(s) within {timeout}s, got {len(self._records)}: {self._records!r}"
                )
            return list(self._records[:n])

    def clear(self) -> None:
        """Forget all records received so far."""
        with self._cond:
            self._records.clear()

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
