"""Large bodies off the event loop: decoding a body of :data:`LARGE_BODY` or more runs in a worker thread, one body at
a time, so the loop keeps serving other clients and at most one large body's records are in memory at once. Afterwards
freed memory goes back to the system (glibc keeps it otherwise).

Example: ``framed = await offload.run(frame, route, data)`` inside ``async with offload.turn:``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Bodies at least this large are decoded and framed in a worker thread.
LARGE_BODY = 1024 * 1024

_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


class Offload:
    def __init__(self) -> None:
        #: held while a large body is worked on: one at a time
        self.turn = asyncio.Lock()
        #: the tasks working on large bodies now: held here, as the loop keeps only weak references to tasks
        self.tasks: set[asyncio.Task[Any]] = set()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def start(self, work: Any) -> asyncio.Task[Any]:
        """Run the coroutine ``work`` as a task (the exchange that started it cancels it when the server stops)."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def trim(self) -> None:
        """Give freed memory back to the system after a large body."""
        if _malloc_trim is not None:
            await self.run(_malloc_trim, 0)
