"""What a config group can make of an endpoint, over real HTTP against the installed plugin (emulated host): path
templates, the answers a client gets (``successStatus``, ``cors``) and the request metadata records carry
(``metaHeaders``, ``metaQuery``, ``trustedProxies``, ``requestId``)."""

from __future__ import annotations

import json

from httppush_plugin.offload import LARGE_BODY
from tests.hostemu import DataChannel, PluginHost
from tests.support.http import RawClient, push, request, sender
from tests.support.sentinel import assert_sentinel_next_on_channels

TEMPLATE = "/devices/{id}/telemetry"
READING = {"t": 21.5}


# -- path templates ------------------------------------------------------------------------------------------------


def test_template_matches_a_segment_and_puts_it_in_meta(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": TEMPLATE})
    assert isinstance(ch, DataChannel)
    assert push(server_port, "/devices/42/telemetry", json.dumps(READING)).body == {"accepted": 1, "sources": 1}
    assert ch.take(1) == [{"message": READING, "meta": {"id": "42"}}]
    for path in ("/devices//telemetry", "/devices/4/2/telemetry", "/devices/42", "/devices/a%2Fb/telemetry"):
        assert push(server_port, path, json.dumps(READING)).status == 404, path
    assert_sentinel_next_on_channels(sender(server_port, "/devices/7/telemetry"), ch)


def test_template_variables_join_the_meta_fields_and_are_clipped(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/d/{site}/{id}", "meta": ["path"]})
    long = "x" * 300
    assert push(server_port, f"/d/s%C3%BCd/{long}", "{}").status == 200
    assert ch.take(1)[0]["meta"] == {"site": "süd", "id": "x" * 256, "path": f"/d/süd/{long}"}


def test_template_literal_path_wins(host: PluginHost, server_port: int) -> None:
    templated = host.start_source("r1", "s1", {"datasource": TEMPLATE})
    literal = host.start_source("r2", "s2", {"datasource": "/devices/all/telemetry"})
    assert isinstance(templated, DataChannel) and isinstance(literal, DataChannel)
    assert push(server_port, "/devices/all/telemetry", '{"n": 1}').body == {"accepted": 1, "sources": 1}
    assert literal.take(1) == [{"message": {"n": 1}, "meta": None}]
    assert_sentinel_next_on_channels(sender(server_port, "/devices/9/telemetry"), templated)
    assert_sentinel_next_on_channels(sender(server_port, "/devices/all/telemetry"), literal)


def test_template_fan_out_and_put(host: PluginHost, server_port: int) -> None:
    first = host.start_source("r1", "s1", {"datasource": TEMPLATE})
    second = host.start_source("r2", "s2", {"datasource": TEMPLATE})
    put = host.start_source("r3", "s3", {"datasource": TEMPLATE, "method": "PUT"})
    assert push(server_port, "/devices/1/telemetry", '{"m": "post"}').body == {"accepted": 1, "sources": 2}
    assert push(server_port, "/devices/2/telemetry", '{"m": "put"}', method="PUT").body == {"accepted": 1,
                                                                                            "sources": 1}
    for ch in (first, second):
        assert isinstance(ch, DataChannel) and ch.take(1) == [{"message": {"m": "post"}, "meta": {"id": "1"}}]
    assert isinstance(put, DataChannel) and put.take(1) == [{"message": {"m": "put"}, "meta": {"id": "2"}}]
    assert_sentinel_next_on_channels(sender(server_port, "/devices/3/telemetry"), first, second)


def test_template_405_lists_the_methods_in_allow(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": TEMPLATE})
    host.start_source("r2", "s2", {"datasource": TEMPLATE, "method": "PUT"})
    for method in ("GET", "PATCH", "OPTIONS"):
        answer = push(server_port, "/devices/5/telemetry", b"", method=method)
        assert answer.status == 405 and answer.headers["Allow"] == "POST, PUT", (method, answer)


def test_template_conflicting_templates_refused_naming_both_streams(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": TEMPLATE})
    answer = host.start_source("r2", "s2", {"datasource": "/devices/x/{kind}"}, expect_ok=False)
    assert isinstance(answer, str)
    assert "stream s2" in answer and "stream s1" in answer and "/devices/x/telemetry" in answer, answer
    # a template that cannot match the same paths is fine, and the first one still serves
    assert isinstance(host.start_source("r3", "s3", {"datasource": "/devices/{id}/status"}), DataChannel)
    assert isinstance(ch, DataChannel)
    assert_sentinel_next_on_channels(sender(server_port, "/devices/1/telemetry"), ch)


def test_template_malformed_is_refused(host: PluginHost) -> None:
    for path in ("/d/{}", "/d/x{id}", "/d/{a}/{a}"):
        answer = host.start_source("r1", "s1", {"datasource": path}, expect_ok=False)
        assert isinstance(answer, str) and "DATASOURCE" in answer, (path, answer)


# -- answers: successStatus and cors -------------------------------------------------------------------------------

ORIGIN = "https://app.example.com"
CORS = {"origins": [ORIGIN], "headers": ["Content-Type", "Authorization"], "maxage": 600}  # as eKuiper's yaml sends it


def test_success_status_201_and_202_keep_the_body(host: PluginHost, server_port: int) -> None:
    for status in (201, 202):
        ch = host.start_source(f"r{status}", "s1", {"datasource": f"/s{status}", "successStatus": status})
        answer = push(server_port, f"/s{status}", "{}")
        assert (answer.status, answer.body) == (status, {"accepted": 1, "sources": 1})
        assert isinstance(ch, DataChannel) and ch.messages(1) == [{}]


def test_success_status_204_has_no_body_and_keeps_the_connection(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/quiet", "successStatus": 204})
    with RawClient(server_port) as conn:
        conn.send(request(path="/quiet", body='{"a": 1}') + request(path="/quiet", body='{"a": 2}'))
        for _ in range(2):
            answer = conn.read_response()
            assert answer.status == 204 and answer.body == b"", answer
            assert answer.header("Content-Length") is None and answer.header("Content-Type") is None, answer
        # errors still carry their JSON body
        conn.send(request(path="/quiet", body="[1]"))
        error = conn.read_response()
        assert error.status == 400 and "error" in error.json()
    assert isinstance(ch, DataChannel) and ch.messages(2) == [{"a": 1}, {"a": 2}]
    assert_sentinel_next_on_channels(sender(server_port, "/quiet"), ch, status=204)


def test_success_status_bad_value_refused(host: PluginHost) -> None:
    answer = host.start_source("r1", "s1", {"datasource": "/a", "successStatus": 302}, expect_ok=False)
    assert isinstance(answer, str) and "successStatus" in answer and "200, 201, 202, 204" in answer, answer


def test_cors_preflight_allowed(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/web", "cors": CORS})
    answer = push(server_port, "/web", b"", method="OPTIONS",
                  headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                           "Access-Control-Request-Headers": "content-type"})
    assert answer.status == 204 and answer.body == "", answer
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    assert answer.headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
    assert answer.headers["Access-Control-Max-Age"] == "600" and answer.headers["Vary"] == "Origin"


def test_cors_preflight_denied_403(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/web", "cors": CORS})
    for headers in ({"Origin": "https://evil.example"}, {},
                    {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"}):
        answer = push(server_port, "/web", b"", method="OPTIONS", headers=headers)
        assert answer.status == 403 and "error" in answer.body, (headers, answer)
        assert not any(name.startswith("Access-Control-") for name in answer.headers), answer


def test_cors_headers_on_answers_for_allowed_origins_only(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/web", "cors": CORS})
    allowed = push(server_port, "/web", '{"a": 1}', headers={"Origin": ORIGIN})
    assert allowed.body == {"accepted": 1, "sources": 1}
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN and allowed.headers["Vary"] == "Origin"
    assert allowed.headers["Access-Control-Expose-Headers"] == "Retry-After"  # what a page may read of a 503
    refused = push(server_port, "/web", "[1]", headers={"Origin": ORIGIN})  # errors too, so a page can read them
    assert refused.status == 400 and refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in allowed.headers  # not without cors.credentials
    device = push(server_port, "/web", '{"a": 2}')  # no Origin: not a browser, no CORS headers but Vary
    assert device.status == 200 and device.headers["Vary"] == "Origin", device
    assert not any(name.startswith("Access-Control-") for name in device.headers), device
    assert isinstance(ch, DataChannel) and ch.messages(2) == [{"a": 1}, {"a": 2}]
    assert_sentinel_next_on_channels(sender(server_port, "/web"), ch)


def test_cors_refuses_a_page_of_another_origin_before_its_body(host: PluginHost, server_port: int) -> None:
    """A browser sends a "simple" request (text/plain, a form) without a preflight, from any page: the browser only
    hides the answer. The endpoint refuses it (403, from the head: a large body is not read) and delivers nothing."""
    ch = host.start_source("r1", "s1", {"datasource": "/web", "cors": CORS})
    evil = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    other = push(server_port, "/web", '{"a": 2}', headers=evil)
    assert other.status == 403 and "'https://evil.example' may not push to /web" in other.body["error"], other
    assert other.headers["Vary"] == "Origin" and "Access-Control-Allow-Origin" not in other.headers, other
    with RawClient(server_port) as conn:
        conn.send(request(path="/web", headers={**evil, "Content-Length": str(11 * 1024 * 1024)}))
        big = conn.read_response()
    assert big.status == 403 and big.closes, big
    assert isinstance(ch, DataChannel)
    assert_sentinel_next_on_channels(sender(server_port, "/web"), ch)


def test_cors_credentials(host: PluginHost, server_port: int) -> None:
    """``credentials: true``: a page may fetch with ``credentials: "include"`` (cookies, HTTP authentication, TLS
    client certificates); the browser needs ``Access-Control-Allow-Credentials: true`` on the preflight and on the
    answer, or it blocks both. Never with ``origins: ["*"]``."""
    ch = host.start_source("r1", "s1", {"datasource": "/web", "cors": {**CORS, "credentials": True}})
    preflight = push(server_port, "/web", b"", method="OPTIONS",
                     headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Credentials"] == "true", preflight
    for body, status in (('{"a": 1}', 200), ("[1]", 400)):
        answer = push(server_port, "/web", body, headers={"Origin": ORIGIN})
        assert answer.status == status and answer.headers["Access-Control-Allow-Credentials"] == "true", answer
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN, answer
    assert isinstance(ch, DataChannel) and ch.messages(1) == [{"a": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/web"), ch)
    for cors, words in (({"origins": ["*"], "credentials": True}, "list the origins"),
                        ({"origins": [ORIGIN], "credentials": "maybe"}, "must be true or false")):
        refused = host.start_source("r2", "s2", {"datasource": "/other", "cors": cors}, expect_ok=False)
        assert isinstance(refused, str) and "cors" in refused and words in refused, refused


def test_cors_and_request_id_on_answers_given_before_the_body(host: PluginHost, server_port: int) -> None:
    """401 (auth checked on the headers) and 413 (Content-Length over the limit) are answered before the application
    reads a body: they carry the endpoint's CORS and X-Request-Id headers too, or a page could not read them."""
    ch = host.start_source("r1", "s1", {"datasource": "/web", "cors": CORS, "meta": ["requestId"],
                                        "auth": {"type": "bearer", "tokens": ["t0ken"]}})
    ask = {"Origin": ORIGIN, "X-Request-Id": "early-1"}
    denied = push(server_port, "/web", '{"a": 1}', headers=ask)
    assert denied.status == 401 and denied.headers["Access-Control-Allow-Origin"] == ORIGIN, denied
    assert denied.headers["X-Request-Id"] == "early-1" and denied.headers["WWW-Authenticate"].startswith("Bearer")
    with RawClient(server_port) as conn:  # answered from the head: the 11 MiB body is never sent, nor read
        conn.send(request(path="/web", headers={**ask, "Authorization": "Bearer t0ken",
                                                "Content-Length": str(11 * 1024 * 1024)}))
        big = conn.read_response()
    assert big.status == 413 and big.header("Access-Control-Allow-Origin") == ORIGIN, big
    assert big.header("X-Request-Id") == "early-1" and big.closes
    nowhere = push(server_port, "/elsewhere", "{}", headers=ask)
    assert nowhere.status == 404 and "Access-Control-Allow-Origin" not in nowhere.headers  # no endpoint, no CORS
    assert isinstance(ch, DataChannel)
    assert_sentinel_next_on_channels(sender(server_port, "/web", headers={"Authorization": "Bearer t0ken"}), ch)


def test_large_bodies_refused_carry_the_endpoint_headers_too(host: PluginHost, server_port: int) -> None:
    """A body of LARGE_BODY (16 KiB) or more is decoded in a worker thread; its refusal is answered like a small
    body's."""
    ch = host.start_source("r1", "s1", {"datasource": "/web", "cors": CORS, "meta": ["requestId"]})
    big_bad = b"[" + b'{"a": 1},' * 50_000 + b"]"  # malformed at its end (a trailing comma), within the record limit
    assert len(big_bad) > LARGE_BODY
    refused = push(server_port, "/web", big_bad, headers={"Origin": ORIGIN, "X-Request-Id": "large-1"})
    assert refused.status == 400 and refused.headers["Access-Control-Allow-Origin"] == ORIGIN, refused
    assert refused.headers["X-Request-Id"] == "large-1"
    assert isinstance(ch, DataChannel)
    assert_sentinel_next_on_channels(sender(server_port, "/web"), ch)


def test_cors_off_options_is_still_405(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/plain"})
    answer = push(server_port, "/plain", b"", method="OPTIONS", headers={"Origin": ORIGIN})
    assert answer.status == 405 and answer.headers["Allow"] == "POST"
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Origin" not in push(server_port, "/plain", "{}", headers={"Origin": ORIGIN}).headers


def test_cors_on_a_template_and_disagreement_refused(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": TEMPLATE, "cors": {"origins": ["*"]}})
    answer = push(server_port, "/devices/3/telemetry", b"", method="OPTIONS", headers={"Origin": ORIGIN})
    assert answer.status == 204 and answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert answer.headers["Access-Control-Allow-Headers"] == "Content-Type"
    refused = host.start_source("r2", "s2", {"datasource": TEMPLATE}, expect_ok=False)
    assert isinstance(refused, str) and "different 'cors'" in refused and "stream s1" in refused, refused


# -- request metadata: metaHeaders, metaQuery, trustedProxies, requestId -------------------------------------------


def test_meta_headers_globs_case_insensitive(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/h", "metaHeaders": ["X-Device-*", "user-agent"]})
    headers = {"X-Device-Id": "d1", "x-device-FW": "2.1", "User-Agent": "probe/1", "X-Other": "no"}
    assert push(server_port, "/h", "{}", headers=headers).status == 200
    assert ch.take(1)[0]["meta"] == {"x-device-id": "d1", "x-device-fw": "2.1", "user-agent": "probe/1"}
    assert push(server_port, "/h", "{}", headers={"X-Device-Note": "n" * 300}).status == 200
    assert ch.take(1)[0]["meta"]["x-device-note"] == "n" * 256  # clipped like other client text


def test_meta_query_all_or_listed(host: PluginHost, server_port: int) -> None:
    every = host.start_source("r1", "s1", {"datasource": "/q", "metaQuery": True})
    listed = host.start_source("r2", "s2", {"datasource": "/q", "metaQuery": ["site"]})
    assert push(server_port, "/q?site=north&tag=a&tag=b&empty=", "{}").body == {"accepted": 1, "sources": 2}
    assert isinstance(every, DataChannel) and isinstance(listed, DataChannel)
    assert every.take(1)[0]["meta"] == {"site": "north", "tag": ["a", "b"], "empty": ""}
    assert listed.take(1)[0]["meta"] == {"site": "north"}
    assert push(server_port, "/q", "{}").status == 200  # no query: an empty meta object
    assert listed.take(1)[0]["meta"] == {}


def test_meta_trusted_proxy_forwarded_for_honoured(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/p", "meta": ["remoteAddr"],
                                        "trustedProxies": ["127.0.0.0/8", "10.0.0.0/8"]})
    cases = [({"X-Forwarded-For": "203.0.113.7, 10.1.2.3"}, "203.0.113.7"),
             ({"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}, "203.0.113.7"),  # the nearest untrusted hop
             ({"X-Forwarded-For": "unknown"}, "127.0.0.1"),
             ({}, "127.0.0.1")]
    for headers, expected in cases:
        assert push(server_port, "/p", "{}", headers=headers).status == 200
        assert ch.take(1)[0]["meta"] == {"remoteAddr": expected}, headers


def test_meta_client_cannot_name_itself_behind_a_proxy_that_appends(host: PluginHost, server_port: int) -> None:
    """Behind nginx ($proxy_add_x_forwarded_for: appended to the client's line) or HAProxy (option forwardfor: a line
    of its own after the client's), what the client wrote is left of the proxy's hop: the rightmost untrusted address
    wins, every X-Forwarded-For line counts, and Forwarded is not read unless proxyHeader says so."""
    ch = host.start_source("r1", "s1", {"datasource": "/p", "meta": ["remoteAddr"],
                                        "trustedProxies": ["127.0.0.0/8", "10.0.0.0/8"]})
    cases = [({"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}, "203.0.113.7"),  # nginx
             ({"X-Forwarded-For": "6.6.6.6", "x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),  # HAProxy
             ({"X-Forwarded-For": "6.6.6.6", "x-forwarded-for": "203.0.113.7, 10.0.0.2"}, "203.0.113.7"),
             ({"Forwarded": "for=6.6.6.6", "X-Forwarded-For": "203.0.113.7"}, "203.0.113.7"),
             ({"Forwarded": "for=6.6.6.6"}, "127.0.0.1")]
    for headers, expected in cases:
        assert push(server_port, "/p", "{}", headers=headers).status == 200
        assert ch.take(1)[0]["meta"] == {"remoteAddr": expected}, headers


def test_meta_proxy_header_forwarded(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/f", "meta": ["remoteAddr"], "proxyHeader": "forwarded",
                                        "trustedProxies": ["127.0.0.0/8", "10.0.0.0/8"]})
    cases = [({"Forwarded": 'for="[2001:db8::1]:4711";proto=https, for=10.0.0.9'}, "2001:db8::1"),
             ({"Forwarded": "for=6.6.6.6", "forwarded": "for=203.0.113.7:80"}, "203.0.113.7"),
             ({"Forwarded": "for=203.0.113.7", "X-Forwarded-For": "6.6.6.6"}, "203.0.113.7"),
             ({"X-Forwarded-For": "6.6.6.6"}, "127.0.0.1")]
    for headers, expected in cases:
        assert push(server_port, "/f", "{}", headers=headers).status == 200
        assert ch.take(1)[0]["meta"] == {"remoteAddr": expected}, headers
    bad = host.start_source("r2", "s2", {"datasource": "/x", "proxyHeader": "X-Real-IP"}, expect_ok=False)
    assert isinstance(bad, str) and "property 'proxyHeader' is 'X-Real-IP'" in bad, bad


def test_meta_untrusted_peer_forwarded_for_ignored(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/p", "meta": ["remoteAddr"], "trustedProxies": ["10.0.0.0/8"]})
    assert push(server_port, "/p", "{}", headers={"X-Forwarded-For": "203.0.113.7"}).status == 200
    assert ch.take(1)[0]["meta"] == {"remoteAddr": "127.0.0.1"}
    bad = host.start_source("r2", "s2", {"datasource": "/x", "trustedProxies": ["nope"]}, expect_ok=False)
    assert isinstance(bad, str) and "trustedProxies" in bad, bad


def test_meta_request_id_echoed_or_generated(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/id", "meta": ["requestId"]})
    given = push(server_port, "/id", "{}", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    assert ch.take(1)[0]["meta"] == {"requestId": "abc-123"}
    for headers in ({}, {"X-Request-Id": "caf\u00e9".encode().decode("latin-1")}):
        made = push(server_port, "/id", "{}", headers=headers)
        generated = made.headers["X-Request-Id"]
        assert len(generated) == 32 and generated != "abc-123"
        assert ch.take(1)[0]["meta"] == {"requestId": generated}
    refused = push(server_port, "/id", "[1]", headers={"X-Request-Id": "bad-body"})
    assert refused.status == 400 and refused.headers["X-Request-Id"] == "bad-body"
    assert_sentinel_next_on_channels(sender(server_port, "/id"), ch)


def test_meta_request_id_not_echoed_unless_configured(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/plain"})
    assert "X-Request-Id" not in push(server_port, "/plain", "{}", headers={"X-Request-Id": "abc"}).headers


def test_meta_size_cap_431_and_nothing_delivered(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/big", "metaHeaders": ["x-*"]})
    headers = {f"X-H{i}": "v" * 250 for i in range(20)}  # 20 × ~260 bytes of meta: over 4 KiB
    answer = push(server_port, "/big", "{}", headers=headers)
    assert answer.status == 431 and "4096" in answer.body["error"], answer
    assert_sentinel_next_on_channels(sender(server_port, "/big"), ch)


def test_meta_reserved_names_never_come_from_headers_or_query(host: PluginHost, server_port: int) -> None:
    """``metaHeaders: ["*"]`` and ``metaQuery: true`` skip the names the plugin fills (the facts, listed in ``meta``
    or not, and the template's variables), in any case; other headers and parameters still arrive."""
    ch = host.start_source("r1", "s1", {"datasource": "/r/{id}", "meta": ["path"], "metaHeaders": ["*"],
                                        "metaQuery": True})
    headers = {"User": "mallory", "Path": "/forged", "RemoteAddr": "6.6.6.6", "requestid": "r-1", "ID": "x",
               "Method": "GET", "X-Ok": "yes"}
    target = "/r/42?user=m&Method=PUT&contentType=a&ID=7&site=north"
    assert push(server_port, target, "{}", headers=headers).status == 200
    meta = ch.take(1)[0]["meta"]
    assert (meta["id"], meta["path"], meta["x-ok"], meta["site"]) == ("42", "/r/42", "yes", "north"), meta
    taken = {name.lower() for name in meta} & {"user", "remoteaddr", "requestid", "method", "contenttype"}
    assert not taken, meta
    assert_sentinel_next_on_channels(sender(server_port, "/r/7"), ch)


def test_meta_reserved_names_named_in_the_config_refused_at_start(host: PluginHost, server_port: int) -> None:
    answer = host.start_source("r1", "s1", {"datasource": "/a", "metaHeaders": ["X-Site", "User"]}, expect_ok=False)
    assert isinstance(answer, str) and "property 'metaHeaders' has 'user'" in answer and "meta(user)" in answer, answer
    answer = host.start_source("r2", "s2", {"datasource": "/d/{site}", "metaQuery": ["site"]}, expect_ok=False)
    assert isinstance(answer, str) and "property 'metaQuery' has 'site'" in answer and "{site}" in answer, answer
    answer = host.start_source("r3", "s3", {"datasource": "/b", "metaQuery": ["remoteaddr"]}, expect_ok=False)
    assert isinstance(answer, str) and "meta(remoteAddr)" in answer, answer
    for path in ("/d/{user}", "/d/{Path}/x"):  # a variable named like a fact: the path would choose meta(user)
        answer = host.start_source("r5", "s5", {"datasource": path}, expect_ok=False)
        assert isinstance(answer, str) and f"DATASOURCE is {path!r}; its template variable" in answer, answer
    ch = host.start_source("r4", "s4", {"datasource": "/c", "metaHeaders": ["X-User"], "metaQuery": ["username"]})
    assert push(server_port, "/c?username=u", "{}", headers={"X-User": "x"}).status == 200
    assert ch.take(1)[0]["meta"] == {"x-user": "x", "username": "u"}
