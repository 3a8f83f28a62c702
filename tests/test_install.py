"""install.sh's refusals: each names what is missing instead of ending in a pip trace."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

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
