"""One host at a time on this machine: eKuiper's IPC paths (``/tmp/plugin_<name>.ipc``, ``/tmp/<rule>_<op>_<i>.ipc``)
carry no host identity, so the emulated host, a real eKuiper and the benchmark must not overlap. Every harness holds
this lock while its host runs; a second test run on the same machine waits instead of failing strangely."""

from __future__ import annotations

import fcntl
import os
import time
from typing import IO

LOCK_PATH = "/tmp/httppush-host.lock"
WAIT_S = 900.0


class HostLock:
    def __init__(self) -> None:
        self._file: IO[str] | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._depth == 0:
            handle = open(LOCK_PATH, "a")
            deadline = time.monotonic() + WAIT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        handle.close()
                        raise TimeoutError(
                            f"another eKuiper host (pid in {LOCK_PATH}?) held the lock for {WAIT_S}s") from None
                    time.sleep(0.2)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._file = handle
        self._depth += 1

    def release(self) -> None:
        if self._depth <= 0:
            raise RuntimeError("the host lock was released more often than it was acquired")
        self._depth -= 1
        if self._depth == 0 and self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


#: process-wide, re-entrant: fixtures nest (a module's real host while a test starts another)
HOST_LOCK = HostLock()
