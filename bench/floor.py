"""The floor of the benchmark: the cheapest aiohttp server that reads a body and answers 200, nothing else.

Usage: ``python bench/floor.py PORT`` (serves until killed). Uses uvloop when the plugin would, so that the ratio
plugin/floor measures our work, not the event loop.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def handle(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(text="ok")


async def serve(port: int) -> None:
    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print(f"floor listening on {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(sys.argv[1])))
