"""The request path's own cost, in-process: one keep-alive connection fed the bench's json1 request over and over,
with a transport that drops what is written and a channel sender that takes every frame at once. No sockets, no
eKuiper, no other process: what is left is the Python per request from the parser's first callback to the answer's
bytes, which is the part issue 13 straightened. ``make bench`` measures the whole thing under load.

    python bench/inproc.py                       # this tree
    python bench/inproc.py --tree /tmp/old       # and another checkout, alternately, with the ratio

Each round times ``--requests`` requests in each tree in turn (after a warm-up); the table shows the median µs per
request and the ratio of the medians. Trees before and after issue 13 are both understood (the application was
``handler.PushHandler`` with ``config.EndpointConfig``; it is ``app.PushApp`` with ``properties.EndpointConfig``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BODY = (b'{"id":"sensor-0042","temperature":21.53,"humidity":48.2,"pressure":1013.25,"ts":1700000000123,'
        b'"status":"ok","tags":["a","b"],"loc":{"lat":52.1,"lon":4.3}}')
REQUEST = (b"POST /api HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % len(BODY)) + BODY


class Transport:
    """What the protocol uses of an asyncio transport; writes are dropped but the last one."""

    last = b""

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.last = data

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class Sender:
    """A host channel whose kernel buffer always has room."""

    label = "rule r stream s instance 0"
    connected = True
    max_backlog = 0
    budget = None

    def send(self, frames: Any, then: Any = None) -> None:
        return None


def connection(tree: Path) -> Any:
    """A connection of ``tree``'s server with one json endpoint on /api, its sender attached."""
    sys.path.insert(0, str(tree))
    try:
        pkg = "httppush_plugin"
        routing = importlib.import_module(f"{pkg}.routing")
        decoders = importlib.import_module(f"{pkg}.decoders")
        budget = importlib.import_module(f"{pkg}.budget")
        protocol = importlib.import_module(f"{pkg}.protocol")
        try:  # after issue 13
            app_mod = importlib.import_module(f"{pkg}.app")
            props = importlib.import_module(f"{pkg}.properties")
            settings = importlib.import_module(f"{pkg}.settings")
            layout = importlib.import_module(f"{pkg}.layout")
            connections = importlib.import_module(f"{pkg}.connections")
            make_app, config_mod, paths, shared_cls = app_mod.PushApp, props, layout.SearchPaths, connections
        except ImportError:  # before: handler.py and config.py
            handler = importlib.import_module(f"{pkg}.handler")
            settings = config_mod = importlib.import_module(f"{pkg}.config")
            make_app, paths, shared_cls = handler.PushHandler, decoders.SearchPaths, protocol
    finally:
        sys.path.remove(str(tree))
    endpoint = config_mod.EndpointConfig.from_props({"datasource": "/api"})
    table = routing.EndpointTable()
    sub = routing.Subscription(endpoint, decoders.build_decoder(endpoint, paths(tree)), instance=("r", "s", 0))
    table.add(sub)
    sub.attach(Sender())
    config = settings.ServerConfig()
    shared = shared_cls.ConnectionSet(make_app(table, config), config, budget.Budget(1 << 30))
    shared.date = b"Date: Thu, 03 Dec 2026 06:00:00 GMT\r\n"
    conn = protocol.HttpConnection(shared)
    conn.connection_made(Transport())
    return conn


def worker(tree: Path, requests: int, rounds: int) -> None:
    """In a process of its own (each tree imports its own package): print µs per request for each round."""
    conn = connection(tree)
    feed = conn.data_received
    for _ in range(2000):
        feed(REQUEST)
    answer = conn.transport.last
    if not answer.startswith(b"HTTP/1.1 200 ") or not answer.endswith(b'{"accepted":1,"sources":1}'):
        raise SystemExit(f"{tree}: the request was not answered 200 with one record accepted: {answer!r}")
    gc.collect()
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            feed(REQUEST)
        print(f"{(time.perf_counter() - started) / requests * 1e6:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, help="another checkout to compare with (e.g. an older commit's)")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.requests, 1)
    trees = {"this tree": HERE.parent}
    if args.tree:
        trees["--tree"] = args.tree.resolve()
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):  # alternately, a fresh process per round and tree: drift hits both alike
        for name, tree in trees.items():
            out = subprocess.run([sys.executable, __file__, "--worker", str(tree), "--requests", str(args.requests)],
                                 check=True, capture_output=True, text=True).stdout
            times[name].append(float(out.split()[-1]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"json1 request, in-process, {args.requests} requests × {args.rounds} rounds (median µs per request)")
    for name, tree in trees.items():
        print(f"  {name:10} {medians[name]:7.2f} µs   {tree}   rounds: {' '.join(f'{t:.2f}' for t in times[name])}")
    if args.tree:
        print(f"  ratio this tree / --tree: {medians['this tree'] / medians['--tree']:.2f}")


if __name__ == "__main__":
    main()
