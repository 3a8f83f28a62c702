#!/usr/bin/env python3
"""Why the emitter does not use pynng: messages/s of one Python PUSH sender into a PULL (ipc), per send mode.

Usage: python bench/nng_send.py [N]   (prints one line per mode; the receiver runs in a spawned process, since nng
is not fork-safe). On the 2-core reference machine: 40.8k / 40.5k / 50.5k msg/s with no / 1024 / 8192 send buffer
when idle (24.7k / 32.9k / 36.7k while other tests ran): 20-40 µs per record, before any HTTP work.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import pynng

URL = "ipc:///tmp/httppush-nng-bench.ipc"
MESSAGE = b'{"message":{"device":"sensor-0042","temperature":21.53},"meta":{"path":"/x"}}'


def receive(count: int) -> None:
    with pynng.Pull0(listen=URL) as sock:
        for _ in range(count):
            sock.recv()


def run(count: int, send_buffer: int) -> None:
    receiver = mp.get_context("spawn").Process(target=receive, args=(count,))
    receiver.start()
    time.sleep(0.5)
    with pynng.Push0(send_timeout=1000) as sock:
        if send_buffer:
            sock.send_buffer_size = send_buffer
        sock.dial(URL, block=True)
        start = time.perf_counter()
        for _ in range(count):
            sock.send(MESSAGE)
        elapsed = time.perf_counter() - start
        receiver.join()
    print(f"send buffer {send_buffer:5}: {count / elapsed:9,.0f} msg/s  {elapsed / count * 1e6:5.1f} µs per send")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for buffer in (0, 1024, 8192):
        run(n, buffer)
