"""Authentication per config group (``auth``: basic, bearer, hmac, clientcert) and the server's mutual TLS.

Parsing and the endpoint table are checked in-process; everything else through the installed plugin under the
emulated host, with real HTTP(S) over loopback and certificates made by ``openssl`` for the test. "Nothing was
emitted" is always checked with a sentinel record pushed afterwards with valid credentials, which must be the next
record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port, wait_port_closed
from httppush_plugin import auth as auth_module
from httppush_plugin.auth import AuthError, BasicAuth, BearerAuth, ClientCertAuth, HmacAuth, parse_auth
from httppush_plugin.decoders import JsonDecoder
from httppush_plugin.errors import ConfigError
from httppush_plugin.properties import EndpointConfig
from httppush_plugin.routing import EndpointTable, Subscription
from httppush_plugin.server import BindError, _ssl_context
from httppush_plugin.settings import ServerConfig, TlsConfig, load_server_config
from tests.hostemu import PluginHost
from tests.realhost_support import PLUGIN, Ctx, uid
from tests.support.http import RawClient, push, request, sender
from tests.support.pki import Pki, client_context, mtls_env, openssl_subject
from tests.support.sentinel import assert_sentinel_next_on_channels

PASSWORD = "pw-4f1c9e-alice"
TOKEN = "Tok-8d2b7a-Gateway"
SECRET = "hmac-secret-3e9a51"
#: Every secret a test configures: none may appear in the plugin's log or in a start command's answer.
SECRETS = (PASSWORD, TOKEN, SECRET, "pw-bob-0c7d", "Tok-second-55ae")
BASIC = {"type": "basic", "users": {"alice": PASSWORD, "bob": "pw-bob-0c7d"}}
BEARER = {"type": "bearer", "tokens": {"gateway-7": TOKEN, "gateway-8": "Tok-second-55ae"}}
HMAC = {"type": "hmac", "secret": SECRET}
RECORD = '{"t": 21.5}'


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(body: bytes | str, secret: str = SECRET) -> dict[str, str]:
    data = body.encode() if isinstance(body, str) else body
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()}


def assert_401(reply: Any, challenge: str) -> str:
    """401 with ``WWW-Authenticate`` starting with ``challenge`` and a JSON error text (returned)."""
    assert reply.status == 401, (reply.status, reply.body)
    assert reply.headers.get("WWW-Authenticate", "").startswith(challenge), reply.headers
    assert isinstance(reply.body, dict) and reply.body["error"], reply.body
    return reply.body["error"]


# -- parsing -------------------------------------------------------------------------------------------------------

def test_parse_auth_absent_and_none_mean_anyone() -> None:
    for value in (None, "", {}, "none", {"type": "none"}, {"type": "NONE"}):
        assert parse_auth(value) is None, value
    assert EndpointConfig.from_props({"datasource": "/a"}).auth is None


def test_parse_auth_each_type() -> None:
    basic_auth = parse_auth(BASIC)
    assert isinstance(basic_auth, BasicAuth) and basic_auth.names == ("alice", "bob")
    listed = parse_auth({"type": "bearer", "tokens": ["a", {"env": "HOME"}]})
    assert isinstance(listed, BearerAuth) and listed.names == ("token#0", "token#1")
    mac = parse_auth({"type": "hmac", "secret": "s", "header": "X-Signature", "algorithm": "SHA512", "prefix": ""})
    assert isinstance(mac, HmacAuth) and (mac.header, mac.algorithm, mac.prefix) == ("X-Signature", "sha512", "")
    assert parse_auth({"type": "hmac", "secret": "s", "encoding": "base64"}).prefix == ""  # type: ignore[union-attr]
    assert parse_auth({"type": "clientcert"}) == ClientCertAuth()
    # equal settings, equal authenticators (EndpointConfig equality, one route's agreement)
    assert parse_auth(dict(BASIC)) == basic_auth and parse_auth(BEARER) != parse_auth(
        {"type": "bearer", "tokens": {"gateway-7": "other"}})


def test_parse_auth_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_AUTH_PASSWORD", PASSWORD)
    from_env = parse_auth({"type": "basic", "users": {"alice": {"env": "TEST_AUTH_PASSWORD"}}})
    assert from_env == parse_auth({"type": "basic", "users": {"alice": PASSWORD}})
    with pytest.raises(ConfigError, match=re.escape("'auth.users.alice' reads the environment variable "
                                                    "'TEST_AUTH_NOT_SET', which is not set")):
        parse_auth({"type": "basic", "users": {"alice": {"env": "TEST_AUTH_NOT_SET"}}})


@pytest.mark.parametrize("value, needle", [
    ("basic", "property 'auth' is a string; must be a mapping with a 'type' (none, basic, bearer, hmac, clientcert, "
              "jwt)"),
    ({"type": "digest"}, "property 'auth.type' is 'digest'; must be one of none, basic, bearer, hmac, clientcert, jwt"),
    ({"type": "basic"}, "property 'auth.users' is missing; type 'basic' needs a mapping of user name to password"),
    ({"type": "basic", "users": [PASSWORD]}, "property 'auth.users' is a list; type 'basic' needs a mapping"),
    ({"type": "basic", "users": {"a:b": PASSWORD}}, "user name 'a:b'; a name must be non-empty and without ':'"),
    ({"type": "basic", "users": {"alice": 1234}}, "property 'auth.users.alice' is a number; a secret must be a string"),
    ({"type": "basic", "users": {"alice": ""}}, "property 'auth.users.alice' is empty"),
    ({"type": "basic", "users": {"alice": PASSWORD}, "tokens": [TOKEN]},
     "property 'auth' has the key 'tokens', unknown for type 'basic'; it takes users"),
    ({"type": "bearer", "tokens": TOKEN}, "property 'auth.tokens' is a string; type 'bearer' needs a mapping of name "
                                          "to token"),
    ({"type": "bearer", "tokens": [TOKEN, 7]}, "property 'auth.tokens[1]' is a number"),
    ({"type": "hmac"}, "property 'auth' of type 'hmac' needs 'secret'"),
    ({"type": "hmac", "secret": {"value": SECRET}}, "property 'auth.secret' is a mapping; a secret must be a string "
                                                    "(quote it in yaml) or {env: NAME}"),
    ({"type": "hmac", "secret": SECRET, "algorithm": "md5"},
     "property 'auth.algorithm' is 'md5'; must be one of sha1, sha256, sha384, sha512"),
    ({"type": "hmac", "secret": SECRET, "encoding": "base32"}, "property 'auth.encoding' is 'base32'; must be hex or "
                                                               "base64"),
    ({"type": "hmac", "secret": SECRET, "header": "X Sig"}, "property 'auth.header' is 'X Sig'; must be an HTTP "
                                                            "header name"),
    ({"type": "clientcert", "users": {}}, "property 'auth' has the key 'users', unknown for type 'clientcert'; it "
                                          "takes names, subjects"),
    ({"type": "clientcert", "names": "gateway-9"}, "property 'auth.names' is 'gateway-9'; must be a list of common "
                                                   "names"),
    ({"type": "clientcert", "subjects": [""]}, "property 'auth.subjects' is ['']; must be a list of subjects"),
    ({"type": "hmac", "secret": SECRET, "timestampHeader": "X Time"}, "property 'auth.timestampHeader' is 'X Time'; "
                                                                      "must be an HTTP header name"),
    ({"type": "hmac", "secret": SECRET, "window": 60}, "property 'auth.window' is set, but 'auth.timestampHeader' is "
                                                       "not"),
    ({"type": "hmac", "secret": SECRET, "timestampHeader": "X-Timestamp", "window": -1},
     "property 'auth.window' is -1; must be more than 0"),
])
def test_parse_auth_errors_name_key_value_and_rule_never_the_secret(value: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)) as caught:
        EndpointConfig.from_props({"datasource": "/a", "auth": value})
    assert not any(secret in str(caught.value) for secret in SECRETS)


def test_repr_shows_no_secret() -> None:
    for value in (BASIC, BEARER, HMAC):
        text = repr(EndpointConfig.from_props({"datasource": "/a", "auth": value}))
        assert not any(secret in text for secret in SECRETS), text
        assert "digests" not in text and "secret=" not in text, text


def test_authenticate_compares_every_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit on a match (or on the user name): every configured credential is compared, in constant time."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    users = {f"user{i}": f"pw{i}" for i in range(5)}
    basic_auth = parse_auth({"type": "basic", "users": users})
    assert basic_auth is not None
    headers = [(k.encode(), v.encode()) for k, v in basic("user0", "pw0").items()]
    assert basic_auth.authenticate(headers, None) == "user0"
    assert len(calls) == 5 and {len(a) for a, _ in calls} == {len(b) for _, b in calls} == {32}
    calls.clear()
    with pytest.raises(AuthError, match="wrong user name or password"):
        basic_auth.authenticate([(b"authorization", b"Basic " + base64.b64encode(b"user0:pw1"))], None)
    assert len(calls) == 5


def test_endpoint_table_one_auth_per_route() -> None:
    def sub(rule: str, path: str = "/a", method: str = "POST", value: Any = None) -> Subscription:
        endpoint = EndpointConfig.from_props({"datasource": path, "method": method, "auth": value})
        return Subscription(endpoint, JsonDecoder(), instance=(rule, "s", 0))

    table = EndpointTable()
    table.add(sub("r1", value=BASIC))
    table.add(sub("r2", value=dict(BASIC)))  # the same settings: fine
    with pytest.raises(ConfigError) as caught:
        table.add(sub("r3", value=BEARER))
    message = str(caught.value)
    assert "rule r3 stream s instance 0" in message and "rule r1 stream s instance 0" in message
    assert "different 'auth' (bearer (2 tokens) and basic (2 users))" in message
    assert not any(secret in message for secret in SECRETS)
    with pytest.raises(ConfigError, match="different 'auth' \\(none and basic"):
        table.add(sub("r4"))
    assert len(table) == 2
    table.add(sub("r5", method="PUT", value=HMAC))  # another method on the path may differ
    route = table.lookup("/a", "POST")
    assert route is not None and route.auth == parse_auth(BASIC)
    # a source started again replaces its old subscription, whose auth then no longer counts
    solo = EndpointTable()
    solo.add(sub("r1", "/b", value=BASIC))
    solo.add(sub("r1", "/b", value=BEARER))
    assert solo.lookup("/b", "POST").auth == parse_auth(BEARER)  # type: ignore[union-attr]


@pytest.mark.parametrize("text, env, expected", [
    ("httpServerTls: {certfile: /c, keyfile: /k, cafile: /ca}", {}, ("/ca", "required")),
    ("httpServerTls: {certfile: /c, keyfile: /k, cafile: /ca, clientAuth: Optional}", {}, ("/ca", "optional")),
    ("httpServerTls: {certfile: /c, keyfile: /k}",
     {"PYHTTPPUSH_TLS_CAFILE": "/e", "PYHTTPPUSH_TLS_CLIENT_AUTH": "none"}, ("/e", "none")),
    ("httpServerTls: {certfile: /c, keyfile: /k}", {}, ("", "none")),
])
def test_server_tls_client_auth_settings(tmp_path: Path, text: str, env: dict[str, str],
                                         expected: tuple[str, str]) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "kuiper.yaml").write_text(f"source:\n  {text}\n")
    tls = load_server_config(tmp_path, "pyhttppush", env).tls
    assert isinstance(tls, TlsConfig) and (tls.cafile, tls.client_auth) == expected


@pytest.mark.parametrize("text, needle", [
    ("httpServerTls: {certfile: /c, keyfile: /k, cafile: /ca, clientAuth: always}",
     "setting 'httpServerTls.clientAuth' is 'always'; must be none, optional or required"),
    ("httpServerTls: {certfile: /c, keyfile: /k, clientAuth: required}",
     "setting 'httpServerTls.clientAuth' is 'required'; it needs 'cafile'"),
    ("httpServerTls: {cafile: /ca}", "setting 'httpServerTls' needs both 'certfile' and 'keyfile'"),
])
def test_server_tls_client_auth_errors(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "kuiper.yaml").write_text(f"source:\n  {text}\n")
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_server_config(tmp_path, "pyhttppush", {})


# -- basic, bearer, hmac through the plugin ------------------------------------------------------------------------

def test_basic_right_user_admitted_with_meta_user(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/b", "auth": BASIC, "meta": ["user", "path"]})
    reply = push(server_port, "/b", RECORD, headers=basic("bob", "pw-bob-0c7d"))
    assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 1})
    assert ch.take(1)[0] == {"message": {"t": 21.5}, "meta": {"user": "bob", "path": "/b"}}

    challenge = 'Basic realm="httppush", charset="UTF-8"'
    assert "credentials" in assert_401(push(server_port, "/b", RECORD), challenge)
    assert "wrong user name or password" in assert_401(
        push(server_port, "/b", RECORD, headers=basic("alice", "pw-bob-0c7d")), challenge)  # bob's password
    assert_401(push(server_port, "/b", RECORD, headers=basic("mallory", PASSWORD)), challenge)
    assert_401(push(server_port, "/b", RECORD, headers={"Authorization": "Basic not*base64"}), challenge)
    assert_401(push(server_port, "/b", RECORD, headers=bearer(PASSWORD)), challenge)  # wrong scheme
    assert_sentinel_next_on_channels(sender(server_port, "/b", headers=basic("alice", PASSWORD)), ch)


def test_bearer_tokens_by_name_and_listed(host: PluginHost, server_port: int) -> None:
    named = host.start_source("r1", "s1", {"datasource": "/t", "auth": BEARER, "meta": ["user"]})
    listed = host.start_source("r2", "s2", {"datasource": "/l", "meta": ["user"],
                                            "auth": {"type": "bearer", "tokens": ["Tok-first", TOKEN]}})
    assert push(server_port, "/t", RECORD, headers=bearer(TOKEN)).status == 200
    assert named.take(1)[0]["meta"] == {"user": "gateway-7"}
    assert push(server_port, "/l", RECORD, headers=bearer(TOKEN)).status == 200
    assert listed.take(1)[0]["meta"] == {"user": "token#1"}

    challenge = 'Bearer realm="httppush"'
    assert "wrong bearer token" in assert_401(push(server_port, "/t", RECORD, headers=bearer(TOKEN.lower())),
                                              challenge)
    assert_401(push(server_port, "/t", RECORD, headers=bearer("Tok-first")), challenge)  # the other route's
    assert_401(push(server_port, "/t", RECORD), challenge)
    assert_401(push(server_port, "/t", RECORD, headers=basic("gateway-7", TOKEN)), challenge)
    assert_sentinel_next_on_channels(sender(server_port, "/t", headers=bearer(TOKEN)), named)


def test_hmac_signature_over_the_raw_body(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/hook", "auth": HMAC, "meta": ["user"]})
    body = b'{"action": "opened",  "n": 1}\n'  # the exact bytes are signed, whitespace included
    assert push(server_port, "/hook", body, headers=signed(body)).status == 200
    assert ch.take(1)[0] == {"message": {"action": "opened", "n": 1}, "meta": {"user": "hmac"}}
    upper = {"X-Hub-Signature-256": signed(body)["X-Hub-Signature-256"].upper()}  # hex in either case
    assert push(server_port, "/hook", body, headers=upper).status == 200
    ch.take(1)

    challenge = 'HMAC realm="httppush", header="X-Hub-Signature-256", algorithm="sha256"'
    assert "does not match the body" in assert_401(
        push(server_port, "/hook", body.replace(b"  ", b" "), headers=signed(body)), challenge)
    assert_401(push(server_port, "/hook", body, headers=signed(body, "wrong-secret")), challenge)
    assert "X-Hub-Signature-256" in assert_401(push(server_port, "/hook", body), challenge)
    bare = signed(body)["X-Hub-Signature-256"].removeprefix("sha256=")
    assert_401(push(server_port, "/hook", body, headers={"X-Hub-Signature-256": bare}), challenge)
    # a large body (decoded in a worker thread) is checked too
    big = json.dumps([{"i": i, "pad": "x" * 100} for i in range(12_000)]).encode()
    assert len(big) > 1024 * 1024
    assert_401(push(server_port, "/hook", big, headers=signed(big + b" ")), challenge)
    reply = push(server_port, "/hook", big, headers=signed(big))
    assert (reply.status, reply.body) == (200, {"accepted": 12_000, "sources": 1})
    assert [record["i"] for record in ch.messages(12_000, timeout=20)] == list(range(12_000))
    assert_sentinel_next_on_channels(lambda body: push(server_port, "/hook", body, headers=signed(body)).status, ch)


def test_hmac_header_algorithm_prefix_and_base64(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/shop", "meta": ["user"], "auth": {
        "type": "hmac", "secret": SECRET, "header": "X-Shop-Hmac", "algorithm": "sha512", "encoding": "base64"}})
    mac = base64.b64encode(hmac.new(SECRET.encode(), RECORD.encode(), hashlib.sha512).digest()).decode()
    assert push(server_port, "/shop", RECORD, headers={"x-shop-hmac": mac}).status == 200
    assert ch.take(1)[0]["meta"] == {"user": "hmac"}
    assert_401(push(server_port, "/shop", RECORD, headers={"X-Shop-Hmac": mac.lower()}), "HMAC ")


@pytest.mark.parametrize("kind", ["basic", "bearer"])
def test_401_before_the_body_is_sent(host: PluginHost, server_port: int, kind: str) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/early", "auth": BASIC if kind == "basic" else BEARER})
    wrong = basic("alice", "nope") if kind == "basic" else bearer("nope")
    with RawClient(server_port) as conn:
        conn.send(request(path="/early", headers={"Content-Length": "100000", **wrong}))  # and not one byte of body
        started = time.monotonic()
        answer = conn.read_response(timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert answer.status == 401 and (answer.header("WWW-Authenticate") or "").lower().startswith(kind), answer
        assert answer.json()["error"]
        assert answer.header("Connection") == "close", answer
        conn.try_send(b"[" + b"{}," * 10 + b"{}]")  # sent anyway: dropped
    good = basic("alice", PASSWORD) if kind == "basic" else bearer(TOKEN)
    assert_sentinel_next_on_channels(sender(server_port, "/early", headers=good), ch)


def test_401_without_a_body_keeps_the_connection(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/k", "auth": BEARER})
    with RawClient(server_port) as conn:
        conn.send(request(path="/k"))
        first = conn.read_response(timeout=2.0)
        assert first.status == 401 and first.header("Connection") is None, first
        conn.send(request(path="/k", body=RECORD, headers=bearer(TOKEN)))
        assert conn.read_response(timeout=2.0).status == 200
    assert ch.messages(1) == [{"t": 21.5}]


def test_streams_on_one_route_must_share_auth(host: PluginHost, server_port: int) -> None:
    first = host.start_source("r1", "s1", {"datasource": "/shared", "auth": BASIC})
    answer = host.start_source("r2", "s2", {"datasource": "/shared", "auth": BEARER}, expect_ok=False)
    assert "rule r2 stream s2 instance 0" in answer and "rule r1 stream s1 instance 0" in answer, answer
    assert "different 'auth'" in answer and not any(secret in answer for secret in SECRETS), answer
    answer = host.start_source("r3", "s3", {"datasource": "/shared"}, expect_ok=False)
    assert "stream s3" in answer and "stream s1" in answer and "(none and basic" in answer, answer
    same = host.start_source("r4", "s4", {"datasource": "/shared", "auth": dict(BASIC)})
    put = host.start_source("r5", "s5", {"datasource": "/shared", "method": "PUT"})  # another method: no auth
    assert push(server_port, "/shared", RECORD, headers=basic("alice", PASSWORD)).body == {"accepted": 1,
                                                                                          "sources": 2}
    assert first.messages(1) == same.messages(1) == [{"t": 21.5}]
    assert push(server_port, "/shared", RECORD, method="PUT").status == 200
    assert put.messages(1) == [{"t": 21.5}]


def test_secrets_never_logged(host: PluginHost, server_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    host.start_source("r1", "s1", {"datasource": "/b", "auth": BASIC})
    host.start_source("r2", "s2", {"datasource": "/t", "auth": BEARER})
    host.start_source("r3", "s3", {"datasource": "/h", "auth": HMAC})
    for _ in range(3):  # refused requests are logged (rate-limited): with any of the secrets sent the wrong way
        push(server_port, "/b", RECORD, headers=basic("alice", TOKEN))
        push(server_port, "/t", RECORD, headers=bearer(PASSWORD))
        push(server_port, "/h", RECORD, headers={"X-Hub-Signature-256": SECRET})
    assert push(server_port, "/b", RECORD, headers=basic("alice", PASSWORD)).status == 200
    answers = [
        host.start_source("r4", "s4", {"datasource": "/b", "auth": BEARER}, expect_ok=False),  # mismatch
        host.start_source("r5", "s5", {"datasource": "/x", "auth": {**HMAC, "algorithm": "md5"}}, expect_ok=False),
        host.start_source("r6", "s6", {"datasource": "/x", "auth": {**BASIC, "tokens": [TOKEN]}}, expect_ok=False),
        host.start_source("r7", "s7", {"datasource": "/x", "format": "avro", "auth": BASIC}, expect_ok=False),
        host.start_source("r8", "s8", {"datasource": "/x", "auth": {"type": "bearer", "tokens": [TOKEN, 5]}},
                          expect_ok=False),
    ]
    assert all(answer != "ok" for answer in answers), answers
    text = host.log_text()
    assert "rejected" in text  # the refusals were logged, without what was sent
    for secret in SECRETS:
        assert secret not in text, f"a secret is in the plugin's log:\n{text}"
        assert not any(secret in answer for answer in answers), answers


# -- mutual TLS ----------------------------------------------------------------------------------------------------

def assert_refused_at_tls(port: int, context: ssl.SSLContext, path: str = "/open") -> None:
    """The TLS handshake fails, or (TLS 1.3: the client's side completes first) the connection ends with an alert or
    a reset instead of an HTTP answer. ``path`` is served without ``auth``: only TLS can refuse the request."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode())
                data = tls.recv(65536)
        except TimeoutError:
            raise AssertionError("neither refused nor answered within 5 s") from None
        except (ssl.SSLError, ConnectionError):
            return
    assert not data.startswith(b"HTTP/"), f"answered over TLS without a valid client certificate: {data!r}"


def test_mtls_required_only_certificates_from_the_ca(make_host: Callable[..., PluginHost], pki: Pki) -> None:
    port = free_port()
    host = make_host(port, **mtls_env(pki))  # a cafile alone means clientAuth: required
    ch = host.start_source("r1", "s1", {"datasource": "/m", "auth": {"type": "clientcert"}, "meta": ["user"]})
    open_ch = host.start_source("r2", "s2", {"datasource": "/open", "meta": ["user"]})
    reply = push(port, "/m", RECORD, tls=client_context(pki, pki.client))
    assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 1})
    assert ch.take(1)[0] == {"message": {"t": 21.5}, "meta": {"user": "gateway-9"}}
    assert push(port, "/open", RECORD, tls=client_context(pki, pki.client)).status == 200
    assert open_ch.take(1)[0]["meta"] == {}  # no auth on this endpoint: no user

    assert_refused_at_tls(port, client_context(pki, None))
    assert_refused_at_tls(port, client_context(pki, pki.stranger))
    assert_sentinel_next_on_channels(sender(port, "/m", tls=client_context(pki, pki.client)), ch)
    assert host.alive()


def test_mtls_optional_clientcert_endpoint_401_without_certificate(make_host: Callable[..., PluginHost],
                                                                   pki: Pki) -> None:
    port = free_port()
    host = make_host(port, **mtls_env(pki, "optional"))
    ch = host.start_source("r1", "s1", {"datasource": "/m", "auth": {"type": "clientcert"}, "meta": ["user"]})
    open_ch = host.start_source("r2", "s2", {"datasource": "/open"})
    anonymous = client_context(pki, None)
    reply = push(port, "/m", RECORD, tls=anonymous)
    assert "client certificate" in assert_401(reply, 'ClientCertificate realm="httppush"')
    assert push(port, "/open", RECORD, tls=anonymous).status == 200
    assert open_ch.messages(1) == [{"t": 21.5}]
    assert_refused_at_tls(port, client_context(pki, pki.stranger))  # optional, but a certificate sent is verified
    assert push(port, "/m", RECORD, tls=client_context(pki, pki.client)).status == 200
    assert ch.take(1)[0]["meta"] == {"user": "gateway-9"}
    assert_sentinel_next_on_channels(sender(port, "/m", tls=client_context(pki, pki.client)), ch)


def test_clientcert_without_mtls_refuses_start_and_releases_port(host: PluginHost, server_port: int) -> None:
    answer = host.start_source("r1", "s1", {"datasource": "/m", "auth": {"type": "clientcert"}}, expect_ok=False)
    assert "type 'clientcert', but the server asks for no client certificates" in answer, answer
    assert "httpServerTls.cafile" in answer
    assert wait_port_closed(server_port), "the server started for the refused source kept its port"
    ch = host.start_source("r2", "s2", {"datasource": "/ok"})
    assert push(server_port, "/ok", RECORD).status == 200
    assert ch.messages(1) == [{"t": 21.5}]


def test_missing_ca_file_refuses_start(make_host: Callable[..., PluginHost], pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    host = make_host(port, **{**mtls_env(pki), "PYHTTPPUSH_TLS_CAFILE": str(tmp_path / "missing-ca.pem")})
    answer = host.start_source("r1", "s1", {"datasource": "/m"}, expect_ok=False)
    assert "cannot listen" in answer and "missing-ca.pem" in answer and "httpServerTls.cafile" in answer, answer
    assert host.alive()


def test_ca_file_without_certificates_is_a_bind_error(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.pem").write_text("not a certificate\n")
    tls = TlsConfig(str(pki.server_cert), str(pki.server_key), str(tmp_path / "not-a-ca.pem"), "optional")
    with pytest.raises(BindError, match="CA file '.*not-a-ca.pem' \\(httpServerTls.cafile\\) unusable"):
        _ssl_context(ServerConfig(ip="127.0.0.1", port=0, tls=tls))
    context = _ssl_context(ServerConfig(tls=TlsConfig(str(pki.server_cert), str(pki.server_key), str(pki.ca),
                                                      "optional")))
    assert context is not None and context.verify_mode == ssl.CERT_OPTIONAL


def test_clientcert_refuses_a_subject_with_several_common_names(make_host: Callable[..., PluginHost],
                                                                pki: Pki) -> None:
    """``CN=alice/CN=admin`` names no one: 401, not the last (or first) CN."""
    port = free_port()
    host = make_host(port, **mtls_env(pki))
    ch = host.start_source("r1", "s1", {"datasource": "/m", "auth": {"type": "clientcert"}, "meta": ["user"]})
    reply = push(port, "/m", RECORD, tls=client_context(pki, pki.two_names))
    assert "2 common names (CN)" in assert_401(reply, 'ClientCertificate realm="httppush"')
    assert push(port, "/m", RECORD, tls=client_context(pki, pki.client)).status == 200
    assert ch.take(1)[0]["meta"] == {"user": "gateway-9"}
    assert_sentinel_next_on_channels(sender(port, "/m", tls=client_context(pki, pki.client)), ch)


def test_clientcert_allow_list_by_name_and_by_subject(make_host: Callable[..., PluginHost], pki: Pki) -> None:
    """Only the listed CNs or whole subjects (RFC 4514, as ``openssl x509 -subject -nameopt RFC2253`` prints them) are
    admitted; another certificate from the same CA gets 403."""
    other_subject = openssl_subject(pki.other[0])
    assert other_subject == "CN=gateway-10,O=httppush tests"
    port = free_port()
    host = make_host(port, **mtls_env(pki))
    by_name = host.start_source("r1", "s1", {"datasource": "/n", "meta": ["user"],
                                             "auth": {"type": "clientcert", "names": ["gateway-9"]}})
    by_subject = host.start_source("r2", "s2", {"datasource": "/s", "meta": ["user"],
                                                "auth": {"type": "clientcert", "subjects": [other_subject]}})
    gateway9, gateway10 = client_context(pki, pki.client), client_context(pki, pki.other)
    assert push(port, "/n", RECORD, tls=gateway9).status == 200
    assert by_name.take(1)[0]["meta"] == {"user": "gateway-9"}
    assert push(port, "/s", RECORD, tls=gateway10).status == 200
    assert by_subject.take(1)[0]["meta"] == {"user": "gateway-10"}
    for path, tls in (("/n", gateway10), ("/s", gateway9)):
        refused = push(port, path, RECORD, tls=tls)
        assert refused.status == 403 and "not among those this endpoint admits" in refused.body["error"], refused
    assert_sentinel_next_on_channels(sender(port, "/n", tls=gateway9), by_name)
    assert_sentinel_next_on_channels(sender(port, "/s", tls=gateway10), by_subject)


def test_subject_text_escapes_as_openssl_prints_rfc2253() -> None:
    """Checked once against ``openssl x509 -noout -subject -nameopt RFC2253`` of a certificate made with ``-subj
    '/O=A, B\\+C;x<y>"q"/OU=u=v/CN=a\\+CN=b/CN= #lead'``: this is what it printed."""
    subject = ((("organizationName", 'A, B+C;x<y>"q"'),), (("organizationalUnitName", "u=v"),),
               (("commonName", "a+CN=b"),), (("commonName", " #lead"),))
    assert auth_module.subject_text(subject) == 'CN=\\ #lead,CN=a\\+CN=b,OU=u=v,O=A\\, B\\+C\\;x\\<y\\>\\"q\\"'
    assert auth_module.subject_text(((("commonName", "x "), ("organizationName", "y")),)) == "CN=x\\ +O=y"


def stamped(body: bytes | str, path: str, when: float | None = None, method: str = "POST", secret: str = SECRET
            ) -> dict[str, str]:
    """A Slack/Stripe-style sender: the Unix time in X-Timestamp, and a signature of time, method, target and body."""
    data = body.encode() if isinstance(body, str) else body
    stamp = str(int(time.time() if when is None else when))
    signed_text = f"{stamp}\n{method}\n{path}\n".encode() + data
    return {"X-Timestamp": stamp,
            "X-Signature": "sha256=" + hmac.new(secret.encode(), signed_text, hashlib.sha256).hexdigest()}


def test_hmac_timestamped_signs_time_method_and_target(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/stamped", "meta": ["user"], "trustedProxies": ["127.0.0.1"],
                                        "auth": {"type": "hmac", "secret": SECRET, "header": "X-Signature",
                                                 "timestampheader": "X-Timestamp", "window": 60}})
    clients = (f"203.0.113.{n}" for n in itertools.count(1))  # each refusal from its own client: none backs off

    def push_from_new_client(target: str, body: str, headers: dict[str, str]) -> Any:
        return push(server_port, target, body, headers={**headers, "X-Forwarded-For": next(clients)})

    assert push(server_port, "/stamped", RECORD, headers=stamped(RECORD, "/stamped")).status == 200
    assert ch.take(1)[0] == {"message": {"t": 21.5}, "meta": {"user": "hmac"}}
    target = "/stamped?site=north"
    assert push(server_port, target, RECORD, headers=stamped(RECORD, target)).status == 200
    ch.take(1)

    challenge = 'HMAC realm="httppush", header="X-Signature", algorithm="sha256", timestamp="X-Timestamp"'
    now = time.time()
    stale = assert_401(push_from_new_client("/stamped", RECORD, headers=stamped(RECORD, "/stamped", now - 130)),
                       challenge)
    assert "behind the server's clock" in stale and "at most 60 s" in stale, stale
    ahead = assert_401(push_from_new_client("/stamped", RECORD, headers=stamped(RECORD, "/stamped", now + 130)),
                       challenge)
    assert "ahead of the server's clock" in ahead, ahead
    for sent_to, headers in (("/stamped", stamped(RECORD, "/elsewhere")),
                             ("/stamped", stamped(RECORD, "/stamped", method="PUT")),
                             (target, stamped(RECORD, "/stamped?site=south")),
                             ("/stamped", stamped(RECORD + " ", "/stamped")),
                             ("/stamped", stamped(RECORD, "/stamped", secret="wrong"))):
        reply = push_from_new_client(sent_to, RECORD, headers)
        assert "does not match the timestamp, method, path and body" in assert_401(reply, challenge)
    body_only = {"X-Signature": signed(RECORD)["X-Hub-Signature-256"], "X-Timestamp": str(int(now))}
    assert_401(push_from_new_client("/stamped", RECORD, headers=body_only), challenge)  # GitHub-style: not enough
    unstamped = {"X-Signature": stamped(RECORD, "/stamped")["X-Signature"]}
    assert "'X-Timestamp'" in assert_401(push_from_new_client("/stamped", RECORD, headers=unstamped), challenge)
    garbled = {**stamped(RECORD, "/stamped"), "X-Timestamp": "1e9"}
    assert "Unix time in whole seconds" in assert_401(push_from_new_client("/stamped", RECORD, headers=garbled),
                                                      challenge)
    assert_sentinel_next_on_channels(
        lambda body: push(server_port, "/stamped", body, headers=stamped(body, "/stamped")).status, ch)


# -- failed authentication backs off -------------------------------------------------------------------------------

def test_repeated_failures_from_one_client_get_429_before_credentials(host: PluginHost, server_port: int) -> None:
    """After 10 refused credentials from one client (behind a trusted proxy: the address it names) within 60 s, that
    client gets 429 with Retry-After on every endpoint with auth — even with the right credentials, which are not
    checked — while another client behind the same proxy is served."""
    props = {"auth": BASIC, "meta": ["user", "remoteAddr"], "trustedProxies": ["127.0.0.0/8"]}
    ch = host.start_source("r1", "s1", {"datasource": "/b", **props})
    hook = host.start_source("r2", "s2", {"datasource": "/h", "auth": HMAC, "trustedProxies": ["127.0.0.0/8"]})
    open_ch = host.start_source("r3", "s3", {"datasource": "/open", "trustedProxies": ["127.0.0.0/8"]})
    mallory, alice = {"X-Forwarded-For": "203.0.113.66"}, {"X-Forwarded-For": "203.0.113.5"}
    for attempt in range(10):
        assert push(server_port, "/b", RECORD, headers={**mallory, **basic("alice", f"guess-{attempt}")}).status == 401
    refused = push(server_port, "/b", RECORD, headers={**mallory, **basic("alice", PASSWORD)})
    assert refused.status == 429 and "10 failed authentications" in refused.body["error"], refused
    assert 1 <= int(refused.headers["Retry-After"]) <= 60, refused.headers
    assert push(server_port, "/h", RECORD, headers={**mallory, **signed(RECORD)}).status == 429  # any auth endpoint
    with RawClient(server_port) as conn:  # refused from the head: the body is never read
        conn.send(request(path="/b", headers={**mallory, **basic("alice", PASSWORD), "Content-Length": "100000"}))
        answer = conn.read_response(timeout=2.0)
        assert answer.status == 429 and answer.header("Connection") == "close", answer
    assert push(server_port, "/open", RECORD, headers=mallory).status == 200  # no auth: nothing to back off from
    assert open_ch.messages(1) == [{"t": 21.5}]
    assert push(server_port, "/b", RECORD, headers={**alice, **basic("alice", PASSWORD)}).status == 200
    assert ch.take(1)[0]["meta"] == {"user": "alice", "remoteAddr": "203.0.113.5"}  # the 429s delivered nothing
    assert_sentinel_next_on_channels(sender(server_port, "/b", headers={**alice, **basic("alice", PASSWORD)}), ch)
    assert_sentinel_next_on_channels(
        lambda body: push(server_port, "/h", body, headers={**alice, **signed(body)}).status, hook)


# -- through a real eKuiper ----------------------------------------------------------------------------------------

@pytest.mark.realhost
def test_realhost_rest_conf_key_basic_auth_and_meta_user(ctx: Ctx) -> None:
    """A real eKuiper 2.4.2 passes a REST-stored group's nested ``auth`` to the plugin as stored (names keep their
    case there) and ``meta(user)`` reads the principal in SQL. The host logs a source's properties as they are when a
    rule starts (``internal/topo/node/source_node.go``, ``plugin/portable/runtime/source.go``: hence ``{env: NAME}`` in
    README); nothing else in its log, the plugin's output included, shows the secret."""
    key = uid("auth")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}",
                 {"auth": {"type": "basic", "users": {"Alice": PASSWORD}}, "meta": ["user"]})
    s, path = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
    ctx.rule(f"SELECT meta(user) AS who, t FROM {s}")
    refused = push(ctx.port, path, RECORD, headers=basic("Alice", "wrong"))
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert push(ctx.port, path, RECORD, headers=basic("Alice", PASSWORD)).status == 200
    assert ctx.sink.wait_for(1) == [{"who": "Alice", "t": 21.5}]  # the refused push, had it gone on, came first
    leaks = [line for line in ctx.host.log_tail(2000).splitlines() if PASSWORD in line]
    host_lines = ('msg="provision source ', 'msg="Start running portable source ')
    assert leaks and all(any(text in line for text in host_lines) for line in leaks), leaks
