"""A few seconds of bench/run.py --smoke, so that `make bench` keeps working. No timing is asserted: only that
every target was measured (the ceiling included), that the host counted at least every record our plugin accepted,
and that the host's source read every record the ceiling wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.realhost import require_kuiperd

pytestmark = pytest.mark.realhost
ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke(zips: dict[str, Path], tmp_path: Path) -> None:
    require_kuiperd()
    if shutil.which("wrk") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is not installed (apt-get install wrk); .ci/run installs it")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    out = tmp_path / "runs.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = {run["target"]: run for run in json.loads(out.read_text())}
    assert set(runs) == {"plugin", "builtin", "floor", "ceiling"}
    assert all(run["accepted"] > 0 for run in runs.values())
    assert all(run["rps"] > 0 for target, run in runs.items() if target != "ceiling")  # the ceiling has no requests
    assert runs["plugin"]["host_records"] >= runs["plugin"]["accepted"]
    # the host read every record the ceiling wrote (its rule may drop some after the source when saturated)
    assert runs["ceiling"]["read_by_source"] == runs["ceiling"]["accepted"]
    assert "| 1-record JSON" in result.stdout and "a/b req/s" in result.stdout and "a/d records/s" in result.stdout
