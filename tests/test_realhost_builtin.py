"""Prove the real-host harness (harness/realhost.py) against eKuiper's BUILT-IN httppush source, not our plugin."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.realhost import EkuiperHost, RecordSink, host_python, require_kuiperd
from tests.realhost_support import accepts
from tests.support.wait import wait_until

pytestmark = pytest.mark.realhost


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EkuiperHost]:
    """One real eKuiper host for this module."""
    require_kuiperd()
    with EkuiperHost(tmp_path_factory.mktemp("realhost-builtin")) as ekuiper:
        yield ekuiper


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordSink]:
    """A local receiver for the rules' rest sink."""
    with RecordSink() as records:
        yield records


def test_host_root_and_ports(host: EkuiperHost) -> None:
    """The host runs from its own root, on the chosen loopback ports."""
    assert host.running
    assert (host.root / "etc" / "kuiper.yaml").is_file()
    for sub in ("data", "log", "plugins/portable", "plugins/sources", "plugins/sinks", "plugins/functions"):
        assert (host.root / sub).is_dir(), sub
    assert len({host.rest_port, host.cli_port, host.data_port}) == 3
    assert host.data_port != 10081
    assert host.get("/ping", expect=200) is not None
    assert host.get("/streams") == []


def test_host_python_is_bare() -> None:
    """The host python has pip but none of the test runner's packages."""
    python = host_python()
    assert Path(python).parent.parent == Path(__file__).resolve().parent.parent / ".cache" / "hostpy"
    subprocess.run([python, "-m", "pip", "--version"], check=True, capture_output=True)
    probe = subprocess.run([python, "-c", "import pytest"], capture_output=True, text=True)
    assert probe.returncode != 0, "host python must not see the test runner's site-packages"


def test_builtin_httppush_to_record_sink(host: EkuiperHost, sink: RecordSink) -> None:
    """A record POSTed to the built-in httppush data server reaches a rest sink, and the metrics count it."""
    host.create_stream('CREATE STREAM b () WITH (TYPE="httppush", DATASOURCE="/b", FORMAT="json")')
    host.create_rule("rule_b", "SELECT * FROM b", [sink.action()])
    host.wait_rule_running("rule_b")

    # the built-in registers the endpoint when the rule starts
    wait_until(lambda: accepts(host.data_url("/b"), {"a": 1}), 10.0, "the built-in httppush endpoint to take a record")

    assert sink.wait_for(1) == [{"a": 1}]
    status = host.wait_rule_metric("rule_b", "source_b_0_records_in_total", 1)
    assert status["status"] == "running"

    host.stop_rule("rule_b")
    assert host.rule_status("rule_b")["status"] == "stopped"
    host.delete_rule("rule_b")
    host.delete_stream("b")
