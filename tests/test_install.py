"""install.sh's refusals: each names what is missing instead of ending in a pip trace."""

from __future__ import annotations

import gzip
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.net import free_port
from tests.hostemu import PluginHost, loopback_env
from tests.support.http import push
from tests.support.pythons import in_ci, pyenv_python, pyenv_root

# what install.sh needs besides python, and deliberately not cmake or a C compiler
TOOLS = ("sh", "dirname", "sed", "head", "tail", "grep", "rm", "mv", "uname", "cat", "env")


def unpack(zip_path: Path, dest: Path) -> Path:
    plugin_dir = dest / "plugins" / "portable" / "pyhttppush"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugin_dir)
    return plugin_dir


def run_install(plugin_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(plugin_dir / "install.sh")], cwd=plugin_dir, env=env, capture_output=True,
                          text=True, timeout=600)


def test_missing_python_is_named(zips: dict[str, Path], tmp_path: Path) -> None:
    plugin_dir = unpack(zips["pyhttppush"], tmp_path)
    result = run_install(plugin_dir, {**os.environ, "KUIPER__PORTABLE__PYTHONBIN": "/nonexistent/python9"})
    assert result.returncode == 1
    assert "the host's python '/nonexistent/python9' (portable.pythonBin) was not found" in result.stderr
    assert not (plugin_dir / "lib").exists()


# Only where no real 3.9 exists: a python3 that says it is 3.9.18 (code given with -c sees the patched version_info).
FAKE_PYTHON_3_9 = """#!/bin/sh
if [ "$1" = "-c" ]; then
  shift; code=$1; shift
  exec REAL -c "import sys; sys.version_info = (3, 9, 18, 'final', 0)
$code" "$@"
fi
case "$1" in -V|--version) echo "Python 3.9.18"; exit 0;; esac
exec REAL "$@"
"""


def python_3_9(bin_dir: Path) -> tuple[Path, str]:
    """``bin_dir/python3``: a link to pyenv's CPython 3.9, else (not under CI=true) a stand-in that runs this
    interpreter reporting 3.9.18 as its version. Returns the path and the version it reports."""
    real = pyenv_python("3.9")
    bin_dir.mkdir(exist_ok=True)
    python3 = bin_dir / "python3"
    if real is not None:
        python3.symlink_to(real)
        return python3, real.parent.parent.name
    if in_ci():
        pytest.fail(f"CI=true: no Python 3.9 under {pyenv_root()}/versions to check install.sh's refusal with")
    python3.write_text(FAKE_PYTHON_3_9.replace("REAL", shlex.quote(sys.executable)))
    python3.chmod(0o755)
    return python3, "3.9.18"


@pytest.mark.parametrize("named_by", ["KUIPER__PORTABLE__PYTHONBIN", "PATH"])
def test_python_older_than_3_10_refused_before_pip(zips: dict[str, Path], tmp_path: Path, named_by: str) -> None:
    """Python 3.9 (as pythonBin, or as the python3 found on PATH): one line naming the interpreter, its version, the
    floor and how to point eKuiper at another python; pip never runs."""
    plugin_dir = unpack(zips["pyhttppush"], tmp_path)
    python3, version = python_3_9(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if k != "KUIPER__PORTABLE__PYTHONBIN"}
    if named_by == "PATH":
        env["PATH"] = f"{python3.parent}:{env.get('PATH', '/usr/bin:/bin')}"
    else:
        env["KUIPER__PORTABLE__PYTHONBIN"] = str(python3)
    result = run_install(plugin_dir, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"httppush install failed: the host's python {python3} is Python {version}; "
                                    "httppush needs Python 3.10 or newer."), result.stderr
    assert "KUIPER__PORTABLE__PYTHONBIN" in result.stderr and "portable.pythonBin" in result.stderr
    assert not (plugin_dir / "install.log").exists() and not (plugin_dir / "lib").exists()


def test_python_from_host_kuiper_yaml_and_missing_pip(zips: dict[str, Path], tmp_path: Path, host_python: str) -> None:
    plugin_dir = unpack(zips["pyhttppush"], tmp_path)
    nopip = tmp_path / "nopip"
    subprocess.run([host_python, "-m", "venv", "--without-pip", str(nopip)], check=True)
    (tmp_path / "etc").mkdir()
    host_yaml = f"basic:\n  debug: false\nportable:\n  pythonBin: \"{nopip}/bin/python3\"\n"
    (tmp_path / "etc" / "kuiper.yaml").write_text(host_yaml)
    env = {k: v for k, v in os.environ.items() if k != "KUIPER__PORTABLE__PYTHONBIN"}
    result = run_install(plugin_dir, env)
    assert result.returncode == 1
    assert f"'{nopip}/bin/python3 -m pip' does not work" in result.stderr


def test_no_wheels_and_no_compiler_says_what_to_install(zips: dict[str, Path], tmp_path: Path,
                                                        host_python: str) -> None:
    """As on an ARM board or Python 3.14: pip finds no wheel for pynng and there is no cmake/cc to build it."""
    plugin_dir = unpack(zips["pyhttppush"], tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/root"), "KUIPER__PORTABLE__PYTHONBIN": host_python,
           # pip's --python-version (allowed with --target and --only-binary): there are no 3.14 wheels of pynng 0.8.1
           "PIP_PYTHON_VERSION": "3.14"}
    result = run_install(plugin_dir, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "building them (pynng) needs: cmake a-C-compiler" in result.stderr
    assert "apt-get install cmake build-essential" in result.stderr
    assert not (plugin_dir / "lib").exists()


def test_optional_packages_may_fail(zips: dict[str, Path], tmp_path: Path, host_python: str) -> None:
    """A platform where backports.zstd installs neither as a wheel nor as a build (a constraint no release meets
    stands in for it): the install succeeds and says what is missing; the plugin runs, and a zstd body gets 415
    naming the package, while gzip is served."""
    plugin_dir = unpack(zips["pyhttppush"], tmp_path)
    constraint = tmp_path / "constraints.txt"
    constraint.write_text("backports.zstd==0.0.0\n")
    env = {**os.environ, "KUIPER__PORTABLE__PYTHONBIN": host_python, "PIP_CONSTRAINT": str(constraint)}
    result = run_install(plugin_dir, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "without the optional packages of requirements-optional.txt" in result.stdout, result.stdout
    assert (plugin_dir / "lib" / "httptools").is_dir() and not (plugin_dir / "lib" / "backports").exists()
    port = free_port()
    host = PluginHost(plugin_dir, "pyhttppush", host_python, env=loopback_env(port))
    try:
        ch = host.start_source("r1", "s1", {"datasource": "/z"})
        reply = push(port, "/z", b"\x28\xb5\x2f\xfd\x20\x02\x11\x00\x00{}", headers={"Content-Encoding": "zstd"})
        assert reply.status == 415 and "backports.zstd" in reply.body["error"], reply
        assert reply.body["error"].endswith("encoded with one of: gzip, deflate"), reply
        assert push(port, "/z", gzip.compress(b'{"g": 1}'), headers={"Content-Encoding": "gzip"}).status == 200
        assert ch.messages(1) == [{"g": 1}]
    finally:
        host.close()
