"""Issue 16's rate limit and JWT through a real eKuiper 2.4.2 (the session's shared host, ``ctx``): what is answered
2xx reaches the rule, what is refused (429, 401) does not — checked with a sentinel row after the refused pushes —
and a token's ``sub`` is ``meta(user)`` in SQL. The groups are stored through eKuiper's REST API, as a user would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.realhost_support import PLUGIN, Ctx, uid
from tests.support.http import push, sender
from tests.support.sentinel import assert_sentinel_next_in_sink
from tests.support.tokens import AUDIENCE, EC_KEY, ISSUER, RSA_KEY, bearer, write_jwks

pytestmark = pytest.mark.realhost


def test_realhost_rate_limit_429s_never_reach_the_rule(ctx: Ctx) -> None:
    key = uid("rl")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {
        "rateLimit": {"rate": 0.05, "burst": 2}, "trustedProxies": ["127.0.0.1"]})
    s, path = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
    ctx.rule(f"SELECT * FROM {s}")
    hog = {"X-Forwarded-For": "203.0.113.7"}
    statuses = [push(ctx.port, path, json.dumps({"n": n}), headers=hog).status for n in range(1, 6)]
    assert statuses == [200, 200, 429, 429, 429], statuses
    refused = push(ctx.port, path, '{"n": 99}', headers=hog)
    assert refused.status == 429 and 1 <= int(refused.headers["Retry-After"]) <= 20, refused
    assert ctx.sink.wait_for(2) == [{"n": 1}, {"n": 2}]
    # another client's sentinel: the next row after the two admitted ones
    assert_sentinel_next_in_sink(sender(ctx.port, path, headers={"X-Forwarded-For": "203.0.113.8"}), ctx.sink, 2)


def test_realhost_jwt_sub_is_meta_user_and_refused_tokens_deliver_nothing(ctx: Ctx, tmp_path: Path) -> None:
    key = uid("jwt")
    jwks = write_jwks(tmp_path / "jwks.json", RSA_KEY, EC_KEY)  # the plugin process runs on this machine
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {
        "auth": {"type": "jwt", "jwks": jwks, "issuer": ISSUER, "audience": AUDIENCE}, "meta": ["user"]})
    s, path = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
    ctx.rule(f"SELECT meta(user) AS who, * FROM {s}")
    expired = push(ctx.port, path, '{"t": 1}', headers=bearer(RSA_KEY.token(exp=int(time.time()) - 3600)))
    assert expired.status == 401 and 'error="invalid_token"' in expired.headers["WWW-Authenticate"], expired
    assert "expired" in expired.headers["WWW-Authenticate"], expired.headers
    wrong_aud = push(ctx.port, path, '{"t": 2}', headers=bearer(EC_KEY.token(aud="another-service")))
    assert wrong_aud.status == 401, wrong_aud
    assert push(ctx.port, path, '{"t": 3}', headers=bearer(EC_KEY.token(sub="device-42"))).status == 200
    assert ctx.sink.wait_for(1) == [{"who": "device-42", "t": 3}]
    assert_sentinel_next_in_sink(sender(ctx.port, path, headers=bearer(RSA_KEY.token(sub="sentinel-sender"))),
                                 ctx.sink, 1)
