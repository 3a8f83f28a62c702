"""Large bodies off the event loop: decoding a body of :data:`LARGE_BODY` or more runs in a worker thread, so the loop
keeps serving other clients. Bodies of :data:`TRIM_BODY` or more take turns (one at a time: at most one such body's
records are in memory at once), smaller ones run side by side (:meth:`Offload.lane`); what each will hold is counted in
``httpServerMaxBuffered`` before it starts. After a body of :data:`TRIM_BODY` or more, freed memory goes back to the
system (glibc keeps it otherwise).

The worker holds the GIL only while it runs Python or a C call that does not let go of it (``orjson.loads``), so the
decoders keep each such call short: a JSON array is parsed a slice at a time, NDJSON a line at a time. The cyclic
garbage collector is paused while a body is decoded: building a million lists would otherwise run it again and again
over all of them (measured: 10 MiB of ``[[],[],…]`` parsed in 1.6 s with it, 0.23 s without).

Example: ``framed = await offload.decode(frame, route, data)`` inside ``async with offload.lane(len(data)):``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

T = TypeVar("T")

#: Bodies at least this large are decoded and framed in a worker thread. Below it a body holds at most ~5,500 records
#: (16 KiB of ``{}`` lines), decoded and framed on the loop in 5-11 ms on a 2-core machine under a load of 6, where one
#: ``dict(zip(...))`` took 3 µs (ten times its usual cost): a few milliseconds on a machine at rest.
LARGE_BODY = 16 * 1024
#: After a body at least this large, freed memory is given back to the system (``malloc_trim`` walks the heap).
TRIM_BODY = 1024 * 1024

_NO_WAIT = contextlib.nullcontext()

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

    def lane(self, size: int) -> AbstractAsyncContextManager[Any]:
        """What a body of ``size`` bytes waits for before it is worked on: its :attr:`turn` from
        :data:`TRIM_BODY` up (one at a time), nothing below (such bodies run side by side, their memory counted in
        ``httpServerMaxBuffered`` like the rest), so that a batch of 20 KiB never waits behind a 10 MiB body."""
        return self.turn if size >= TRIM_BODY else _NO_WAIT

    async def decode(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, the garbage collector paused meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, _without_gc, fn, *args)

    async def trim(self, size: int) -> None:
        """Give freed memory back to the system after a body of ``size`` bytes, if it is large."""
        if _malloc_trim is not None and size >= TRIM_BODY:
            await self.run(_malloc_trim, 0)


def _without_gc(fn: Callable[..., T], *args: Any) -> T:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return fn(*args)
    finally:
        if enabled:
            gc.enable()
