"""What a config group can make of an endpoint, over real HTTP against the installed plugin (emulated host): path
templates, the answers a client gets (``successStatus``, ``cors``) and the request metadata records carry
(``metaHeaders``, ``metaQuery``, ``trustedProxies``, ``requestId``)."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.conftest import push
from tests.hostemu import DataChannel, PluginHost, assert_next_is_sentinel

TEMPLATE = "/devices/{id}/telemetry"
READING = {"t": 21.5}


def sender(port: int, path: str, method: str = "POST") -> Callable[[bytes], int]:
    return lambda body: push(port, path, body, method=method).status


# -- path templates ------------------------------------------------------------------------------------------------


def test_template_matches_a_segment_and_puts_it_in_meta(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": TEMPLATE})
    assert isinstance(ch, DataChannel)
    assert push(server_port, "/devices/42/telemetry", json.dumps(READING)).body == {"accepted": 1, "sources": 1}
    assert ch.take(1) == [{"message": READING, "meta": {"id": "42"}}]
    for path in ("/devices//telemetry", "/devices/4/2/telemetry", "/devices/42", "/devices/a%2Fb/telemetry"):
        assert push(server_port, path, json.dumps(READING)).status == 404, path
    assert_next_is_sentinel(sender(server_port, "/devices/7/telemetry"), ch)


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
    assert_next_is_sentinel(sender(server_port, "/devices/9/telemetry"), templated)
    assert_next_is_sentinel(sender(server_port, "/devices/all/telemetry"), literal)


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
    assert_next_is_sentinel(sender(server_port, "/devices/3/telemetry"), first, second)


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
    assert_next_is_sentinel(sender(server_port, "/devices/1/telemetry"), ch)


def test_template_malformed_is_refused(host: PluginHost) -> None:
    for path in ("/d/{}", "/d/x{id}", "/d/{a}/{a}"):
        answer = host.start_source("r1", "s1", {"datasource": path}, expect_ok=False)
        assert isinstance(answer, str) and "DATASOURCE" in answer, (path, answer)
