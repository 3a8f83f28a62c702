"""The one way a test waits: :func:`wait_until` (in ``harness/wait.py``, so that the harness waits the same way)."""

from harness.wait import wait_until

__all__ = ["wait_until"]
