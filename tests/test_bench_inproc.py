"""bench/inproc.py keeps working: it times this tree's request path in-process (no timing is asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_inproc_bench_runs_and_checks_its_answers() -> None:
    """It exits non-zero when the request it times is not answered 200 with one record accepted, so that the timing
    of an error path cannot pass for one of the real path."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "inproc.py"), "--rounds", "1", "--requests", "200"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "this tree" in result.stdout and "µs per request" in result.stdout


def test_schema_bench_runs_and_checks_its_answers() -> None:
    """bench/schema.py exits non-zero unless the checked endpoint refuses a wrong value (422) and every variant's good
    body is answered 200 with all its records."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "schema.py"), "--rounds", "1", "--requests", "40"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "json100" in result.stdout and "check µs/record" in result.stdout
