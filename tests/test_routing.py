"""The endpoint table in-process: templates, what one route's sources must agree on, replacement of a restarted
instance, and the lookups the application makes (literal, template, methods served)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from httppush_plugin.decoders import build_decoder
from httppush_plugin.errors import ConfigError
from httppush_plugin.properties import EndpointConfig
from httppush_plugin.routing import EndpointTable, Subscription, Template


@pytest.fixture(autouse=True)
def loop() -> Iterator[None]:
    """Subscriptions hold an asyncio.Event: a current loop for each test."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def sub(props: dict[str, Any], name: str = "s1") -> Subscription:
    endpoint = EndpointConfig.from_props(props)
    return Subscription(endpoint, build_decoder(endpoint, None), instance=("r", name, 0))  # type: ignore[arg-type]


def test_template_parse_match_and_params() -> None:
    template = Template.parse("/d/{site}/x/{id}")
    assert template.matches("/d/a/x/7".split("/")) and template.params("/d/a/x/7") == {"site": "a", "id": "7"}
    for path in ("/d//x/7", "/d/a/y/7", "/d/a/x/7/8"):
        assert not template.matches(path.split("/")), path
    for bad in ("/d/x{id}", "/d/{id}/{id}", "/d/{a-b}"):
        with pytest.raises(ConfigError, match="DATASOURCE is"):
            Template.parse(bad)
    assert Template.parse("/d/{a}/t").overlaps(Template.parse("/d/all/{b}")) == "/d/all/t"
    assert Template.parse("/d/{a}/t").overlaps(Template.parse("/e/{a}/t")) is None


def test_table_lookups() -> None:
    table = EndpointTable()
    table.add(sub({"datasource": "/d/{id}/t"}, "s1"))
    table.add(sub({"datasource": "/d/{id}/t", "method": "PUT"}, "s2"))
    table.add(sub({"datasource": "/d/all/t"}, "s3"))
    assert table.lookup("/d/all/t", "POST") is table.find(("/d/all/t", "POST"))
    assert table.lookup("/d/7/t", "POST") is None and table.match("/d/7/t", "POST") is not None
    assert table.methods("/d/7/t") == ["POST", "PUT"] and table.methods("/nope") == []
    assert set(table.served("/d/all/t")) == {"POST", "PUT"}  # literal POST, the template's PUT
    assert len(table) == 3


@pytest.mark.parametrize("other, needle", [
    ({"auth": {"type": "bearer", "tokens": ["t"]}}, "different 'auth' (bearer (1 token) and none)"),
    ({"successStatus": 202}, "different 'successStatus' (202 and 200)"),
    ({"cors": {"origins": ["https://a"]}}, "different 'cors'"),
    ({"idempotency": True}, "different 'idempotency' (window 300 s, maxKeys 10000 and off)"),
])
def test_table_one_route_one_answer(other: dict[str, Any], needle: str) -> None:
    """Sources on one path and method must agree on what decides the answer; the table stays as it was."""
    table = EndpointTable()
    table.add(sub({"datasource": "/a"}, "s1"))
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        table.add(sub({"datasource": "/a", **other}, "s2"))
    assert len(table) == 1


def test_table_refuses_templates_that_overlap_and_replaces_a_restarted_instance() -> None:
    table = EndpointTable()
    first = sub({"datasource": "/d/{id}/t"}, "s1")
    table.add(first)
    with pytest.raises(ConfigError, match="both would match e.g. /d/x/t"):
        table.add(sub({"datasource": "/d/{other}/{x}"}, "s2"))
    again = sub({"datasource": "/d/{id}/t"}, "s1")  # the same (rule, stream, instance) started again
    assert table.add(again) == [first]
    route = table.match("/d/1/t", "POST")
    assert route is not None and route.subscriptions == [again]
    table.remove(again)
    assert len(table) == 0 and table.match("/d/1/t", "POST") is None


def test_route_groups_decode_once_per_distinct_decoder_and_meta() -> None:
    table = EndpointTable()
    for name, props in (("s1", {}), ("s2", {}), ("s3", {"meta": ["path"]}), ("s4", {"framing": "lines"})):
        table.add(sub({"datasource": "/a", **props}, name))
    route = table.lookup("/a", "POST")
    assert route is not None
    assert sorted(len(group.subscriptions) for group in route.groups) == [1, 1, 2]
    assert not route.custom and route.exposed == "Retry-After"
    table.add(sub({"datasource": "/a", "meta": ["requestId"]}, "s5"))
    assert route.custom and route.exposed == "Retry-After, X-Request-Id"
