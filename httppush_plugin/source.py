"""The SDK glue: the only module (with ``main.py``) that imports the eKuiper SDK.

Lifecycle of one source instance, as the SDK drives it (``ekuiper/runtime/source.py``; ``docs/host-behaviour.md`` §3):

* ``configure()`` runs in the control thread, before the host is answered. Everything a start can fail on is checked
  here — settings, decoder, binding the shared server — because only what it raises reaches the host (as the rule's
  error). On return the endpoint is live.
* ``open()`` runs in a thread of its own right after: it dials the host's data channel, attaches it to the
  subscription, and blocks until ``close()``; when it returns the SDK considers the source stopped.
* ``close()`` unsubscribes (the last one stops the server) and closes the channel.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynng
from ekuiper import Context, PluginConfig, Source
from ekuiper.runtime import plugin as sdk_plugin
from ekuiper.runtime import reg as sdk_reg
from ekuiper.runtime.connection import PairChannel

from .channel import ChannelSender, channel_url
from .decoders import build_decoder
from .drain import Drain
from .layout import SearchPaths, host_root
from .properties import EndpointConfig
from .routing import Subscription
from .schema import CheckedDecoder
from .server import SharedServer
from .settings import load_server_config
from .streamschema import find_schema, stream_of

#: How long a send to the host's channel may make no progress, when eKuiper's start command does not say
#: (``python main.py '{"sendTimeout":1000}'``).
DEFAULT_SEND_TIMEOUT_MS = 1000

log = logging.getLogger(__name__)


class PluginRuntime:
    """What every source instance of this process shares: the server, the search paths, the host's settings."""

    def __init__(self, plugin_dir: Path, symbol: str, send_timeout_ms: int = DEFAULT_SEND_TIMEOUT_MS) -> None:
        self.plugin_dir = plugin_dir
        self.symbol = symbol
        self.send_timeout_ms = send_timeout_ms
        self.paths = SearchPaths(plugin_dir)
        data = host_root(plugin_dir) / "data"  # eKuiper's data folder: a persisted drain outlives this process there
        marker = data / f"{plugin_dir.name}.draining" if data.is_dir() else None
        self.server = SharedServer(lambda: load_server_config(plugin_dir, symbol), Drain(marker))
        #: the live source of each instance (ruleId, opId, instanceId), to retire it when its start comes again
        self.instances: dict[tuple[str, str, int], HttpPushSource] = {}


class HttpPushSource(Source):
    def __init__(self, runtime: PluginRuntime) -> None:
        self.runtime = runtime
        self.subscription: Subscription | None = None
        self.sender: ChannelSender | None = None
        self._closed = threading.Event()

    def configure(self, datasource: str, conf: dict[str, Any]) -> None:
        endpoint = EndpointConfig.from_props(conf, datasource)
        decoder = build_decoder(endpoint, self.runtime.paths)
        instance = getattr(_starting, "instance", None)
        schema = find_schema(endpoint, stream_of(instance), self.runtime.plugin_dir)
        if schema is not None:  # fetched at every start: a stream update restarts its rules
            log.info("%s: records checked against the fields from %s", endpoint.path, schema.origin)
            decoder = CheckedDecoder(decoder, schema)
        subscription = Subscription(endpoint, decoder, instance=instance)
        self.runtime.server.subscribe(subscription)  # binds the server if it is the first: may raise BindError
        self.subscription = subscription
        _starting.source = self
        if instance is not None:
            old = self.runtime.instances.get(instance)
            if old is not None:
                old.retire(instance)
            self.runtime.instances[instance] = self

    def open(self, ctx: Context) -> None:
        sub = self.subscription
        if sub is None:
            return
        label = f"rule {ctx.get_rule_id()} stream {ctx.get_op_id()} instance {ctx.get_instance_id()}"
        url = channel_url(ctx.get_rule_id(), ctx.get_op_id(), ctx.get_instance_id())
        server = self.runtime.server
        try:
            sender = server.call(ChannelSender.connect(url, self.runtime.send_timeout_ms / 1000, label))
        except Exception:
            log.exception("cannot dial the host's data channel %s; %s gets nothing", url, label)
            self._release()
            return
        self.sender = sender
        if self._closed.is_set():  # close() ran before we got here
            server.run(sender.close)
            return
        server.attach(sub, sender)
        self._closed.wait()

    def close(self, ctx: Context) -> None:
        self._release()
        if self.sender is not None:
            self.runtime.server.run(self.sender.close)
        self._closed.set()

    def _release(self) -> None:
        sub, self.subscription = self.subscription, None
        if sub is not None:
            self.runtime.server.unsubscribe(sub)
            if sub.instance is not None and self.runtime.instances.get(sub.instance) is self:
                del self.runtime.instances[sub.instance]

    def retire(self, instance: tuple[str, str, int]) -> None:
        """A newer start of the same instance replaced this source (its subscription is already gone): end its
        ``open()`` thread and close the SDK's data socket, without letting the SDK unregister the instance — its
        registry key is the newer source's too."""
        key = f"{instance[0]}_{instance[1]}_{instance[2]}_{self.runtime.symbol}"
        if sdk_reg.has(key):
            runtime = sdk_reg.get(key)
            if getattr(runtime, "s", None) is self:
                runtime.running = False  # open() returning must not make the SDK stop and unregister it
                try:
                    runtime.ch.close()
                except Exception:  # pynng raises if it is closed already
                    pass
        self.subscription = None
        self._closed.set()


def _plugin_identity(plugin_dir: Path) -> tuple[str, list[str]]:
    """eKuiper installs a plugin into ``plugins/portable/<name>/`` next to ``<name>.json``, which names the
    sources: the folder tells which zip (httppush or pyhttppush) this process is."""
    name = plugin_dir.name
    descriptor = plugin_dir / f"{name}.json"
    try:
        symbols = list(json.loads(descriptor.read_text(encoding="utf-8"))["sources"])
    except (OSError, ValueError, KeyError, TypeError):
        symbols = [name]
    return name, symbols


def _send_timeout(argv: list[str]) -> int:
    # eKuiper starts us as `python -u main.py '{"sendTimeout":1000}'` (plugin_ins_manager.go)
    try:
        return int(json.loads(argv[1])["sendTimeout"])
    except (IndexError, ValueError, KeyError, TypeError):
        return DEFAULT_SEND_TIMEOUT_MS


#: The source instance whose start command the control thread is handling (the SDK gives configure() no meta).
_starting = threading.local()


def _instance_of(request: bytes) -> tuple[str, str, int] | None:
    try:
        command = json.loads(request)
        if command.get("cmd") != "start":
            return None
        meta = json.loads(command["arg"])["meta"]
        return (str(meta["ruleId"]), str(meta["opId"]), int(meta["instanceId"]))
    except (ValueError, KeyError, TypeError):
        return None


_CONFIG_ERROR_LINE = re.compile(rb"^httppush_plugin\.[\w.]*(?:ConfigError|BindError): (.*)$", re.S)


def _wrap_command_reply(symbol: str, command_reply: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Around the SDK's command handler:

    * note which source instance a start command is for, so that configure() can tell a repeated start;
    * a start that fails after configure() subscribed (the SDK could not dial the host's data channel) must not
      leave the endpoint subscribed: the host considers the source not started and will never stop it;
    * the SDK answers a failed start with the whole Python traceback, which eKuiper logs as the rule's error; for
      the errors we raise on purpose (bad settings, bind failures) the message alone says everything.
    """

    def reply(request: bytes) -> bytes:
        _starting.instance = _instance_of(request)
        _starting.source = None
        try:
            answer = command_reply(request)
        finally:
            _starting.instance = None
            source, _starting.source = _starting.source, None
        if answer != b"ok" and isinstance(source, HttpPushSource):
            source._release()
        if answer.startswith(b"Traceback"):
            match = _CONFIG_ERROR_LINE.match(answer[answer.rfind(b"\nhttppush_plugin.") + 1:].rstrip())
            if match:
                return symbol.encode() + b": " + match.group(1)
        return answer

    return reply


def run(plugin_dir: Path, argv: list[str]) -> None:
    """Entry point of the plugin process: serve eKuiper's control channel until the host goes away."""
    name, symbols = _plugin_identity(plugin_dir)
    runtime = PluginRuntime(plugin_dir, symbols[0], _send_timeout(argv))
    sources = {symbol: (lambda: HttpPushSource(runtime)) for symbol in symbols}
    # plugin.start() looks command_reply and PairChannel up in its module when it starts serving
    sdk_plugin.command_reply = _wrap_command_reply(symbols[0], sdk_plugin.command_reply)
    sdk_plugin.PairChannel = _ControlChannel
    sdk_plugin.start(PluginConfig(name, sources, {}, {}))


class _ControlChannel(PairChannel):
    """The SDK's control channel, plus: when eKuiper goes away (its end of the channel closes), exit at once.

    The SDK alone would keep re-sending its handshake forever, and the orphaned process would keep the HTTP port,
    so that the next eKuiper's plugin could not bind it. eKuiper starts a new process whenever it needs one."""

    def __init__(self, name: str, typ: int) -> None:
        super().__init__(name, typ)
        self.sock.add_post_pipe_remove_cb(_host_gone)

    def run(self, reply_func: Callable[[bytes], bytes]) -> None:
        try:
            super().run(reply_func)
        except pynng.NNGException:  # e.g. ConnectionReset from a pending recv: the same news, no traceback
            _host_gone(None)


def _host_gone(_pipe: Any) -> None:
    log.warning("eKuiper closed the plugin's control channel; exiting")
    logging.shutdown()
    os._exit(0)
