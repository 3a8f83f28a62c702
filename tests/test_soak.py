"""Two minutes of `make soak` (bench/soak.py): a real eKuiper with the plugin under the soak's mixed load (every
format, gzip, auth, idempotent retries, bad bodies, slow clients) at a fixed, low rate, so that a loaded machine still
keeps up. What is checked is counted, not timed: every record answered 2xx was read by its rule's source, exactly
(with a sentinel per stream at the end); every bad request got a 4xx; no 5xx but 503 with Retry-After; the plugin
counted the same answers as the clients; its RSS stayed within ±5% and its file descriptors flat after the warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.realhost import require_kuiperd

pytestmark = pytest.mark.realhost
ROOT = Path(__file__).resolve().parents[1]
SECONDS, RATE = 120, 200


def test_soak_two_minutes(zips: dict[str, Path], tmp_path: Path) -> None:
    require_kuiperd()
    out = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", str(SECONDS), "--rate",
                             str(RATE), "--warmup", "30", "--zip", str(zips["pyhttppush"]), "--json", str(out)],
                            capture_output=True, text=True, timeout=SECONDS + 600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["passed"] and report["problem_count"] == 0, report["problems"]
    streams = report["streams"]
    assert set(streams) == {"json", "ndjson", "delim", "url", "bin", "proto", "kv", "auth", "idem"}
    for name, counts in streams.items():
        assert counts["read"] == counts["accepted"] > 1, (name, counts)  # more than the sentinel
    assert report["replays"] > 0 and report["unanswered"] == 0
    assert set(report["five_xx"]) <= {"503"}
    statuses = report["statuses"]
    bad = {kind: got for kind, got in statuses.items() if kind.startswith("bad.")}
    assert len(bad) == 12 and all(all(400 <= int(s) < 500 for s in got) for got in bad.values()), bad
    assert set(statuses["idempotent.retry"]) == {"200"} and set(statuses["idempotent.conflict"]) == {"422"}
    slow = {kind: got for kind, got in statuses.items() if kind.endswith(".slow")}
    assert slow and all(set(got) == {"200"} for got in slow.values()), slow
    assert report["plugin_statuses"] == report["client_statuses"]
    figures = report["figures"]
    assert abs(figures["plugin_rss_drift"]) <= 0.05
    assert abs(figures["plugin_fds_end"] - figures["plugin_fds_after_warmup"]) <= 3
