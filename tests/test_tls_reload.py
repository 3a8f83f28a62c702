"""Certificate reload without a restart (``httpServerTls.reloadInterval``): the server certificate, its key and the
client CA file rotated under traffic over real TLS, with uvloop (the plugin's loop) and with asyncio's own loop.

In-process: the shared server (server.py) with a real nng data channel, files in a temporary folder rewritten as a
rotation tool would — the certificate before its key, a CA file that first holds both authorities, then the new one
only."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pynng
import pytest

from harness.net import free_port
from httppush_plugin import server as server_module
from httppush_plugin.certificates import Certificates
from httppush_plugin.channel import ChannelSender
from httppush_plugin.decoders import build_decoder
from httppush_plugin.errors import ConfigError
from httppush_plugin.properties import EndpointConfig
from httppush_plugin.routing import Subscription
from httppush_plugin.server import SharedServer
from httppush_plugin.settings import ServerConfig, load_server_config
from httppush_plugin.tlsconfig import TlsConfig
from tests.hostemu import PluginHost
from tests.support.http import sender
from tests.support.metrics import gauge
from tests.support.pki import Pki, Rotation, client_context, make_rotation, serial_of
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.wait import wait_until

INTERVAL = 0.1  # seconds between looks at the files in these tests


@pytest.fixture(scope="module")
def rotation(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Rotation:
    return make_rotation(tmp_path_factory.mktemp("rotation"), pki)


def _replace(path: Path, *sources: Path) -> None:
    """Write ``sources`` (concatenated) to ``path`` as rotation tools do: a new file renamed over the old one."""
    part = path.with_name(path.name + ".new")
    part.write_bytes(b"".join(source.read_bytes() for source in sources))
    os.replace(part, path)


@dataclass
class Rig:
    server: SharedServer
    port: int
    files: dict[str, Path]
    received: list[dict[str, object]]  # what the data channel delivered, read as the host does (all the time)

    def records_until(self, sentinel: dict[str, object]) -> list[dict[str, object]]:
        """The records received before ``sentinel``, which must come."""
        wait_until(lambda: sentinel in self.received, 10, f"the sentinel {sentinel}")
        return self.received[:self.received.index(sentinel)]


@pytest.fixture(params=["uvloop", "asyncio"])
def rig(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, pki: Pki, tmp_path: Path) -> Iterator[Rig]:
    """The shared server on a free port, HTTPS with client certificates required, its files copies of the session
    PKI's in ``tmp_path`` (cert.pem, key.pem, ca.pem), looked at every :data:`INTERVAL` s; one source on /api."""
    if request.param == "asyncio":
        monkeypatch.setattr(server_module, "_new_event_loop", asyncio.new_event_loop)
    else:
        pytest.importorskip("uvloop")
    files = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "ca": tmp_path / "ca.pem"}
    for name, source in (("cert", pki.server_cert), ("key", pki.server_key), ("ca", pki.ca)):
        shutil.copy(source, files[name])
    port = free_port()
    tls = TlsConfig(str(files["cert"]), str(files["key"]), str(files["ca"]), "required", reload_interval=INTERVAL)
    server = SharedServer(lambda: ServerConfig(ip="127.0.0.1", port=port, restart_grace=0.0, tls=tls))
    endpoint = EndpointConfig.from_props({"datasource": "/api"})
    sub = Subscription(endpoint, build_decoder(endpoint, None), instance=("rule1", "stream1", 0))
    url = f"ipc://{tmp_path}/channel.ipc"
    pull = pynng.Pull0(recv_timeout=200)
    pull.listen(url)
    received: list[dict[str, object]] = []
    closing = threading.Event()

    def read() -> None:
        while not closing.is_set():
            try:
                received.append(json.loads(pull.recv())["message"])
            except pynng.Timeout:
                continue
            except pynng.Closed:
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        server.subscribe(sub)
        loop_name = server.run(lambda: type(asyncio.get_running_loop()).__module__)
        assert loop_name.split(".")[0] == request.param, loop_name
        sender = server.call(ChannelSender.connect(url, 1.0, "rule rule1 stream stream1 instance 0"))
        server.attach(sub, sender)
        yield Rig(server, port, files, received)
        server.run(sender.close)
        server.unsubscribe(sub)
    finally:
        closing.set()
        reader.join(5)
        pull.close()
        if server._loop is not None:
            server._loop.call_soon_threadsafe(server._loop.stop)


def _post(port: int, context: ssl.SSLContext, n: int) -> tuple[int, int]:
    """One POST on a new connection: (status, the serial of the server certificate it was served with)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("POST", "/api", body=json.dumps({"n": n}))
        status = conn.getresponse().status
        return status, _serial(conn)
    finally:
        conn.close()


def _serial(conn: http.client.HTTPSConnection) -> int:
    return int(conn.sock.getpeercert()["serialNumber"], 16)  # type: ignore[union-attr,index]


def _refused(port: int, context: ssl.SSLContext) -> str:
    """The error of a request whose client certificate the server refuses ("" when it was answered)."""
    try:
        status, _ = _post(port, context, -1)
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if status else "?"


def _resumes(port: int, context: ssl.SSLContext, session: ssl.SSLSession) -> str:
    """What a connection offering ``session`` gets: "resumed" or "refused" (a full handshake that failed)."""
    conn = socket.create_connection(("127.0.0.1", port))
    try:
        with context.wrap_socket(conn, server_hostname="127.0.0.1", session=session) as tls:
            return "resumed" if tls.session_reused else "full"
    except (ssl.SSLError, ConnectionError):
        return "refused"


def test_rotation_under_traffic(rig: Rig, pki: Pki, rotation: Rotation) -> None:
    """The certificate renewed before its key (kept until the key follows), then the client CA rotated in two steps:
    a keep-alive connection opened before keeps its certificate and works throughout; new connections see the new
    serial; not one request fails meanwhile; the old client authority is refused once the CA file drops it."""
    old_client, new_client = client_context(pki, pki.client), client_context(pki, rotation.client)
    s1, s2 = serial_of(pki.server_cert), serial_of(rotation.server_cert)
    keep = http.client.HTTPSConnection("127.0.0.1", rig.port, context=old_client, timeout=10)
    keep.request("POST", "/api", body=b'{"keep": 0}')
    assert keep.getresponse().read() == b'{"accepted":1,"sources":1}'
    keep_socket = keep.sock
    assert _serial(keep) == s1
    # TLS 1.3: no tickets while client certificates are checked, so nothing to resume
    with old_client.wrap_socket(socket.create_connection(("127.0.0.1", rig.port)), server_hostname="127.0.0.1") as t13:
        t13.sendall(b'POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{"tls": 13}')
        assert t13.version() == "TLSv1.3" and t13.recv(100).startswith(b"HTTP/1.1 200")
        assert _resumes(rig.port, old_client, t13.session) == "full"
    # TLS 1.2 session of the old client, to try resuming once its authority is gone
    tls12 = client_context(pki, pki.client)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2

    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            try:
                results.append(_post(rig.port, old_client, n))
            except BaseException as exc:  # noqa: BLE001 - every failure is the test's
                errors.append(exc)
                return
            n += 1

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_until(lambda: len(results) >= 5, 10, "traffic to flow")
        _replace(rig.files["cert"], rotation.server_cert)  # the key does not match it yet
        wait_until(lambda: gauge(rig.port, "httppush_tls_reload_failing", old_client) == 1, 10,
                   "the mismatched set to be refused")
        assert gauge(rig.port, "httppush_tls_reloads", old_client) == 0
        assert _post(rig.port, old_client, -2) == (200, s1)  # the old set is still served
        _replace(rig.files["key"], rotation.server_key)
        wait_until(lambda: _post(rig.port, old_client, -3)[1] == s2, 10, "new connections to get the new certificate")
        keep.request("POST", "/api", body=b'{"keep": 1}')  # the keep-alive connection: same socket, old certificate
        assert keep.getresponse().read() == b'{"accepted":1,"sources":1}'
        assert keep.sock is keep_socket and _serial(keep) == s1
        _replace(rig.files["ca"], pki.ca, rotation.ca)  # step 1: both authorities
        wait_until(lambda: _refused(rig.port, new_client) == "", 10, "the new client authority to be trusted")
        conn = socket.create_connection(("127.0.0.1", rig.port))
        with tls12.wrap_socket(conn, server_hostname="127.0.0.1") as old_session:
            old_session.sendall(b'POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{"tls": 12}')
            assert old_session.recv(100).startswith(b"HTTP/1.1 200"), "TLS 1.2 request"
            session = old_session.session
        wait_until(lambda: len(results) >= 20, 10, "more traffic")
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert {status for status, _ in results} == {200}
    serials = [serial for _, serial in results]
    assert s2 in serials and serials == sorted(serials, key=lambda serial: serial == s2), "S1 … then S2 … only"
    assert gauge(rig.port, "httppush_tls_reloads", old_client) == 2
    assert gauge(rig.port, "httppush_tls_reload_failures", old_client) == 1
    assert gauge(rig.port, "httppush_tls_reload_failing", old_client) == 0

    # OpenSSL keeps a session's time in whole seconds: one begun in the second of a load is let through
    wait_until(lambda: int(time.time()) > session.time, 2, "the next second")
    _replace(rig.files["ca"], rotation.ca)  # step 2: the old authority goes
    wait_until(lambda: _refused(rig.port, old_client), 10, "the old client authority to be refused")
    assert _post(rig.port, new_client, -4) == (200, s2)
    # nor by resuming the TLS 1.2 session it had before: resumed (the session id cache cannot be switched off), then
    # closed unanswered (the client sees the close in its handshake's last step or at its first read)
    conn = socket.create_connection(("127.0.0.1", rig.port))
    try:
        with tls12.wrap_socket(conn, server_hostname="127.0.0.1", session=session) as resumed:
            assert resumed.session_reused
            resumed.sendall(b'POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{"tls": 14}')
            answer = resumed.recv(100)
    except (ssl.SSLError, ConnectionError) as exc:
        answer = str(exc).encode()
    assert not answer.startswith(b"HTTP/"), answer
    # the close without close_notify took the session out of the server's cache: a second try is a full handshake,
    # refused for its authority (a client retrying with its cached session is not locked out for good)
    wait_until(lambda: _resumes(rig.port, tls12, session) == "refused", 5, "the session to leave the server's cache")
    keep.request("POST", "/api", body=b'{"keep": 2}')  # opened under the old authority: keeps working
    assert keep.getresponse().read() == b'{"accepted":1,"sources":1}' and keep.sock is keep_socket
    keep.close()

    # every 200 delivered once, in order, and nothing else: up to the sentinel, the records are exactly these
    assert _post(rig.port, new_client, 999_999)[0] == 200
    got = rig.records_until({"n": 999_999})
    assert [r for r in got if "keep" in r] == [{"keep": 0}, {"keep": 1}, {"keep": 2}]
    assert [r["n"] for r in got if r.get("n", -1) >= 0] == list(range(len(results)))
    assert {"tls": 12} in got and {"tls": 13} in got and {"tls": 14} not in got
    assert {-2, -4} <= {r["n"] for r in got if "n" in r}


def test_a_broken_set_keeps_the_one_in_use(rig: Rig, pki: Pki, rotation: Rotation) -> None:
    """A CA file that no longer parses, then a missing key: each refused, named and counted, the set in use served;
    the files put back as they were: nothing to load, nothing failing."""
    client = client_context(pki, pki.client)
    s1 = serial_of(pki.server_cert)
    original_ca = rig.files["ca"].read_bytes()
    rig.files["ca"].write_text("not a certificate\n")
    wait_until(lambda: gauge(rig.port, "httppush_tls_reload_failing", client) == 1, 10, "the bad CA file to be seen")
    assert _post(rig.port, client, 1) == (200, s1)
    _replace(rig.files["ca"], pki.ca)
    wait_until(lambda: gauge(rig.port, "httppush_tls_reload_failing", client) == 0, 10, "the CA file restored")
    assert rig.files["ca"].read_bytes() == original_ca
    rig.files["key"].unlink()
    wait_until(lambda: gauge(rig.port, "httppush_tls_reload_failures", client) == 2, 10, "the missing key")
    assert _post(rig.port, client, 2) == (200, s1)
    assert gauge(rig.port, "httppush_tls_reloads", client) == 0
    assert _post(rig.port, client, 3)[0] == 200
    assert rig.records_until({"n": 3}) == [{"n": 1}, {"n": 2}]


def test_a_renewed_certificate_alone_lets_tls12_sessions_resume(rig: Rig, pki: Pki, rotation: Rotation) -> None:
    """Client certificates checked, the server certificate and key renewed (the CA file unchanged): a TLS 1.2
    session begun before resumes and is served (its client was checked against the CA file still in use); only a
    changed CA file closes such sessions (test_rotation_under_traffic)."""
    tls12 = client_context(pki, pki.client)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls12.wrap_socket(socket.create_connection(("127.0.0.1", rig.port)), server_hostname="127.0.0.1") as first:
        first.sendall(b'POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{"n": 1}')
        assert first.recv(100).startswith(b"HTTP/1.1 200")
        session = first.session
    wait_until(lambda: int(time.time()) > session.time, 2, "the next second")  # the reload is later than the session
    _replace(rig.files["cert"], rotation.server_cert)
    _replace(rig.files["key"], rotation.server_key)
    s2 = serial_of(rotation.server_cert)
    wait_until(lambda: _post(rig.port, client_context(pki, pki.client), 2)[1] == s2, 10, "the renewed certificate")
    with tls12.wrap_socket(socket.create_connection(("127.0.0.1", rig.port)), server_hostname="127.0.0.1",
                           session=session) as resumed:
        assert resumed.session_reused
        resumed.sendall(b'POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{"n": 3}')
        assert resumed.recv(100).startswith(b"HTTP/1.1 200")
    assert _post(rig.port, client_context(pki, pki.client), 4)[0] == 200  # the sentinel
    got = [r["n"] for r in rig.records_until({"n": 4})]
    assert got[0] == 1 and got[-1] == 3 and set(got) <= {1, 2, 3}, got


def test_the_files_are_looked_at_off_the_event_loop(rig: Rig, monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """A look loads a changed set (a CA bundle: tens of milliseconds) in a worker thread, never on the loop that
    serves the clients; looks go on after one that failed."""
    loop_thread = rig.server.run(threading.get_ident)
    threads: list[int] = []
    real = Certificates.look

    def look(self: Certificates) -> bool:
        threads.append(threading.get_ident())
        if len(threads) == 1:
            raise OSError("a look that fails")  # the next ones are still set
        return real(self)

    monkeypatch.setattr(Certificates, "look", look)
    wait_until(lambda: len(threads) >= 3, 10, "three looks at the files")
    assert loop_thread not in threads, (loop_thread, threads)
    client = client_context(pki, pki.client)
    assert _post(rig.port, client, 1)[0] == 200  # served throughout
    assert _post(rig.port, client, 2)[0] == 200  # the sentinel: nothing else arrived
    assert rig.records_until({"n": 2}) == [{"n": 1}]


# -- the reloader alone ------------------------------------------------------------------------------------------

def test_look_loads_only_a_changed_set_that_loads(pki: Pki, rotation: Rotation, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    for path, source in ((cert, pki.server_cert), (key, pki.server_key), (ca, pki.ca)):
        shutil.copy(source, path)
    certs = Certificates(TlsConfig(str(cert), str(key), str(ca), "optional"))
    first = certs.current
    assert certs.look() is False and certs.current is first
    os.utime(cert, ns=(1, 1))  # touched, same bytes: hashed, not loaded
    assert certs.look() is False and certs.current is first and certs.failures == 0
    _replace(cert, rotation.server_cert)
    assert certs.look() is False and certs.current is first and certs.failures == 1
    assert "KEY_VALUES_MISMATCH" in certs.failing or "key values mismatch" in certs.failing, certs.failing
    assert "the set loaded before is kept" in caplog.text
    assert certs.look() is False and certs.failures == 1  # unchanged since: not tried again
    key.write_bytes(rotation.server_key.read_bytes())  # rewritten in place (same inode)
    assert certs.look() is True and certs.current is not first and certs.failing == ""
    assert certs.reloads == 1
    ca.unlink()
    assert certs.look() is False and "ca.pem" in certs.failing and "No such file" in certs.failing


def test_reload_interval_setting(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugins" / "portable" / "pyhttppush"
    (plugin_dir / "etc").mkdir(parents=True)
    (plugin_dir / "etc" / "kuiper.yaml").write_text("source:\n  httpServerTls: {certfile: c, keyfile: k}\n")
    env: dict[str, str] = {}
    assert load_server_config(plugin_dir, "pyhttppush", env).tls.reload_interval == 60.0  # type: ignore[union-attr]
    for value, expected in (("0", 0.0), ("off", 0.0), ("2.5", 2.5)):
        config = load_server_config(plugin_dir, "pyhttppush", {**env, "PYHTTPPUSH_TLS_RELOAD_INTERVAL": value})
        assert config.tls.reload_interval == expected  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"httpServerTls.reloadInterval' is '-1'.*environment variable "
                                          "PYHTTPPUSH_TLS_RELOAD_INTERVAL"):
        load_server_config(plugin_dir, "pyhttppush", {**env, "PYHTTPPUSH_TLS_RELOAD_INTERVAL": "-1"})


def test_installed_plugin_reloads(make_host: Callable[..., PluginHost], pki: Pki, rotation: Rotation,
                                  tmp_path: Path) -> None:
    """The installed plugin under the emulated host, its files and reloadInterval from the environment: a renewed
    certificate is served to new connections, the source keeps its rule (no restart), and nothing else arrives."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    port = free_port()
    host = make_host(port, PYHTTPPUSH_TLS_CERTFILE=str(cert), PYHTTPPUSH_TLS_KEYFILE=str(key),
                     PYHTTPPUSH_TLS_RELOAD_INTERVAL="0.2")
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    client = client_context(pki)
    assert _post(port, client, 1) == (200, serial_of(pki.server_cert))
    _replace(key, rotation.server_key)  # the key first, this time
    _replace(cert, rotation.server_cert)
    tries: list[tuple[int, int]] = []
    s2 = serial_of(rotation.server_cert)
    wait_until(lambda: tries.append(_post(port, client, 2)) or tries[-1][1] == s2, 10, "the renewed certificate")
    assert {status for status, _ in tries} == {200}
    assert gauge(port, "httppush_tls_reloads", client) == 1
    assert ch.messages(1 + len(tries)) == [{"n": 1}] + [{"n": 2}] * len(tries)
    assert_sentinel_next_on_channels(sender(port, "/api", tls=client), ch)
