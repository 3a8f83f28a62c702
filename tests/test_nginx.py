"""nginx with ``deploy/nginx/nginx.conf`` (only its addresses rewritten) in front of two plugin servers, each under
the emulated eKuiper host (``tests/hostemu.py``), as docs/nginx.md describes: one device's requests all go to one
node (the device in the path, or in X-Device-Id), the records reach that node's host, a killed node's devices move to
the other with a retried connect, nothing answered 2xx is missing or doubled, and the maintenance procedure (``down``,
reload, stop, start, reload) shows clients nothing but 2xx and brings every device back. Only the one test that
needs ``down`` changes more than the addresses of the file.

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
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port, wait_port, wait_port_closed
from tests.hostemu import DataChannel, PluginHost
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
TEMPLATE = "/devices/{id}/telemetry"
LITERAL = "/telemetry"  # the device named by the X-Device-Id header
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


class Nginx:
    """nginx with ``deploy/nginx/nginx.conf`` on ``127.0.0.1:port`` in front of ``nodes``; :meth:`reload` rewrites the
    file with some nodes marked ``down`` and reloads it (SIGHUP), as docs/nginx.md's maintenance does."""

    def __init__(self, nodes: list[Node], workdir: Path) -> None:
        self.nodes, self.port = nodes, free_port()
        self.conf, self.log = workdir / "nginx.conf", workdir / "nginx-error.log"
        self.write()
        self.process = subprocess.Popen(
            [nginx_binary(), "-c", str(self.conf), "-p", str(workdir),
             "-g", f"daemon off; pid {workdir / 'nginx.pid'}; error_log {self.log} info;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.port, timeout=15)
        except RuntimeError:
            self.close()
            raise AssertionError(f"nginx did not listen: {self.log.read_text() if self.log.exists() else ''}") from None

    def write(self, down: tuple[Node, ...] = ()) -> None:
        text = render(NGINX_CONF.read_text(), f"127.0.0.1:{self.port}", [n.upstream for n in self.nodes])
        for node in down:
            text, n = re.subn(rf"(server {re.escape(node.upstream)} [^;\n]*);", r"\1 down;", text)
            assert n == 1, f"no server line for {node.upstream}"
        self.conf.write_text(text)

    def reload(self, down: tuple[Node, ...] = ()) -> None:
        self.write(down)
        os.kill(self.process.pid, signal.SIGHUP)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def nginx(nodes: list[Node], tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(nodes, tmp_path)
    try:
        yield server
    finally:
        server.close()


def post(conn: http.client.HTTPConnection, device: str, record: dict[str, Any], header: bool = False) -> str:
    """One record for ``device`` on a keep-alive connection (to nginx, or to a node); it must be answered 200.
    The device is named by the path template, or with ``header`` by X-Device-Id on the literal path ``LITERAL``.
    Returns X-Served-By."""
    headers = {"Content-Type": "application/json"}
    if header:
        headers["X-Device-Id"] = device
    conn.request("POST", LITERAL if header else TEMPLATE.format(id=device), body=json.dumps(record), headers=headers)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, f"{device} {record}: {response.status} {body[:300]!r}"
    return response.getheader("X-Served-By") or ""


class Tally:
    """What each node answered 2xx for, in answer order, and which nodes answered each device."""

    def __init__(self, nodes: list[Node], header: bool = False) -> None:
        self.answered: dict[str, list[dict[str, Any]]] = {n.upstream: [] for n in nodes}
        self.home: dict[str, list[str]] = {d: [] for d in DEVICES}
        self.seq = 0
        self.header = header

    def send(self, conn: http.client.HTTPConnection, device: str) -> list[str]:
        """One numbered record of ``device`` through nginx; returns the nodes tried (X-Served-By), the last answered."""
        record = {"d": device, "seq": self.seq}
        self.seq += 1
        tried = [s.strip() for s in post(conn, device, record, self.header).split(",")]
        assert tried[-1] in self.answered, f"{device}: X-Served-By {tried} does not end with a node"
        self.answered[tried[-1]].append(record)
        self.home[device].append(tried[-1])
        return tried

    def round(self, conn: http.client.HTTPConnection) -> dict[str, list[str]]:
        return {device: self.send(conn, device) for device in DEVICES}

    def placement(self) -> dict[str, str]:
        """Each device's one node so far (every request of a device answered by the same node), both nodes used."""
        split = {d: set(s) for d, s in self.home.items() if len(set(s)) != 1}
        assert not split, f"devices answered by more than one node: {split}"
        placed = {d: s[0] for d, s in self.home.items()}
        assert len(set(placed.values())) == 2, f"the hash put every device on one node: {placed}"
        return placed


def assert_exactly_then_sentinel(node: Node, expected: list[dict[str, Any]], channel: DataChannel | None = None,
                                 header: bool = False) -> None:
    """The node's host got exactly ``expected`` (the records it answered 2xx for, in answer order), then a sentinel
    POSTed to the node directly: nothing missing, nothing doubled, nothing else. ``channel`` and ``header``: the
    X-Device-Id endpoint's instead of the template's."""
    sentinel = {"d": "sentinel", "seq": -1}
    conn = http.client.HTTPConnection(node.address, node.port, timeout=10)
    try:
        post(conn, "sentinel", sentinel, header)
    finally:
        conn.close()
    got = [item["message"] for item in (channel or node.channel).take(len(expected) + 1, timeout=10)]
    assert got[:-1] == expected, f"{node.upstream}: the host got {got[:-1]}, the node answered 2xx for {expected}"
    assert got[-1] == sentinel, f"{node.upstream}: {got[-1]} arrived where the sentinel should"


def test_nginx_hashes_devices_fails_over_and_loses_nothing(nodes: list[Node], nginx: Nginx) -> None:
    a, b = nodes
    tally = Tally(nodes)
    conn = nginx.connect()  # one connection for every device: the hash is per request
    for _ in range(ROUNDS):
        for device, tried in tally.round(conn).items():
            assert len(tried) == 1, f"{device}: answered after a retry with both nodes up: {tried}"
    placed = tally.placement()
    on_a = [d for d, node in placed.items() if node == a.upstream]
    assert_exactly_then_sentinel(a, tally.answered[a.upstream])

    a.kill()
    retried = []
    for _ in range(ROUNDS):
        for device, tried in tally.round(conn).items():
            assert tried[-1] == b.upstream, f"{device} after the kill: answered by {tried}, not {b.upstream}"
            if len(tried) > 1:
                assert tried == [a.upstream, b.upstream], tried
                retried.append(device)
    assert retried and set(retried) <= set(on_a), (
        f"the killed node's devices should have moved with a retried connect (X-Served-By listing both): "
        f"retried {retried}, the node had {on_a}")
    conn.close()
    assert_exactly_then_sentinel(b, tally.answered[b.upstream])


def test_nginx_hashes_on_the_x_device_id_header(nodes: list[Node], nginx: Nginx) -> None:
    """The example's second device key: X-Device-Id, on a literal path, keeps each device on one node too."""
    channels = {}
    for node in nodes:
        channel = node.host.start_source(f"nginx_header_{node.port}", "literal",
                                         {"datasource": LITERAL, "format": "json"})
        assert isinstance(channel, DataChannel)
        channels[node.upstream] = channel
    tally = Tally(nodes, header=True)
    with closing(nginx.connect()) as conn:
        for _ in range(ROUNDS):
            tally.round(conn)
    tally.placement()
    for node in nodes:
        assert_exactly_then_sentinel(node, tally.answered[node.upstream], channels[node.upstream], header=True)


def test_nginx_maintenance_down_and_reload(nodes: list[Node], nginx: Nginx) -> None:
    """docs/nginx.md's maintenance: mark the node ``down`` and reload, stop its source (which answers 503 for the
    restart grace, 404 after it: nginx would pass either to a client), start it again, remove ``down`` and reload. No
    client sees anything but 2xx, nothing reaches the node while it is down, and its devices come back to it."""
    a, b = nodes
    tally = Tally(nodes)
    with closing(nginx.connect()) as conn:
        for _ in range(ROUNDS):
            tally.round(conn)
    placed = tally.placement()
    mover = next(d for d, node in placed.items() if node == a.upstream)

    nginx.reload(down=(a,))
    # The old workers finish what they hold; a new connection reaches a new worker once they run: until then a
    # record of the moving device may still go to a, which the tally attributes as answered.
    wait_until(lambda: send_once(tally, nginx, mover)[-1] == b.upstream, 10.0,
               f"{mover} to move to {b.upstream} after the reload")
    assert_exactly_then_sentinel(a, tally.answered[a.upstream])
    assert a.host.stop_source(a.channel) == "ok"
    status = push_direct(a, mover)
    assert status in (503, 404), f"a node with its source stopped answered {status}"  # what nginx would pass on
    before = len(tally.answered[a.upstream])
    with closing(nginx.connect()) as conn:
        for _ in range(ROUNDS):
            for device, tried in tally.round(conn).items():
                assert tried == [b.upstream], f"{device} while {a.upstream} is down: {tried}"
    assert len(tally.answered[a.upstream]) == before

    channel = a.host.start_source("nginx_pyhttppush_again", "telemetry", {"datasource": TEMPLATE, "format": "json"})
    assert isinstance(channel, DataChannel)
    a.channel = channel
    wait_port(a.port, host=a.address)
    nginx.reload()
    wait_until(lambda: send_once(tally, nginx, mover)[-1] == a.upstream, 10.0,
               f"{mover} to come back to {a.upstream} after the reload")
    with closing(nginx.connect()) as conn:
        back = {device: tried[-1] for device, tried in tally.round(conn).items()}
    assert back == placed, f"after the node came back, the devices are not where they were: {back} vs {placed}"
    assert_exactly_then_sentinel(a, tally.answered[a.upstream][before:])
    assert_exactly_then_sentinel(b, tally.answered[b.upstream])


def send_once(tally: Tally, nginx: Nginx, device: str) -> list[str]:
    """One record of ``device`` on a new connection: after a reload only new connections are sure to reach the new
    workers (the old ones finish the connections they hold)."""
    with closing(nginx.connect()) as conn:
        return tally.send(conn, device)


def push_direct(node: Node, device: str) -> int:
    """One record straight to the node (not through nginx), returning the status whatever it is."""
    conn = http.client.HTTPConnection(node.address, node.port, timeout=10)
    try:
        conn.request("POST", TEMPLATE.format(id=device), body=b'{"d": "direct"}',
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
