"""Compression bombs for the body tests: 10 GiB of zeros compressed piece by piece as they are sent (memory stays
small on the client too), pushed chunked until the server answers, with the plugin's resident set measured around it.

Example: ``pushed = push_bomb(port, pid, "/z", "gzip", gzip_pieces())`` → ``pushed.answer.status == 413``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from harness.procstat import peak_rss_mb, reset_peak_rss, rss_mb
from tests.support.http import Answer, RawClient

#: The bomb: 10 GiB of zeros (about 10 MB of gzip on the wire in all; far less of zstd).
BOMB_SIZE = 10 * 1024**3
BOMB_PIECE = 1024 * 1024
#: What the plugin process may reach while it refuses the bomb (its default httpServerMaxBodySize is 10 MiB).
BOMB_PEAK_RSS_MB = 200


def bomb_pieces(compress: Callable[[bytes], bytes], flush: Callable[[], bytes]) -> Iterator[bytes]:
    """``BOMB_SIZE`` zeros through a streaming compressor's ``compress`` and ``flush``, piece by piece."""
    zeros = bytes(BOMB_PIECE)
    for _ in range(BOMB_SIZE // BOMB_PIECE):
        piece = compress(zeros)
        if piece:
            yield piece
    yield flush()


def gzip_pieces() -> Iterator[bytes]:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return bomb_pieces(packer.compress, packer.flush)


@dataclass
class Pushed:
    answer: Answer
    sent: int  # compressed bytes sent before the server answered (or stopped reading)
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float


def push_bomb(port: int, pid: int, path: str, encoding: str, pieces: Iterator[bytes]) -> Pushed:
    """POST ``pieces`` chunked to ``path`` with ``Content-Encoding: encoding`` until the server answers; the plugin
    process ``pid``'s resident set before and at its peak."""
    reset_peak_rss(pid)
    before = rss_mb(pid)
    sent = 0
    with RawClient(port, timeout=30) as conn:
        conn.send(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                  % (path.encode(), encoding.encode()))
        started = time.monotonic()
        for piece in pieces:  # until the server answers (or stops reading)
            if not conn.try_send(b"%X\r\n%s\r\n" % (len(piece), piece)):
                break
            sent += len(piece)
            if conn.has_data():
                break
        answer = conn.read_response(timeout=30)
    return Pushed(answer, sent, time.monotonic() - started, before, peak_rss_mb(pid))
