#!/usr/bin/env python3
"""The host's ceiling: pre-framed records written straight into a rule's data channel, as fast as the host reads.

eKuiper listens with a PULL socket on ``ipc:///tmp/{ruleId}_{opId}_{instanceId}.ipc`` for each source instance of a
portable plugin (``docs/host-behaviour.md`` §4); the plugin dials it as one PUSH peer. This sender dials the same
socket as a second PUSH peer and speaks the SP-over-IPC framing exactly as the plugin does
(``httppush_plugin/channel.py``, ``framing.py``): send the 8-byte header ``00 'S' 'P' 00 00 50 00 00``, read the
host's (PULL, ``…00 51…``), then every message is ``01 <length:u64 BE> <body>``. The records are framed once into
one large buffer that is ``sendall``-ed in a loop, so the sender costs next to nothing per record: what the host's
rule takes in is what eKuiper can take from any portable source, with the same rule and sink.

Usage: ``python bench/ceiling.py CHANNEL ENVELOPES DURATION_S`` — CHANNEL is the socket path (``/tmp/r_s_0.ipc``) or
its ``ipc://`` URL, ENVELOPES a file with one host envelope (``{"message": {…}, "meta": {…}}``) per line. Prints one
line of JSON: ``{"records": <records written>, "seconds": <time spent writing>, "bytes": …}``.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

PUSH_HEADER = b"\x00SP\x00\x00\x50\x00\x00"
PULL_PROTOCOL = 0x51
#: Bytes per sendall: enough that the loop's Python overhead is negligible, small enough that the run ends at most
#: a few milliseconds after its deadline.
BUFFER_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 10.0


def frame(body: bytes) -> bytes:
    """One SP-over-IPC message (mangos ``transport/connipc_posix.go``)."""
    return b"\x01" + len(body).to_bytes(8, "big") + body


def frames(envelopes: list[bytes], min_bytes: int = BUFFER_BYTES) -> tuple[bytes, int]:
    """The envelopes framed and repeated, in order, until the buffer holds at least ``min_bytes``; with its record
    count. Example: ``frames([b'{"message":{"a":1}}'], 100)`` → (5 frames of 28 bytes, 5)."""
    if not envelopes:
        raise ValueError("no envelopes to send")
    one_pass = b"".join(frame(e) for e in envelopes)
    repeat = max(1, -(-min_bytes // len(one_pass)))
    return one_pass * repeat, len(envelopes) * repeat


def connect(path: str, timeout: float = CONNECT_TIMEOUT_S) -> socket.socket:
    """Dial the host's PULL socket at ``path`` (waiting for it to appear) and exchange SP headers."""
    path = path.removeprefix("ipc://")
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except OSError as exc:
            sock.close()
            if time.monotonic() > deadline:
                raise ConnectionError(f"cannot connect to the host channel {path}: {exc}") from None
            time.sleep(0.05)
    sock.settimeout(timeout)
    sock.sendall(PUSH_HEADER)
    header = b""
    while len(header) < 8:
        chunk = sock.recv(8 - len(header))
        if not chunk:
            sock.close()
            raise ConnectionError(f"{path}: the host closed the channel during the SP handshake")
        header += chunk
    if header[:4] != b"\x00SP\x00" or int.from_bytes(header[4:6], "big") != PULL_PROTOCOL:
        sock.close()
        raise ConnectionError(f"{path} is not an SP PULL socket (header {header!r})")
    return sock


def pump(sock: socket.socket, buffer: bytes, records_per_buffer: int, duration: float) -> dict[str, float]:
    """Write ``buffer`` again and again for ``duration`` seconds; every write completes (blocking socket), so the
    count is exact: the records the kernel took for the host."""
    passes = 0
    start = time.monotonic()
    deadline = start + duration
    while time.monotonic() < deadline:
        sock.sendall(buffer)
        passes += 1
    seconds = time.monotonic() - start
    return {"records": passes * records_per_buffer, "seconds": seconds, "bytes": passes * len(buffer)}


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    channel, envelope_file, duration = argv[0], Path(argv[1]), float(argv[2])
    envelopes = [line for line in envelope_file.read_bytes().split(b"\n") if line]
    buffer, count = frames(envelopes)
    sock = connect(channel)
    try:
        # A host that stops reading for longer than this has a problem the bench should show, not hide.
        sock.settimeout(duration + 30)
        result = pump(sock, buffer, count, duration)
    finally:
        # Closing is safe: the host still reads what is queued in the socket before it sees the end.
        sock.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
