"""A stand-in for eKuiper's portable-plugin runtime with its exact protocol (``docs/host-behaviour.md`` §1, §3, §4):

* installs a plugin zip as eKuiper's installer does: ``sources/*`` to the host's ``etc/sources``, the rest to
  ``plugins/portable/<name>/``, then ``/bin/sh install.sh`` in that folder;
* starts the executable as eKuiper does: ``<pythonBin> -u <abs exe> '{"sendTimeout":1000}'``, cwd = plugin folder;
* listens with REP on ``ipc:///tmp/plugin_<name>.ipc`` and drives the inverted request/reply: each command is the
  reply to the plugin's last request, an answer starting with ``h`` is a stale handshake and the command is sent again
  (runtime/connection.go ``SendCmd``);
* listens with PULL on ``ipc:///tmp/<ruleId>_<opId>_<instanceId>.ipc`` before sending ``start`` and decodes each
  message as ``{"message": {...}, "meta": {...}}``, dropping non-object messages as the host does.

Like the real host, one emulator per plugin name at a time: the IPC paths carry no host identity.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynng

from harness.hostlock import HOST_LOCK

SEND_TIMEOUT_MS = 1000
#: How often a data channel's reader looks up from its ``recv`` to see whether it is to stop: what closing a channel
#: costs (every test's teardown closes each of its channels; at 200 ms that was most of a teardown).
READER_POLL_MS = 50


class HostError(AssertionError):
    pass


def install_zip(zip_path: Path, root: Path, name: str, python: str) -> Path:
    """Install ``zip_path`` into the host tree ``root`` like eKuiper's portable manager; returns the plugin dir."""
    plugin_dir = root / "plugins" / "portable" / name
    conf_dir = root / "etc"
    data_dir = root / "data"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        descriptor = json.loads(zf.read(f"{name}.json"))
        for entry in names:
            if entry.endswith("/"):
                continue
            if entry.startswith(("sources/", "sinks/", "functions/")):
                for base in (conf_dir, data_dir):
                    (base / entry).parent.mkdir(parents=True, exist_ok=True)
                    (base / entry).write_bytes(zf.read(entry))
            else:
                (plugin_dir / entry).parent.mkdir(parents=True, exist_ok=True)
                (plugin_dir / entry).write_bytes(zf.read(entry))
    required = [f"{name}.json", descriptor["executable"], *(f"sources/{s}.yaml" for s in descriptor["sources"])]
    missing = [r for r in required if r not in names]
    if missing:
        raise HostError(f"zip lacks {missing}")
    if "install.sh" in names:
        env = {**os.environ, "KUIPER__PORTABLE__PYTHONBIN": python}
        result = subprocess.run(["/bin/sh", str(plugin_dir / "install.sh")], cwd=plugin_dir, env=env,
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise HostError(f"install.sh failed: stdout={result.stdout} stderr={result.stderr}")
    return plugin_dir


@dataclass
class DataChannel:
    """The host's PULL side of one source instance."""

    rule_id: str
    op_id: str
    instance_id: int = 0
    records: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    dropped: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = f"ipc:///tmp/{self.rule_id}_{self.op_id}_{self.instance_id}.ipc"
        self.socket = pynng.Pull0(recv_timeout=READER_POLL_MS)
        self.socket.listen(self.url)
        self._stop = threading.Event()
        self.died = ""  # why the reader stopped early, if it did
        self._reading = threading.Event()
        self._reading.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._reading.wait(timeout=0.2):
                continue
            try:
                raw = self.socket.recv()
            except pynng.Timeout:
                continue
            except pynng.NNGException as exc:
                if not self._stop.is_set():
                    self.died = f"its recv failed: {exc!r}"  # named by take(), not a silent stall
                return
            try:
                self.accept(raw)
            except Exception as exc:
                self.died = f"reading a message raised {exc!r}"
                return

    def accept(self, raw: bytes) -> None:
        """One message from the plugin, read as the host reads it."""
        envelope = json.loads(raw)
        message = envelope.get("message")
        if isinstance(message, dict):  # the host drops anything else (runtime/source.go)
            self.records.put({"message": message, "meta": envelope.get("meta")})
        else:
            self.dropped.append(raw)

    def take(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``n`` messages (``{"message", "meta"}``), waiting up to ``timeout`` seconds in all."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.records.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                why = f" (the reader stopped: {self.died})" if self.died else ""
                raise HostError(f"expected {n} records on {self.url}{why}, got {len(out)}: {out}") from None
        return out

    def messages(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [item["message"] for item in self.take(n, timeout)]

    def expect_next(self, record: dict[str, Any], timeout: float = 5.0) -> None:
        """The next record this channel yields must be ``record``; :class:`HostError` names what came instead."""
        got = self.messages(1, timeout)[0]
        if got != record:
            raise HostError(f"expected {record} next on {self.url}, got {got}: a record the test did not expect "
                            f"arrived first; queued after it: {list(self.records.queue)}")

    def connections(self) -> int:
        """How many connections from the plugin this channel has open now (nng pipes). One closed by the plugin is
        gone only once the host has read everything it held (nng reads a pipe to its end before it removes it)."""
        return len(self.socket.pipes)

    def pause(self) -> None:
        """Stop reading but keep the socket open, as a host that has stalled: nothing is closed, the plugin's
        connection stays up and its writes block once the socket buffers are full. :meth:`resume` reads again."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def close(self) -> None:
        # The reader stops first (its recv times out within READER_POLL_MS), then the socket closes: pynng 0.8.1's
        # close() was seen to hang for good when it raced a recv on a channel the test had paused.
        self._stop.set()
        self._reading.set()
        self._thread.join(timeout=2)
        closer = threading.Thread(target=self.socket.close, daemon=True)
        closer.start()
        closer.join(timeout=5)  # never let a stuck close hang the test run


class PluginHost:
    """Runs one installed plugin the way eKuiper 2.x does and sends it start/stop commands.

    Example::

        host = PluginHost(plugin_dir, "pyhttppush", python)
        ch = host.start_source("r1", "s1", {"datasource": "/a", "format": "json"})
        ...  # POST to the plugin, then ch.messages(1)
        host.stop_source(ch)
    """

    def __init__(self, plugin_dir: Path, name: str, python: str, env: dict[str, str] | None = None,
                 send_timeout_ms: int = SEND_TIMEOUT_MS) -> None:
        self.plugin_dir = plugin_dir
        self.name = name
        self.descriptor = json.loads((plugin_dir / f"{name}.json").read_text())
        self.symbol = self.descriptor["sources"][0]
        self.url = f"ipc:///tmp/plugin_{name}.ipc"
        self._closed = False
        HOST_LOCK.acquire()
        self.socket = pynng.Rep0(recv_timeout=15000)
        self.socket.listen(self.url)
        self.log_path = plugin_dir / "plugin.log"
        self._log = open(self.log_path, "ab")
        exe = str(plugin_dir / self.descriptor["executable"])
        self.process = subprocess.Popen(
            [python, "-u", exe, json.dumps({"sendTimeout": send_timeout_ms}, separators=(",", ":"))],
            cwd=plugin_dir, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._lock = threading.Lock()
        self.channels: dict[tuple[str, str, int], tuple[DataChannel, dict[str, Any]]] = {}
        try:
            first = self.socket.recv()  # Handshake(): the plugin's first request
        except pynng.Timeout:
            log = self.log_tail()  # before close(), which closes the log file
            self.close()
            raise HostError(f"no handshake from the plugin; its log: {log}") from None
        if not first.startswith(b"h"):
            raise HostError(f"first request was {first!r}, not a handshake")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the plugin's output (its log)."""
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def send_command(self, cmd: str, control: dict[str, Any]) -> str:
        """Send one command; returns the plugin's answer (``ok`` or an error text)."""
        payload = json.dumps({"cmd": cmd, "arg": json.dumps(control)}).encode()
        with self._lock:
            while True:
                try:
                    self.socket.send(payload)
                except pynng.BadState:  # no request pending: take the plugin's next one, then answer it
                    self.socket.recv()
                    self.socket.send(payload)
                answer = self.socket.recv()
                if answer[:1] == b"h":  # a stale handshake: send the command again
                    continue
                return answer.decode(errors="replace")

    def await_request(self) -> bytes:
        """Take the plugin's next request off the control channel and return it, unanswered (the next command is
        the answer): e.g. the handshake the SDK sends again after 5 s without a command (its receive timeout).
        Waits up to the control channel's 15 s receive timeout."""
        with self._lock:
            return self.socket.recv()

    def control(self, rule_id: str, op_id: str, instance_id: int, config: dict[str, Any]) -> dict[str, Any]:
        return {"symbolName": self.symbol, "meta": {"ruleId": rule_id, "opId": op_id, "instanceId": instance_id},
                "pluginType": "source", "config": config}

    def start_source(self, rule_id: str, op_id: str, props: dict[str, Any], instance_id: int = 0,
                     expect_ok: bool = True, channel_type: type[DataChannel] = DataChannel) -> DataChannel | str:
        """Listen on the data channel (a ``channel_type``: a subclass may read messages its own way), then send
        ``start`` with the config eKuiper 2.x builds from ``props``."""
        channel = channel_type(rule_id, op_id, instance_id)
        control = self.control(rule_id, op_id, instance_id, source_config(props))
        answer = self.send_command("start", control)
        if answer != "ok":
            channel.close()
            if expect_ok:
                raise HostError(f"start answered {answer!r}")
            return answer
        self.channels[(rule_id, op_id, instance_id)] = (channel, control)
        return channel

    def stop_source(self, channel: DataChannel) -> str:
        """As the host: close the data channel first, then send ``stop`` (runtime/source.go ``clean``)."""
        _, control = self.channels.pop((channel.rule_id, channel.op_id, channel.instance_id))
        channel.close()
        return self.send_command("stop", control)

    def log_text(self) -> str:
        """Everything the plugin has written to its log so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_alive(self) -> None:
        """The plugin process still runs; if not, the failure shows its log's tail."""
        assert self.alive(), f"the plugin process died; its log:\n{self.log_tail()}"

    def close(self) -> None:
        """Stop the plugin process and release the host lock; again: nothing (a test may close a host itself)."""
        if self._closed:
            return
        self._closed = True
        for channel, _ in list(self.channels.values()):
            try:
                self.stop_source(channel)
            except Exception:
                channel.close()
        self.channels.clear()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # as eKuiper's Stop(): no close() is called
            self.process.wait(timeout=10)
        self.socket.close()
        self._log.close()
        HOST_LOCK.release()


def loopback_env(port: int, **extra: str) -> dict[str, str]:
    """The environment that puts the plugin's server on ``127.0.0.1:port``, plus ``extra`` settings."""
    return {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(port), **extra}


def source_config(props: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` map eKuiper 2.x sends (internal/topo/node/conf/source.go): the yaml default group overlaid by
    ``props`` (stream EXTRA / conf key), then every stream option, empty ones as "", 0, false."""
    config: dict[str, Any] = {"method": "POST", "fields": [], "decoder": ""}
    options = {"format": "json", "key": "", "datasource": "", "schemaId": "", "delimiter": "", "retainSize": 0,
               "strictValidation": False, "timestamp": "", "timestampFormat": ""}
    for key, value in props.items():
        (options if key in options else config)[key] = value
    options["format"] = str(options["format"]).lower()
    return {**config, **options}
