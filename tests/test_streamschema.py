"""streamschema: what eKuiper's REST answers (or the property ``schema``) can hold, and what comes of it at the start:
a ConfigError naming both sources, never another exception escaping the start command, in bounded time and memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from httppush_plugin.errors import ConfigError
from httppush_plugin.properties import EndpointConfig
from httppush_plugin.streamschema import MAX_ANSWER_BYTES, RestUnavailable, fetch_fields, find_schema

Body = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def rest() -> Iterator[tuple[str, dict[str, Body]]]:
    """A loopback server answering GET /streams/<name>/schema with the body function stored under <name>."""
    bodies: dict[str, Body] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = self.path.split("/")
            body = bodies.get(parts[2]) if len(parts) > 3 and parts[1] == "streams" else None
            if body is None:
                self.send_error(404)
                return
            body(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield str(server.server_address[1]), bodies
    server.shutdown()
    server.server_close()


def fixed(data: bytes) -> Body:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    return send


def checked() -> EndpointConfig:
    return EndpointConfig.from_props({"validation": "on"}, "/s")


@pytest.mark.parametrize("answer", [
    b'{"pos": {"type": "struct", "properties": [1, 2]}}',  # was an AttributeError
    b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # was a RecursionError (json)
    b'{"a": ' + b'{"type": "array", "items": ' * 400 + b'{"type": "bigint"}' + b"}" * 400 + b"}",  # RecursionError
    b'{"a": "' + b"x" * (MAX_ANSWER_BYTES + 10) + b'"}',  # read whole, however large
])
def test_a_malformed_or_huge_rest_answer_is_a_config_error_naming_both(
        rest: tuple[str, dict[str, Body]], tmp_path: Path, answer: bytes) -> None:
    port, bodies = rest
    bodies["s"] = fixed(answer)
    with pytest.raises(ConfigError) as caught:
        find_schema(checked(), "s", tmp_path, {"KUIPER__BASIC__RESTPORT": port})
    message = str(caught.value)
    assert f"127.0.0.1:{port}/streams/s/schema" in message or "schema of 's'" in message
    assert "property 'schema'" in message
    assert len(message) < 1000
    # with the property set, the start goes on with it
    cfg = EndpointConfig.from_props({"validation": "on", "schema": "a bigint"}, "/s")
    schema = find_schema(cfg, "s", tmp_path, {"KUIPER__BASIC__RESTPORT": port})
    assert schema is not None and schema.origin == "property 'schema'"


def test_a_rest_answer_sent_slowly_ends_at_the_deadline(rest: tuple[str, dict[str, Body]]) -> None:
    port, bodies = rest
    stop = threading.Event()

    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b"{")
        for _ in range(99):
            if stop.wait(0.05):
                return
            handler.wfile.write(b" ")
            handler.wfile.flush()

    bodies["s"] = drip
    started = time.monotonic()
    try:
        with pytest.raises(RestUnavailable, match="within 0.5 s"):
            fetch_fields(f"http://127.0.0.1:{port}", "s", timeout=0.5)
    finally:
        stop.set()
    # each receive is bounded by what was left of the deadline: at most twice it (the drip alone takes ~5 s)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("value", [
    "a " + "struct(b " * 5000 + "bigint" + ")" * 5000,  # was a RecursionError
    "a " + "array(" * 101 + "bigint" + ")" * 101,
])
def test_the_property_nested_too_deeply_is_a_config_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="property 'schema'.*nested deeper than 100"):
        EndpointConfig.from_props({"schema": value}, "/s")


def test_the_property_nested_to_the_limit_is_read() -> None:
    cfg = EndpointConfig.from_props({"schema": "a " + "array(" * 100 + "bigint" + ")" * 100}, "/s")
    assert cfg.schema is not None and str(cfg.schema[0][1]).count("array") == 100


def test_the_hosts_basic_settings_are_read_as_ekuiper_reads_them(tmp_path: Path) -> None:
    from httppush_plugin.streamschema import host_basic

    etc = tmp_path / "host" / "etc"
    etc.mkdir(parents=True)
    plugin_dir = tmp_path / "host" / "plugins" / "portable" / "pyhttppush"
    # eKuiper lowercases the yaml's keys before it maps them to its settings: any case is the same key
    (etc / "kuiper.yaml").write_text("Basic:\n  RESTPORT: 9444\n  restip: 0.0.0.0\n  IgnoreCase: true\n")
    assert host_basic(plugin_dir, {}) == ("http://127.0.0.1:9444", True)
    # an override: KUIPER__BASIC__ then the key in any case; the value trimmed, a boolean as Go's ParseBool reads it
    env = {"KUIPER__BASIC__restPort": " 9555 ", "KUIPER__BASIC__IGNORECASE": "F"}
    assert host_basic(plugin_dir, env) == ("http://127.0.0.1:9555", False)
    (etc / "kuiper.yaml").write_text("basic:\n  restPort: 9444\n")
    assert host_basic(plugin_dir, {"KUIPER__BASIC__IGNORECASE": " T"}) == ("http://127.0.0.1:9444", True)
    assert host_basic(plugin_dir, {"KUIPER__BASIC__RESTTLS__CERTFILE": "/c.pem"})[0] == "https://127.0.0.1:9444"
    (etc / "kuiper.yaml").write_text("basic: 5\n")  # not a mapping (the host would not start): the defaults
    assert host_basic(plugin_dir, {}) == ("http://127.0.0.1:9081", False)
