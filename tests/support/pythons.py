"""The CPython interpreters some tests need besides the one running them (pyenv's), and the policy when one is
missing: skip with the reason on a developer's machine, fail under ``CI=true`` (tests must not vanish silently in CI).
Used by tests/test_pythons.py (the oldest and newest supported Python end to end) and tests/test_install.py (an
install.sh that refuses Python 3.9)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def in_ci() -> bool:
    """Whether the run is CI's (``CI=true``): a missing prerequisite then fails instead of skipping."""
    return os.environ.get("CI", "").lower() == "true"


def pyenv_root() -> Path:
    """``$PYENV_ROOT``, else what ``pyenv root`` prints, else ``~/.pyenv``."""
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv:
        result = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip())
    return Path.home() / ".pyenv"


def pyenv_python(minor: str) -> Path | None:
    """The ``bin/python3`` of the newest pyenv-installed CPython ``<minor>.<patch>`` (e.g. ``3.10`` → 3.10.13), or
    None."""
    found = []
    for python in (pyenv_root() / "versions").glob(f"{minor}.*/bin/python3"):
        patch = python.parent.parent.name[len(minor) + 1:]
        if patch.isdigit() and os.access(python, os.X_OK):
            found.append((int(patch), python))
    return max(found)[1] if found else None


def require_pyenv_python(minor: str) -> Path:
    """:func:`pyenv_python` or skip the calling test with the reason — fail under ``CI=true``."""
    python = pyenv_python(minor)
    if python is None:
        reason = f"no Python {minor} under {pyenv_root()}/versions (install it with: pyenv install {minor})"
        if in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return python
