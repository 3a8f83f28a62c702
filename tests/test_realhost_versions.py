"""The plugin on the other eKuiper release the Go module proxy serves, v2.4.0 — a short end-to-end smoke run by
``make test`` (so in CI). The full real-host suite (``tests/test_realhost_*.py``, the session host in
tests/conftest.py) runs on the pinned v2.4.2; ``EKUIPER_VERSION=v2.4.0 make test-real`` runs all of it on v2.4.0.

Per version: kuiperd of exactly that release (``harness.realhost.kuiperd_path(version)``: scripts/get-ekuiper.sh
with ``EKUIPER_VERSION`` set and ``KUIPERD`` ignored, built once into ``.cache/ekuiper/<version>/``), started in its
own root with dist/pyhttppush.zip installed through ``POST /plugins/portables``; every check reads the rule's output
back through a rest sink (:class:`harness.realhost.RecordSink`). No Go or a failed build: skipped locally with the
reason, a failure under ``CI=true`` (:func:`harness.realhost.require_kuiperd`).

One host per machine (harness/hostlock.py, ``/tmp/httppush-host.lock``): the lock is process-wide and re-entrant, so
inside one pytest run nothing waits for it — the danger is two hosts at once on the same IPC paths, not a deadlock.
This module's host is module-scoped: it takes the lock when it starts (after the build, which holds no lock) and
releases it when its last test ends. The session host of tests/conftest.py starts only for the tests that use it,
which conftest's ``pytest_collection_modifyitems`` runs after every other test, so the two never overlap; the
fixture below fails at once, rather than starting a second host, if this process already runs one. Another process
(a second test run, ``make bench``, ``make demo``) waits on the lock while this host lives (under a minute) and
holds it only while its own host runs, so neither side can wait for the other forever.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hostlock import HOST_LOCK
from harness.net import free_port
from harness.realhost import EkuiperHost, RecordSink, kuiperd_path, require_kuiperd
from tests.realhost_support import PLUGIN, Ctx, check_template_meta_id, realhost_env, uid
from tests.support.http import push
from tests.support.wait import wait_until

pytestmark = pytest.mark.realhost

#: eKuiper releases tested here besides the pinned one (scripts/get-ekuiper.sh's default, v2.4.2).
OTHER_VERSIONS = ("v2.4.0",)


@pytest.fixture(scope="module", params=OTHER_VERSIONS)
def v(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
      zips: dict[str, Path]) -> Iterator[Ctx]:
    """A kuiperd of the release ``request.param`` with the plugin installed, for this module's tests."""
    version: str = request.param
    require_kuiperd(version)  # builds it on first use; holds no host lock
    if getattr(HOST_LOCK, "_depth", 0):
        pytest.fail("another eKuiper host (or the emulated host) is already running in this test process: a second "
                    "one would share its IPC paths in /tmp (tests/conftest.py runs the session host's tests last)")
    port = free_port()
    with RecordSink() as sink, EkuiperHost(tmp_path_factory.mktemp(f"realhost-{version}"),
                                           extra_env=realhost_env(port), version=version) as host:
        host.install_plugin(PLUGIN, zips["pyhttppush"])
        helper = Ctx(host, sink, port)
        yield helper
        helper.cleanup()


@pytest.fixture(autouse=True)
def _fresh_sink(v: Ctx) -> None:
    v.sink.clear()


def test_host_is_that_release(v: Ctx, request: pytest.FixtureRequest) -> None:
    """The host runs the requested release's binary (the build stamps the version that ``GET /`` reports), and the
    plugin installed through REST runs on it."""
    version = request.node.callspec.params["v"]
    assert v.host.process is not None
    assert os.path.realpath(f"/proc/{v.host.process.pid}/exe") == os.path.realpath(kuiperd_path(version))
    assert v.host.get("/")["version"] == version, "rebuild: rm -rf .cache/ekuiper/" + version
    assert v.host.plugin_status(PLUGIN) == {"refCount": {}, "status": "running", "errMsg": ""}


def test_json_object_and_array(v: Ctx) -> None:
    s, path = v.stream('FORMAT="json"')
    r = v.rule(f"SELECT * FROM {s}")
    assert v.push(path, '{"a": 5, "b": 1.5, "c": "x"}').body == {"accepted": 1, "sources": 1}
    assert v.push(path, '[{"t": 1}, {"t": 2}]').body == {"accepted": 2, "sources": 1}
    assert v.sink.wait_for(3) == [{"a": 5, "b": 1.5, "c": "x"}, {"t": 1}, {"t": 2}]
    v.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 3)


def test_path_template_and_meta_id(v: Ctx) -> None:
    check_template_meta_id(v)


def test_ndjson_body(v: Ctx) -> None:
    s, path = v.stream('FORMAT="json"')
    v.rule(f"SELECT * FROM {s}")
    reply = push(v.port, path, b'{"n": 1}\r\n\n{"n": 2}\n{"n": 3}\n', headers={"Content-Type": "application/x-ndjson"})
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    assert v.sink.wait_for(3) == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_gzip_body(v: Ctx) -> None:
    s, path = v.stream('FORMAT="json"')
    v.rule(f"SELECT * FROM {s}")
    reply = push(v.port, path, gzip.compress(b'[{"z": 1}, {"z": 2}]'), headers={"Content-Encoding": "gzip"})
    assert (reply.status, reply.body) == (200, {"accepted": 2, "sources": 1})
    assert v.sink.wait_for(2) == [{"z": 1}, {"z": 2}]


def test_bad_bodies_get_400_and_nothing_arrives(v: Ctx) -> None:
    """Refused bodies reach no rule: the sentinel pushed after them is the first record the rule outputs."""
    s, path = v.stream('FORMAT="json"')
    r = v.rule(f"SELECT * FROM {s}")
    bad = v.push(path, "[1, 2]")
    assert bad.status == 400 and "element 0 is a number" in bad.body["error"]
    bad_line = push(v.port, path, b'{"n": 4}\n[5]\n', headers={"Content-Type": "application/x-ndjson"})
    assert (bad_line.status, bad_line.body) == (400, {"error": "NDJSON line 2 is an array; every line must be "
                                                               "an object"})
    v.assert_sentinel_next_in_sink(path, 0)
    v.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 1)


def test_plugin_status_shows_the_rule(v: Ctx) -> None:
    """``GET /plugins/portables/pyhttppush/status`` counts the rule once its source has started, and drops it once
    the rule is deleted and its source stopped."""
    s, path = v.stream('FORMAT="json"')
    r = v.rule(f"SELECT * FROM {s}", wait=False)
    status = wait_until(lambda: (st := v.host.plugin_status(PLUGIN))["refCount"].get(r) and st, 30.0,
                        f"refCount[{r}] in the plugin status")
    assert status["refCount"][r] == 1 and (status["status"], status["errMsg"]) == ("running", "")
    assert v.push(path, '{"k": 1}').body == {"accepted": 1, "sources": 1}
    assert v.sink.wait_for(1) == [{"k": 1}]
    v.host.delete_rule(r)
    wait_until(lambda: r not in v.host.plugin_status(PLUGIN)["refCount"], 15.0, f"{r} to leave refCount")


def test_idempotency_key_retry_reaches_the_rule_once(v: Ctx) -> None:
    """A REST-stored group with ``idempotency``: the retry is replayed, its records reach the rule once; health
    names the rule."""
    key = uid("idem")
    v.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"idempotency": {"window": 60}})
    s, path = v.stream(f'FORMAT="json", CONF_KEY="{key}"')
    r = v.rule(f"SELECT * FROM {s}")
    for replayed in (False, True):
        reply = push(v.port, path, '{"order": 1}', headers={"Idempotency-Key": "k-1"})
        assert reply.status == 200 and (reply.headers.get("Idempotent-Replayed") == "true") == replayed, reply
    assert v.sink.wait_for(1) == [{"order": 1}]
    v.assert_sentinel_next_in_sink(path, 1)
    health = push(v.port, "/healthz", b"", method="GET").body
    assert any(src["rule"] == r and src["stream"] == s for e in health["endpoints"] for src in e["sources"]), health
