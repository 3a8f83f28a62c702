"""The plugin's schema check when eKuiper's REST requires authentication (``basic.authentication``: every call but
``/`` and ``/ping`` needs a JWT, ``internal/server/middleware/auth.go``), on a real eKuiper v2.4.2 of its own.

The plugin holds no token, so ``GET /streams/{name}/schema`` answers 401: a strict stream's start fails naming that
and the property ``schema`` (eKuiper shows the reason only in its log); with ``schema`` in the stream's conf key, those
fields are checked.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.hostlock import HOST_LOCK
from harness.net import free_port
from harness.realhost import EkuiperHost, RecordSink, http_request, require_kuiperd
from tests.realhost_support import PLUGIN, Ctx, log_lines, metric, realhost_env, uid
from tests.support.wait import wait_until

pytestmark = pytest.mark.realhost


class AuthHost(EkuiperHost):
    """A host whose REST needs a JWT (``basic.authentication``): this harness signs its own requests (RS256, with the
    ``openssl`` command) with a key whose public half it installs as ``etc/mgmt/<issuer>``, where eKuiper's
    ``internal/pkg/jwt`` looks for the token's issuer; the plugin has no token."""

    ISSUER = "httppush-test.pub"

    def _create_root(self) -> None:
        super()._create_root()
        mgmt = self.root / "etc" / "mgmt"
        mgmt.mkdir(parents=True, exist_ok=True)
        self.key = self.root / "jwt-key.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(self.key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(self.key), "-pubout", "-out", str(mgmt / self.ISSUER)],
                       check=True, capture_output=True)

    def token(self) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        claims = {"iss": self.ISSUER, "aud": ["eKuiper"], "exp": int(time.time()) + 600}
        header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        signed = f"{header}.{b64(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signed.encode(),
                                   check=True, capture_output=True).stdout
        return f"{signed}.{b64(signature)}"

    def request(self, method: str, path: str, body: Any = None, *, expect: Any = None, timeout: float = 30.0) -> Any:
        status, raw = http_request(method, self.rest_url + path, body, headers={"Authorization": self.token()},
                                   timeout=timeout)
        if not (200 <= status < 300 if expect is None else status in ((expect,) if isinstance(expect, int)
                                                                         else tuple(expect))):
            raise AssertionError(f"{method} {path} answered {status}: {raw[:300]!r}")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode()


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory, zips: dict[str, Path]) -> Iterator[Ctx]:
    require_kuiperd()
    if getattr(HOST_LOCK, "_depth", 0):
        pytest.fail("another eKuiper host is already running in this test process")
    port = free_port()
    env = {**realhost_env(port), "KUIPER__BASIC__AUTHENTICATION": "true"}
    with RecordSink() as sink, AuthHost(tmp_path_factory.mktemp("schema-auth"), extra_env=env) as host:
        status, _ = http_request("GET", host.rest_url + "/streams")
        assert status == 401  # the host really requires a token
        host.install_plugin(PLUGIN, zips["pyhttppush"])
        helper = Ctx(host, sink, port)
        yield helper
        helper.cleanup()


def test_rest_requiring_auth(authed: Ctx) -> None:
    """No token: the start fails naming the REST address with its 401 and the property ``schema`` (the host shows
    the reason only in its log); with ``schema`` in the stream's conf key, those fields are checked."""
    s, path = authed.stream('FORMAT="json", STRICT_VALIDATION="true"', "(n BIGINT, tags ARRAY(STRING))")
    r = authed.rule(f"SELECT * FROM {s}", wait=False)
    needle = f"/streams/{s}/schema answered 401"
    wait_until(lambda: log_lines(authed.host, needle, "property 'schema' is not set"), 30.0,
               "the start error in the host's log")
    assert r not in authed.host.plugin_status(PLUGIN)["refCount"]

    key = uid("fields")
    authed.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"schema": "n bigint, tags array(string)"})
    s2, path2 = authed.stream(f'FORMAT="json", STRICT_VALIDATION="true", CONF_KEY="{key}"',
                              "(n BIGINT, tags ARRAY(STRING))")
    r2 = authed.rule(f"SELECT * FROM {s2}")
    reply = authed.push(path2, '[{"n": 1, "tags": []}, {"n": 2, "tags": [3]}]')
    assert reply.status == 422 and reply.body["failures"] == [
        {"record": 1, "field": "tags[0]", "expected": "string", "found": "number"}]
    assert authed.push(path2, '{"n": 1.9, "tags": ["a"]}').status == 200
    assert authed.sink.wait_for(1) == [{"n": 1, "tags": ["a"]}]
    authed.assert_sentinel_next_in_sink(path2, 1, record={"n": 3, "tags": []})
    assert metric(authed.status(r2), "_preprocessor_0_exceptions_total") == 0
