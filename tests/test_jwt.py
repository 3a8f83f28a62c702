"""``auth: {type: jwt}``: JSON Web Tokens against a JWKS file or URL.

The claim checks, algorithm confusion and the key set's rules are checked in-process against :class:`JwtAuth` with
keys made by ``cryptography`` for the test; the rest through the installed plugin under the emulated host over real
HTTP, the JWKS URL served by a loopback HTTP server the test controls (and rotates). "Nothing else arrived" is checked
with a sentinel record pushed with a valid token.
"""

from __future__ import annotations

import http.server
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from httppush_plugin import jwtauth
from httppush_plugin.answers import Unauthorized
from httppush_plugin.auth import parse_auth
from httppush_plugin.backoff import AuthBackoff
from httppush_plugin.errors import ConfigError
from httppush_plugin.jwks import MAX_JWKS_BYTES
from httppush_plugin.jwtauth import JwtAuth
from httppush_plugin.request import RequestHead
from tests.hostemu import PluginHost
from tests.support.http import push, sender
from tests.support.pki import Pki, client_context
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.tokens import (
    AUDIENCE,
    EC_KEY,
    ISSUER,
    OTHER,
    RSA_KEY,
    Key,
    b64,
    bearer,
    claims,
    forged,
    jwks,
    write_jwks,
)

RECORD = '{"t": 21.5}'


def head_with(token: str | None) -> RequestHead:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    return RequestHead(method="POST", path="/j", target=b"/j", headers=headers, content_type="application/json",
                       remote="127.0.0.1")


@pytest.fixture
def auth(tmp_path: Path) -> JwtAuth:
    made = parse_auth({"type": "jwt", "jwks": write_jwks(tmp_path / "jwks.json", RSA_KEY, EC_KEY),
                       "issuer": ISSUER, "audience": AUDIENCE, "leeway": 30})
    assert isinstance(made, JwtAuth)
    return made


def refusal(auth: JwtAuth, token: str | None) -> tuple[str, str]:
    """The 401's message and WWW-Authenticate."""
    with pytest.raises(Unauthorized) as refused:
        auth.admit(head_with(token))
    return str(refused.value), refused.value.headers["WWW-Authenticate"]


# -- in-process: claims, algorithms, keys --------------------------------------------------------------------------

def test_valid_tokens_name_their_subject(auth: JwtAuth) -> None:
    assert auth.admit(head_with(RSA_KEY.token())) == "device-42"
    assert auth.admit(head_with(EC_KEY.token(sub="gw-7"))) == "gw-7"
    assert auth.admit(head_with(RSA_KEY.token(aud=["other", AUDIENCE]))) == "device-42"  # one of a list


@pytest.mark.parametrize("changes, needle", [
    ({"exp": -100}, "the token expired 1"),  # 100 s + 30 s leeway ago: "13x s ago"
    ({"nbf": 120}, "the token is not valid yet"),
    ({"aud": "another-service"}, f"the token's audience (aud) is not {AUDIENCE}"),
    ({"iss": "https://evil.example/"}, f"the token's issuer (iss) is not {ISSUER}"),
    ({"iss": ISSUER[:12]}, f"the token's issuer (iss) is not {ISSUER}"),  # a part of it (PyJWT 2.10.0 took that)
    ({"exp": None}, "the token has no 'exp' claim"),
    ({"aud": None}, "the token has no 'aud' claim"),
    ({"iss": None}, "the token has no 'iss' claim"),
    ({"sub": None}, "the token has no 'sub' claim"),
    ({"sub": ""}, "the token's subject (sub) is empty"),
])
def test_every_claim_is_checked(auth: JwtAuth, changes: dict[str, Any], needle: str) -> None:
    now = int(time.time())
    relative = {name: now + value if name in ("exp", "nbf") and value is not None else value
                for name, value in changes.items()}
    message, challenge = refusal(auth, RSA_KEY.token(**relative))
    assert needle in message, message
    assert challenge.startswith('Bearer realm="httppush", error="invalid_token", error_description="'), challenge
    assert needle.replace('"', "?") in challenge, challenge


def test_expiry_within_the_leeway_is_accepted_beyond_it_refused(auth: JwtAuth, tmp_path: Path) -> None:
    now = int(time.time())
    assert auth.admit(head_with(RSA_KEY.token(exp=now - 10))) == "device-42"  # 10 s ago, leeway 30 s
    assert "expired" in refusal(auth, RSA_KEY.token(exp=now - 60))[0]
    strict = parse_auth({"type": "jwt", "jwks": write_jwks(tmp_path / "s.json", RSA_KEY), "issuer": ISSUER,
                         "audience": AUDIENCE, "leeway": 0})
    assert isinstance(strict, JwtAuth)
    message = refusal(strict, RSA_KEY.token(exp=now - 10))[0]
    assert re.search(r"the token expired 1\d s ago \(leeway 0 s\)", message), message


def test_none_and_hmac_with_the_public_key_are_refused(auth: JwtAuth) -> None:
    assert "alg 'none' is not allowed here; allowed: RS256, ES256" in refusal(auth, forged("none", claims()))[0]
    # algorithm confusion: the RSA public key (what anyone can fetch) used as an HMAC secret
    for secret in (RSA_KEY.public_pem(), json.dumps(RSA_KEY.jwk).encode()):
        assert "alg 'HS256' is not allowed here" in refusal(auth, forged("HS256", claims(), secret))[0]
    # an allowed algorithm with the wrong kind of key: ES256 claimed for the RSA key's kid
    message = refusal(auth, EC_KEY.token(kid="k1"))[0]
    assert "the token's alg ES256 does not fit its key (kty RSA" in message, message
    # the right kid and alg, signed by another key
    assert "signature does not verify with the key k1" in refusal(auth, OTHER.token())[0]
    assert "not a JWT" in refusal(auth, "not.a.jwt")[0]
    assert "not a JWT" in refusal(auth, "a.b!.c")[0]
    assert f"over {jwtauth.MAX_TOKEN_BYTES} bytes" in refusal(auth, RSA_KEY.token(pad="x" * jwtauth.MAX_TOKEN_BYTES))[0]
    message, challenge = refusal(auth, None)
    assert "needs a JSON Web Token" in message and challenge == 'Bearer realm="httppush"'  # RFC 6750 §3.1


#: A token whose header is 5,000 nested JSON arrays (under MAX_TOKEN_BYTES): deeper than Python's json recursion
DEEP = b64(b"[" * 5000) + ".e30.c2ln"


def test_a_deeply_nested_header_is_a_401(auth: JwtAuth) -> None:
    assert len(DEEP) < jwtauth.MAX_TOKEN_BYTES
    message, challenge = refusal(auth, DEEP)
    assert "the token is not a JWT: its header is not a base64url JSON object" in message, message
    assert 'error="invalid_token"' in challenge, challenge


def test_unknown_kid_without_url_is_a_counted_failure(auth: JwtAuth) -> None:
    backoff = AuthBackoff(max_failures=3)
    for _ in range(3):
        with pytest.raises(Unauthorized, match="the token has kid 'k9', which names no key of the key set$"):
            backoff.admit(auth, head_with(RSA_KEY.token(kid="k9")), "198.51.100.4")
    with pytest.raises(Exception, match="3 failed authentications"):
        backoff.admit(auth, head_with(RSA_KEY.token()), "198.51.100.4")


@pytest.mark.parametrize("changes, needle", [
    ({"algorithms": ["HS256"]}, "property 'auth.algorithms' lists HS256: HMAC-signed tokens need a shared secret"),
    ({"algorithms": ["RS256", "none"]}, "property 'auth.algorithms' lists none: an unsigned token is never accepted"),
    ({"algorithms": ["XY1"]}, "property 'auth.algorithms' lists 'XY1'; must be among RS256"),
    ({"issuer": None}, "property 'auth.issuer' is missing; type 'jwt' needs the issuer"),
    ({"audience": []}, "property 'auth.audience' is an empty list; type 'jwt' needs the audience"),
    ({"jwks": None}, "type 'jwt' needs 'jwks' (the path of a JSON Web Key Set file) and/or 'jwksUrl'"),
    ({"jwks": "relative.json"}, "property 'auth.jwks' is 'relative.json'; must be an absolute path"),
    ({"jwks": "/nonexistent/jwks.json"}, "property 'auth.jwks': /nonexistent/jwks.json cannot be read"),
    ({"jwksUrl": "file:///etc/passwd"}, "property 'auth.jwksUrl' is 'file:///etc/passwd'; must be an http://"),
    ({"leeway": -1}, "property 'auth.leeway' is -1; must be 0 to 3600 seconds"),
    ({"jwksRefresh": 0.01}, "property 'auth.jwksRefresh' is 0.01; must be at least 1 second"),
    ({"secret": "s"}, "property 'auth' has the key 'secret', unknown for type 'jwt'"),
])
def test_config_errors_name_the_key(tmp_path: Path, changes: dict[str, Any], needle: str) -> None:
    props = {"type": "jwt", "jwks": write_jwks(tmp_path / "jwks.json", RSA_KEY), "issuer": ISSUER,
             "audience": AUDIENCE, **changes}
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_auth({key: value for key, value in props.items() if value is not None})


@pytest.mark.parametrize("content, needle", [
    (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}), "key #0 is symmetric (kty 'oct')"),
    (json.dumps({"keys": [RSA_KEY.jwk, RSA_KEY.jwk]}), "two keys have the kid 'k1'"),
    (json.dumps({"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB"}]}), "key #0 cannot be used"),
    (json.dumps([RSA_KEY.jwk]), "is not a JSON Web Key Set"),
    ("{not json", "is not JSON"),
    ("[" * 100_000, "is not JSON: maximum recursion depth exceeded"),
    (json.dumps({"keys": [], "pad": "x" * MAX_JWKS_BYTES}), f"is over {MAX_JWKS_BYTES} bytes"),
])
def test_a_bad_jwks_file_refuses_the_start(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_auth({"type": "jwt", "jwks": str(path), "issuer": ISSUER, "audience": AUDIENCE})


def test_equal_settings_are_equal_authenticators(tmp_path: Path) -> None:
    props = {"type": "jwt", "jwks": write_jwks(tmp_path / "jwks.json", RSA_KEY), "issuer": ISSUER,
             "audience": AUDIENCE}
    assert parse_auth(props) == parse_auth(dict(props)) != parse_auth({**props, "audience": "x"})
    assert "idp.example.test" in repr(parse_auth(props)) and "keyset" not in repr(parse_auth(props))
    assert jwtauth.DEFAULT_ALGORITHMS == ("RS256", "ES256")


# -- through the plugin, JWKS from a file and from a loopback URL ---------------------------------------------------

class JwksServer:
    """A loopback HTTP server answering GET with :attr:`document` (settable), counting its fetches."""

    def __init__(self) -> None:
        self.document: bytes = json.dumps(jwks(RSA_KEY)).encode()
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.document)))
                self.end_headers()
                self.wfile.write(owner.document)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def jwt_props(**auth: Any) -> dict[str, Any]:
    return {"auth": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, **auth}, "meta": ["user"]}


def test_file_jwks_over_http_meta_user_and_401_challenge(host: PluginHost, server_port: int, tmp_path: Path) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/j", **jwt_props(jwks=write_jwks(tmp_path / "k.json",
                                                                                         RSA_KEY, EC_KEY))})
    ok = push(server_port, "/j", RECORD, headers=bearer(EC_KEY.token(sub="sensor-9")))
    assert (ok.status, ok.body) == (200, {"accepted": 1, "sources": 1})
    assert ch.take(1)[0] == {"message": {"t": 21.5}, "meta": {"user": "sensor-9"}}
    refused = push(server_port, "/j", RECORD, headers=bearer(RSA_KEY.token(aud="elsewhere")))
    assert refused.status == 401 and "audience" in refused.body["error"], refused
    assert refused.headers["WWW-Authenticate"] == (
        f'Bearer realm="httppush", error="invalid_token", error_description="the token\'s audience (aud) is not '
        f'{AUDIENCE}"'), refused.headers
    assert push(server_port, "/j", RECORD, headers=bearer(forged("none", claims()))).status == 401
    deep = push(server_port, "/j", RECORD, headers=bearer(DEEP))
    assert deep.status == 401 and "not a JWT" in deep.body["error"], deep
    assert push(server_port, "/j", RECORD).headers["WWW-Authenticate"] == 'Bearer realm="httppush"'
    assert_sentinel_next_on_channels(sender(server_port, "/j", headers=bearer(RSA_KEY.token())), ch)


def test_url_jwks_rotation_is_fetched_bounded_and_never_blocks(host: PluginHost, server_port: int,
                                                                jwks_server: JwksServer) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/rot", "trustedProxies": ["127.0.0.1"],
                                        **jwt_props(jwksUrl=jwks_server.url, jwksRefresh=1)})
    assert jwks_server.fetches == 1  # at start
    assert push(server_port, "/rot", RECORD, headers=bearer(RSA_KEY.token(sub="before"))).status == 200
    new_key = Key("k2")
    jwks_server.document = json.dumps(jwks(new_key)).encode()  # the issuer rotates: k1 gone, k2 in
    # a token of the new key: refused while the set is fetched again (not counted), then admitted
    statuses = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reply = push(server_port, "/rot", RECORD, headers=bearer(new_key.token(sub="after")))
        statuses.append(reply.status)
        if reply.status == 200:
            break
        assert reply.status == 401 and "kid 'k2'" in reply.body["error"], reply
        time.sleep(0.2)
    assert statuses[-1] == 200, statuses
    assert [m["meta"]["user"] for m in ch.take(2)] == ["before", "after"]
    refused = push(server_port, "/rot", RECORD, headers=bearer(RSA_KEY.token()))  # the retired key
    assert refused.status == 401 and "kid 'k1'" in refused.body["error"], refused
    # made-up kids cannot make the plugin fetch more than once per min(jwksRefresh, 10 s)
    before, started = jwks_server.fetches, time.monotonic()
    junk = {"X-Forwarded-For": "203.0.113.50"}  # another client: its failures back off only itself
    for n in range(30):
        reply = push(server_port, "/rot", RECORD, headers={**junk, **bearer(new_key.token(kid=f"junk-{n}"))})
        assert reply.status in (401, 429), reply
    elapsed = time.monotonic() - started
    assert jwks_server.fetches - before <= elapsed / 1.0 + 1, (jwks_server.fetches - before, elapsed)
    assert_sentinel_next_on_channels(sender(server_port, "/rot", headers=bearer(new_key.token())), ch)


def test_url_down_at_start(host: PluginHost, server_port: int, tmp_path: Path, jwks_server: JwksServer) -> None:
    jwks_server.close()  # nothing listens there any more
    answer = host.start_source("r1", "s1", {"datasource": "/down", **jwt_props(jwksUrl=jwks_server.url)},
                               expect_ok=False)
    assert f"the JWKS at {jwks_server.url} could not be fetched" in answer and "add 'jwks'" in answer, answer
    # with a file too: served with the file's keys
    ch = host.start_source("r2", "s2", {"datasource": "/down", **jwt_props(
        jwksUrl=jwks_server.url, jwks=write_jwks(tmp_path / "k.json", RSA_KEY))})
    assert push(server_port, "/down", RECORD, headers=bearer(RSA_KEY.token())).status == 200
    assert ch.messages(1) == [{"t": 21.5}]
    assert_sentinel_next_on_channels(sender(server_port, "/down", headers=bearer(RSA_KEY.token())), ch)


def test_oversized_url_jwks_refuses_the_start(host: PluginHost, server_port: int, jwks_server: JwksServer) -> None:
    jwks_server.document = json.dumps({"keys": [RSA_KEY.jwk], "pad": "x" * MAX_JWKS_BYTES}).encode()
    answer = host.start_source("r1", "s1", {"datasource": "/big", **jwt_props(jwksUrl=jwks_server.url)},
                               expect_ok=False)
    assert f"the JWKS at {jwks_server.url} is over {MAX_JWKS_BYTES} bytes" in answer, answer


# -- the fetch of jwksUrl is bounded in time as a whole ------------------------------------------------------------

class SlowServer:
    """A loopback server that answers every connection slowly: ``phase`` "head" sends the status line and then a
    header byte every 0.2 s, "body" sends the whole head and then the body a byte every 0.2 s, each for at most
    ``for_s`` seconds before it closes the connection."""

    def __init__(self, phase: str, for_s: float = 6.0, tls: ssl.SSLContext | None = None) -> None:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/jwks.json"
        self.phase, self.for_s, self.tls = phase, for_s, tls
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        with conn:
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                conn.recv(65536)
                document = json.dumps(jwks(RSA_KEY)).encode()
                if self.phase == "head":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(document))
                ends = time.monotonic() + self.for_s
                sent = 0
                while time.monotonic() < ends:
                    conn.sendall(b"a" if self.phase == "head" else document[sent:sent + 1])
                    sent += 1
                    time.sleep(0.2)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("phase, scheme", [("head", "http"), ("body", "http"), ("body", "https")])
def test_a_slow_jwks_url_is_cut_off_at_the_fetch_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki,
                                                          phase: str, scheme: str) -> None:
    from httppush_plugin import jwks as jwks_module

    monkeypatch.setattr(jwks_module, "FETCH_TIMEOUT_S", 1.0)
    tls = None
    if scheme == "https":
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        monkeypatch.setattr(ssl, "_create_default_https_context", lambda: client_context(pki))
    server = SlowServer(phase, tls=tls)  # each send well within the socket timeout, the whole far beyond it
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=re.escape(f"the JWKS at {server.url} could not be fetched within 1 s")):
            parse_auth({"type": "jwt", "jwksUrl": server.url, "issuer": ISSUER, "audience": AUDIENCE})
        assert time.monotonic() - started < 4.0  # the server would go on for 6 s
        # with a file too: served with it, and the background fetch ends too, so later ones can start
        keyset = jwks_module.KeySet(write_jwks(tmp_path / "k.json", RSA_KEY), server.url, 1.0)
        assert keyset.key("k1") is not None
        keyset._tried = -float("inf")
        assert keyset.fetch_soon()
        deadline = time.monotonic() + 4.0
        while keyset._fetching and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not keyset._fetching, "the background fetch still runs"
    finally:
        server.close()
