"""Harness for several REAL eKuiper nodes behind a real HAProxy, their rules' results meeting in a real mosquitto
(tests/test_cluster.py; docs/scaling.md).

* :class:`Node`: one kuiperd (:class:`harness.realhost.EkuiperHost`) in its own mount namespace with a private
  ``/tmp`` (eKuiper's IPC paths live there and carry no host identity, so two kuiperds with the same rule ids would
  collide), its REST API and the plugin's server on its own loopback address (``127.0.0.2``, ``.3``, …). Its root,
  the plugin zip and the host python must therefore live outside ``/tmp``: :func:`cluster_workdir`.
* :class:`Broker`: mosquitto on ``127.0.0.1`` with ``max_queued_messages 0`` and ``max_inflight_messages 0`` (the
  Debian default of 1,000 queued messages drops QoS 1 messages silently for a subscriber slower than the nodes).
* :class:`Subscriber`: ``mosquitto_sub`` writing every message to a file, ready once a probe came back through it.
* :class:`Balancer`: HAProxy running ``deploy/haproxy/haproxy.cfg`` UNCHANGED, its addresses given through the
  environment variables the file reads (``LB_BIND``, ``NODE<i>_ADDR``, ``HAPROXY_ADMIN_SOCKET``); servers' states
  through its runtime API (``show stat``).
* :class:`Cluster`: all of them together; closing it kills every process it started.

:func:`require_tools` applies the real-host policy to haproxy, mosquitto and mosquitto_sub: skip locally, fail under
``CI=true``. Needs root (``unshare -m`` and ``mount``), as CI has. Only the standard library and pytest are used.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from harness.net import free_port, wait_port
from harness.procstat import children
from harness.realhost import REPO_ROOT, EkuiperHost, http_request, require_kuiperd
from harness.wait import wait_until

HAPROXY_CFG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
PLUGIN = "pyhttppush"
#: Runs kuiperd (the last argument) in a new mount namespace with its own empty /tmp. ``unshare`` and ``sh`` both
#: exec, so the process started IS kuiperd (its PID is the one to signal).
PRIVATE_TMP = ("unshare", "-m", "--propagation", "private",
               "sh", "-c", 'mount -t tmpfs -o mode=1777 tmpfs /tmp && exec "$0"')
TOOLS = ("haproxy", "mosquitto", "mosquitto_sub", "mosquitto_pub", "unshare")


def require_tools(*names: str) -> dict[str, str]:
    """Return ``{name: path}`` for kuiperd and each tool (default :data:`TOOLS`); a missing one skips the calling
    test with the reason, or fails it under ``CI=true`` (``apt-get install haproxy mosquitto mosquitto-clients``)."""
    found = {"kuiperd": require_kuiperd()}
    missing = []
    for name in names or TOOLS:
        path = shutil.which(name)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    problem = ""
    if missing:
        problem = f"missing {', '.join(missing)} (apt-get install haproxy mosquitto mosquitto-clients)"
    elif os.geteuid() != 0:
        problem = "the nodes' private /tmp needs root (unshare -m, mount)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(f"CI=true and the cluster test cannot run: {problem}")
        pytest.skip(f"cluster test: {problem}")
    return found


def cluster_workdir() -> Path:
    """A fresh folder OUTSIDE /tmp (the nodes do not see the caller's /tmp): under /var/tmp."""
    return Path(tempfile.mkdtemp(prefix="httppush-cluster-", dir="/var/tmp"))


def _request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """One HTTP request (:func:`harness.realhost.http_request`); returns (status, JSON object or {"text": …})."""
    status, raw = http_request(method, url, body, headers=headers, timeout=timeout)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"text": raw.decode("utf-8", "replace")}
    return status, parsed if isinstance(parsed, dict) else {"value": parsed}


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


class Node:
    """One eKuiper node: kuiperd in a private /tmp on ``address``, the plugin's server on ``address:plugin_port``."""

    def __init__(self, name: str, address: str, workdir: Path, plugin_port: int, env: dict[str, str]) -> None:
        self.name = name
        self.address = address
        self.plugin_port = plugin_port
        node_env = {"PYHTTPPUSH_SERVER_IP": address, "PYHTTPPUSH_SERVER_PORT": str(plugin_port),
                    "KUIPER__BASIC__TIMEZONE": "UTC", **env}
        self.host = EkuiperHost(workdir / name, extra_env=node_env, address=address, wrapper=PRIVATE_TMP)

    @property
    def server(self) -> str:
        """``address:port`` of the plugin's server (what HAProxy's server line names)."""
        return f"{self.address}:{self.plugin_port}"

    def url(self, path: str) -> str:
        return f"http://{self.server}{path}"

    def health(self) -> tuple[int, dict[str, Any]] | None:
        """``GET /healthz`` on the node: (status, body), or None while nothing listens."""
        try:
            return _request("GET", self.url("/healthz"), timeout=5.0)
        except OSError:
            return None

    def admin(self, action: str, token: str, query: str = "") -> tuple[int, dict[str, Any]]:
        """``POST /admin/<action>[?query]`` with the bearer token (the plugin's drain API)."""
        return _request("POST", self.url(f"/admin/{action}" + (f"?{query}" if query else "")), b"",
                        {"Authorization": f"Bearer {token}"}, timeout=120.0)

    def plugin_pids(self) -> list[int]:
        """The plugin's processes: children of kuiperd running ``<name>/main.py``."""
        if self.host.process is None:
            return []
        pids = []
        for pid in children(self.host.process.pid):
            try:
                if f"{PLUGIN}/main.py".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
            except OSError:
                continue
        return pids

    def close(self) -> None:
        """Kill kuiperd's process group (its plugins with it) at once, then let the host harness reap and release
        (a SIGTERM'd kuiperd takes up to its 10 s stop timeout)."""
        if self.host.process is not None and self.host.process.poll() is None:
            try:
                os.killpg(self.host.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.host.stop()

    def kill(self) -> list[int]:
        """SIGKILL kuiperd and its plugin processes, by PID (found before kuiperd dies), and return the PIDs once
        every one of them is dead (a zombie or gone): only then has the node stopped taking requests."""
        assert self.host.process is not None, f"{self.name} is not running"
        pids = [self.host.process.pid, *self.plugin_pids()]
        assert len(pids) >= 2, f"{self.name}: no plugin process found under kuiperd {pids[0]}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(_running(pid) for pid in pids), 10.0, f"{self.name}'s processes {pids} to die",
                 interval=0.001)
        return pids

    def ref_count(self) -> dict[str, int]:
        """The plugin's ``refCount`` per rule (sources the plugin has acknowledged)."""
        return self.host.plugin_status(PLUGIN).get("refCount") or {}


class Broker:
    """mosquitto on 127.0.0.1:<free port>, queues unbounded (see the module docstring), no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n"
            f"log_dest file {self.log}\nlog_type error\nlog_type warning\nlog_type notice\n")
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, 15.0)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        _kill(self.process)

    @property
    def url(self) -> str:
        """The broker as eKuiper's mqtt sink names it (``server``)."""
        return f"tcp://127.0.0.1:{self.port}"

    def publish(self, topic: str, payload: str) -> None:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-t", topic,
                        "-m", payload], check=True, timeout=30)


class Subscriber:
    """``mosquitto_sub`` (QoS 1) on ``topic``, one message per line into a file; ready when :meth:`ready` returns."""

    def __init__(self, broker: Broker, topic: str, path: Path) -> None:
        self.broker = broker
        self.topic = topic
        self.path = path
        self._file = open(path, "wb")
        self.process = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
             "-i", f"cluster-test-{os.getpid()}"],
            stdin=subprocess.DEVNULL, stdout=self._file, stderr=subprocess.STDOUT)

    def ready(self, timeout: float = 15.0) -> None:
        """Publish probes until one comes back through the subscription (it is then active)."""
        probe = json.dumps({"probe": os.urandom(4).hex()})

        def back() -> bool:
            if probe in self.lines():
                return True
            self.broker.publish(self.topic, probe)
            return False

        wait_until(back, timeout, "the subscriber to receive a probe", interval=0.5)

    def lines(self) -> list[str]:
        """Every message received so far (complete lines only)."""
        text = self.path.read_bytes().decode("utf-8", "replace")
        return text.split("\n")[:-1]

    def messages(self) -> list[dict[str, Any]]:
        """The JSON objects received, in order (probes and anything else skipped)."""
        out = []
        for line in self.lines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and "probe" not in item:
                    out.append(item)
        return out

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self._file.close()


class Balancer:
    """HAProxy running :data:`HAPROXY_CFG` unchanged, in the foreground, logging to a file."""

    def __init__(self, workdir: Path, nodes: list[Node], config: Path = HAPROXY_CFG) -> None:
        self.port = free_port()
        self.socket_path = workdir / "haproxy-admin.sock"
        self.log = workdir / "haproxy.log"
        self.config = config
        env = dict(os.environ, LB_BIND=f"127.0.0.1:{self.port}", HAPROXY_ADMIN_SOCKET=str(self.socket_path))
        for i, node in enumerate(nodes, 1):
            env[f"NODE{i}_ADDR"] = node.server
        self._log_file = open(self.log, "wb")
        self.process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._log_file, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.process.poll() is not None or self._stat_ok(), 15.0, "HAProxy's runtime API")
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            wait_port(self.port, 15.0)
        except BaseException:
            self.close()
            raise

    def _stat_ok(self) -> bool:
        try:
            self.command("show info")
            return True
        except OSError:
            return False

    def command(self, line: str) -> str:
        """One runtime API command (``show stat``, ``show servers state``, …); returns its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> list[dict[str, str]]:
        """``show stat``: one row per frontend, backend and server (``pxname``, ``svname``, ``status``, …)."""
        return list(csv.DictReader(io.StringIO(self.command("show stat").lstrip("# "))))

    def servers(self, backend: str = "be_by_path") -> dict[str, str]:
        """``{server: status}`` of ``backend`` from ``show stat``: "UP", "DOWN", "UP 1/2" (going down), "MAINT", …"""
        return {row["svname"]: row["status"] for row in self.stats()
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}

    def counters(self, server: str) -> dict[str, int]:
        """``server``'s failed connects (``econ``), retries (``wretr``) and redispatches (``wredis``), summed over
        the backends: what HAProxy hid from clients by retrying elsewhere."""
        totals = dict.fromkeys(("econ", "wretr", "wredis"), 0)
        for row in self.stats():
            if row["svname"] == server:
                for key in totals:
                    totals[key] += int(row[key] or 0)
        return totals

    def check_params(self) -> dict[str, float]:
        """``inter``, ``fastinter``, ``fall``, ``rise`` (seconds / counts) from the config's health-check line."""
        for line in self.config.read_text().splitlines():
            words = line.split()
            if words[:2] == ["default-server", "check"]:
                values = dict(zip(words[2::2], words[3::2], strict=False))
                return {key: float(values[key].rstrip("s")) for key in ("inter", "fastinter", "fall", "rise")}
        raise AssertionError(f"no 'default-server check' line in {self.config}")

    def abnormal_log_lines(self) -> list[str]:
        """Request log lines (``option httplog``) whose termination state is not ``----``: a request that ended
        otherwise than with a complete answer (``SH--``: the server aborted; ``CD--``: the client went away; …)."""
        pattern = re.compile(r"^\S+ \[[^]]+\] \S+ \S+ \S+ -?\d+ \S+ \S+ \S+ (\S{4}) ")
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = pattern.match(line)
            if match and match.group(1) != "----":
                lines.append(line)
        return lines

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


class Cluster:
    """Broker, subscriber, ``len(addresses)`` nodes with the plugin installed, and the balancer in front.

    Use as a context manager; closing kills every process started (kuiperds and plugins, HAProxy, mosquitto,
    mosquitto_sub). ``env``: extra environment of every node (the plugin inherits it).
    """

    def __init__(self, workdir: Path, zip_path: Path, *, addresses: Iterable[str] = ("127.0.0.2", "127.0.0.3",
                 "127.0.0.4"), env: dict[str, str] | None = None, topic: str = "httppush/cluster") -> None:
        self.workdir = workdir
        self.zip_path = zip_path
        self.topic = topic
        self._stack = ExitStack()
        addresses = list(addresses)
        self.plugin_port = self._common_free_port(addresses)
        self.nodes = [Node(f"node{i}", address, workdir, self.plugin_port, dict(env or {}))
                      for i, address in enumerate(addresses, 1)]
        self.broker: Broker | None = None
        self.subscriber: Subscriber | None = None
        self.balancer: Balancer | None = None

    @staticmethod
    def _common_free_port(addresses: list[str]) -> int:
        """A port free on every address (the nodes share one port number, as a fleet's config would)."""
        for _ in range(50):
            port = free_port(addresses[0])
            socks = []
            try:
                for address in addresses:
                    sock = socket.socket()
                    socks.append(sock)
                    sock.bind((address, port))
                return port
            except OSError:
                continue
            finally:
                for sock in socks:
                    sock.close()
        raise RuntimeError(f"no port free on all of {addresses}")

    def start(self) -> Cluster:
        """Start everything; the plugin is installed on every node at once (install.sh's pip takes tens of
        seconds each)."""
        try:
            self.broker = Broker(self.workdir)
            self._stack.callback(self.broker.close)
            self.subscriber = Subscriber(self.broker, self.topic, self.workdir / "results.ndjson")
            self._stack.callback(self.subscriber.close)
            self.subscriber.ready()
            for node in self.nodes:  # one after the other: harness.hostlock's lock is not for threads
                self._stack.callback(node.close)
                node.host.start()
            self.parallel(lambda node: node.host.install_plugin(PLUGIN, self.zip_path))
            self.balancer = Balancer(self.workdir, self.nodes)
            self._stack.callback(self.balancer.close)
        except BaseException:
            self.close()
            raise
        return self

    def parallel(self, action: Callable[[Node], Any], nodes: list[Node] | None = None) -> list[Any]:
        """Run ``action(node)`` on every node (or ``nodes``) in threads; the first exception is raised."""
        nodes = nodes if nodes is not None else self.nodes
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            return list(pool.map(action, nodes))

    def sink_action(self) -> dict[str, Any]:
        """eKuiper's built-in mqtt sink to the broker, one message per row, QoS 1."""
        assert self.broker is not None
        return {"mqtt": {"server": self.broker.url, "topic": self.topic, "qos": 1, "sendSingle": True}}

    def wait_states(self, want: dict[str, str], timeout: float) -> float:
        """Wait until HAProxy shows each named server in the given state ("UP"/"DOWN"); returns the monotonic time
        it was first seen so."""
        assert self.balancer is not None
        wait_until(lambda: all(self.balancer.servers().get(name) == state for name, state in want.items()), timeout,
                 lambda: f"HAProxy states {want} (now {self.balancer.servers()})", interval=0.05)
        return time.monotonic()

    def log_tails(self) -> str:
        """The end of every node's logs and HAProxy's, for failure messages."""
        parts = [f"===== {node.name} =====\n{node.host.log_tail(30)}" for node in self.nodes]
        if self.balancer is not None:
            parts.append("===== haproxy =====\n" + "\n".join(self.balancer.log.read_text().splitlines()[-30:]))
        return "\n".join(parts)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


__all__ = ["Balancer", "Broker", "Cluster", "Node", "Subscriber", "cluster_workdir", "require_tools"]
