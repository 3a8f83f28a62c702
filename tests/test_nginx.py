"""nginx with ``deploy/nginx/nginx.conf`` (only its addresses rewritten) in front of two plugin servers, each under
the emulated eKuiper host (``tests/hostemu.py``), as docs/nginx.md describes: one device's requests all go to one
node, the records reach that node's host, a killed node's devices move to the other with a retried connect, and
nothing answered 2xx is missing or doubled.

Two plugins under emulated hosts in one process need two plugin names (the control channel's IPC path is
``/tmp/plugin_<name>.ipc``): the second is a copy of the installed plugin renamed ``pyhttppushb`` (folder and
descriptor; the plugin names itself and its settings' environment prefix from them, as bench/run.py's baseline).

Needs nginx (Debian: ``apt-get install nginx-light``): skipped with the reason when missing, failed under
``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port, wait_port, wait_port_closed
from tests.hostemu import DataChannel, PluginHost

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
TEMPLATE = "/devices/{id}/telemetry"
DEVICES = [f"dev-{i:02d}" for i in range(15)]  # odd: round robin would split one; on one node by chance: 2^-14
ROUNDS = 4  # records per device before the kill, and again after it


def nginx_binary() -> str:
    for path in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if path and os.access(path, os.X_OK):
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true and nginx is not installed (apt-get install nginx-light; .ci/run does)")
    pytest.skip("nginx is not installed (apt-get install nginx-light)")


def render(conf: str, listen: str, servers: list[str]) -> str:
    """``conf`` with only its addresses changed: the one ``listen`` and the upstream's ``server`` lines, one per
    address of ``servers``, each with the parameters the file gives its servers (which must all be alike)."""
    conf, n = re.subn(r"^([ \t]*listen[ \t]+)\S+;", lambda m: f"{m.group(1)}{listen};", conf, flags=re.M)
    assert n == 1, f"{NGINX_CONF} should have one listen line, has {n}"
    lines = list(re.finditer(r"^([ \t]*server[ \t]+)(\S+)([ \t][^;\n]*;)\n", conf, flags=re.M))
    assert len(lines) >= 2 and len({m.group(1) + m.group(3) for m in lines}) == 1, (
        f"{NGINX_CONF}: expected the upstream's server lines to differ only in their address: "
        f"{[m.group(0) for m in lines]}")
    new = "".join(f"{lines[0].group(1)}{address}{lines[0].group(3)}\n" for address in servers)
    return conf[:lines[0].start()] + new + conf[lines[-1].end():]


def renamed_copy(installed: Path, root: Path, name: str) -> Path:
    """The installed plugin copied into ``root/plugins/portable/<name>`` and renamed ``name``."""
    dest = root / "plugins" / "portable" / name
    shutil.copytree(installed, dest, ignore=shutil.ignore_patterns("plugin.log", "__pycache__"))
    descriptor = json.loads((dest / "pyhttppush.json").read_text())
    descriptor["sources"] = [name]
    (dest / "pyhttppush.json").unlink()
    (dest / f"{name}.json").write_text(json.dumps(descriptor))
    return dest


class Node:
    """One plugin under its emulated host, serving ``TEMPLATE`` on ``address:port``."""

    def __init__(self, plugin_dir: Path, name: str, python: str, address: str) -> None:
        self.address, self.port = address, free_port(address)
        prefix = name.upper()
        self.host = PluginHost(plugin_dir, name, python,
                               env={f"{prefix}_SERVER_IP": address, f"{prefix}_SERVER_PORT": str(self.port)})
        channel = self.host.start_source(f"nginx_{name}", "telemetry", {"datasource": TEMPLATE, "format": "json"})
        assert isinstance(channel, DataChannel)
        self.channel = channel
        wait_port(self.port, host=address)

    @property
    def upstream(self) -> str:
        return f"{self.address}:{self.port}"

    def kill(self) -> None:
        """SIGKILL the plugin, as a node dies; its channel stays with the test (its host saw what it delivered)."""
        self.host.channels.clear()  # no stop command to a dead plugin at close
        os.killpg(self.host.process.pid, signal.SIGKILL)
        self.host.process.wait(timeout=10)
        assert wait_port_closed(self.port, host=self.address), f"{self.upstream} still accepts connections"

    def close(self) -> None:
        self.host.close()
        self.channel.close()


@pytest.fixture
def nodes(installed: Path, host_python: str, tmp_path: Path) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        started.append(Node(installed, "pyhttppush", host_python, "127.0.0.2"))
        started.append(Node(renamed_copy(installed, tmp_path / "b", "pyhttppushb"), "pyhttppushb", host_python,
                            "127.0.0.3"))
        yield started
    finally:
        for node in started:
            node.close()


@pytest.fixture
def nginx(nodes: list[Node], tmp_path: Path) -> Iterator[int]:
    binary = nginx_binary()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(NGINX_CONF.read_text(), f"127.0.0.1:{port}", [n.upstream for n in nodes]))
    log = tmp_path / "nginx-error.log"
    process = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(tmp_path),
         "-g", f"daemon off; pid {tmp_path / 'nginx.pid'}; error_log {log} info;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_port(port, timeout=15)
        except RuntimeError:
            raise AssertionError(f"nginx did not listen: {log.read_text() if log.exists() else ''}") from None
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def post(conn: http.client.HTTPConnection, device: str, record: dict[str, Any]) -> tuple[int, str]:
    """One record for ``device`` on a keep-alive connection (to nginx, or to a node): must be answered 200; returns
    (status, X-Served-By)."""
    conn.request("POST", TEMPLATE.format(id=device), body=json.dumps(record),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, f"{device} {record}: {response.status} {body[:300]!r}"
    return response.status, response.getheader("X-Served-By") or ""


def assert_exactly_then_sentinel(node: Node, expected: list[dict[str, Any]]) -> None:
    """The node's host got exactly ``expected`` (the records it answered 2xx for, in answer order), then a sentinel
    POSTed to the node directly: nothing missing, nothing doubled, nothing else."""
    sentinel = {"d": "sentinel", "seq": -1}
    conn = http.client.HTTPConnection(node.address, node.port, timeout=10)
    try:
        status, _ = post(conn, "sentinel", sentinel)
    finally:
        conn.close()
    got = [item["message"] for item in node.channel.take(len(expected) + 1, timeout=10)]
    assert got[:-1] == expected, f"{node.upstream}: the host got {got[:-1]}, the node answered 2xx for {expected}"
    assert got[-1] == sentinel, f"{node.upstream}: {got[-1]} arrived where the sentinel should"


def test_nginx_hashes_devices_fails_over_and_loses_nothing(nodes: list[Node], nginx: int) -> None:
    a, b = nodes
    by_upstream = {n.upstream: n for n in nodes}
    answered: dict[str, list[dict[str, Any]]] = {n.upstream: [] for n in nodes}
    home: dict[str, set[str]] = {d: set() for d in DEVICES}
    conn = http.client.HTTPConnection("127.0.0.1", nginx, timeout=10)  # one connection: the hash is per request
    for seq in range(ROUNDS):
        for device in DEVICES:
            record = {"d": device, "seq": seq}
            _, served = post(conn, device, record)
            assert served in by_upstream, f"{device}: X-Served-By {served!r} is not one node"
            home[device].add(served)
            answered[served].append(record)
    split = {d: s for d, s in home.items() if len(s) != 1}
    assert not split, f"devices answered by more than one node: {split}"
    on_a = [d for d in DEVICES if home[d] == {a.upstream}]
    assert on_a and len(on_a) < len(DEVICES), f"the hash put every device on one node: {home}"
    assert_exactly_then_sentinel(a, answered[a.upstream])

    a.kill()
    retried = []
    for seq in range(ROUNDS, 2 * ROUNDS):
        for device in DEVICES:
            record = {"d": device, "seq": seq}
            _, served = post(conn, device, record)
            tried = [s.strip() for s in served.split(",")]
            assert tried[-1] == b.upstream, f"{device} after the kill: answered by {served!r}, not {b.upstream}"
            if len(tried) > 1:
                assert tried == [a.upstream, b.upstream], served
                retried.append(device)
            answered[b.upstream].append(record)
    assert retried and set(retried) <= set(on_a), (
        f"the killed node's devices should have moved with a retried connect (X-Served-By listing both): "
        f"retried {retried}, the node had {on_a}")
    conn.close()
    assert_exactly_then_sentinel(b, answered[b.upstream])
