"""deploy/haproxy/haproxy.cfg as shipped: HAProxy accepts it with its built-in defaults (no variable set) and with the
addresses the cluster test gives it; docs/scaling.md names the values that matter as the file sets them. The cluster
test (tests/test_cluster.py) runs it for real. Without haproxy this skips locally and fails under CI=true."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
VARIABLES = ("LB_BIND", "NODE1_ADDR", "NODE2_ADDR", "NODE3_ADDR", "HAPROXY_ADMIN_SOCKET")


def _haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and haproxy is missing (apt-get install haproxy)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return path


@pytest.mark.parametrize("env", [{}, {"LB_BIND": "127.0.0.1:18080", "NODE1_ADDR": "127.0.0.2:10082",
                                      "NODE2_ADDR": "127.0.0.3:10082", "NODE3_ADDR": "127.0.0.4:10082",
                                      "HAPROXY_ADMIN_SOCKET": "/var/tmp/haproxy-test.sock"}], ids=["defaults", "set"])
def test_haproxy_accepts_the_config(env: dict[str, str]) -> None:
    base = {key: value for key, value in os.environ.items() if key not in VARIABLES}
    result = subprocess.run([_haproxy(), "-c", "-f", str(CONFIG)], env={**base, **env}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "WARNING" in line]
    assert not warnings, warnings


def test_every_variable_has_a_default_and_is_documented() -> None:
    text = "\n".join(line.partition("#")[0] for line in CONFIG.read_text().splitlines())
    used = set(re.findall(r'"\$\{([A-Z0-9_]+)-[^}]+\}', text))
    assert used == set(VARIABLES), used
    assert not re.search(r'\$\{[A-Z0-9_]+\}', text), "a variable without a default: the file would not run as shipped"
    doc = (ROOT / "docs" / "scaling.md").read_text()
    for name in ("LB_BIND", "NODE1_ADDR", "HAPROXY_ADMIN_SOCKET"):
        assert f"`{name}`" in doc, name


def test_the_documented_values_are_the_files() -> None:
    """docs/scaling.md quotes the health-check line, the hashing and the timeouts: they must be the file's."""
    text = CONFIG.read_text()
    doc = (ROOT / "docs" / "scaling.md").read_text()
    check_line = next(line.strip() for line in text.splitlines() if line.strip().startswith("default-server check"))
    assert f"`{check_line}`" in doc
    for directive in ("balance uri path-only depth 2", "balance hdr(X-Device-Id)", "hash-type consistent",
                      "option http-server-close", "retry-on conn-failure", "option redispatch 1", "retries 2",
                      "option httpchk GET /healthz", "http-check expect status 200"):
        assert re.search(rf"^\s+{re.escape(directive)}\s*$", text, re.M), directive
        assert directive in doc, directive
    for name, value in re.findall(r"^\s+timeout ([a-z-]+) (\S+)", text, re.M):
        assert f"| `timeout {name}` | {value.rstrip('s')} s |" in doc, (name, value)
