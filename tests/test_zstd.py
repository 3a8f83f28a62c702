"""``Content-Encoding: zstd``: the same promise as gzip (inflated as it arrives, output bounded per step, a bomb 413 in
bounded memory), plus what zstd adds: frames back to back (skippable ones too), the window a frame asks for (at most
8 MiB, RFC 9659, counted in the server's budget while the body is read), and a plugin without a zstd decoder (415
naming the package). In-process, and over real HTTP against the installed plugin (emulated host)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from harness.procstat import rss_mb
from httppush_plugin.answers import HttpError
from httppush_plugin.budget import Budget
from httppush_plugin.encoding import ZSTD_DECODER_BYTES, ZSTD_WINDOW_MAX, ZstdInflater, inflater_for
from tests.hostemu import PluginHost
from tests.support.bombs import BOMB_PEAK_RSS_MB, bomb_pieces, push_bomb
from tests.support.http import RawClient, push, sender
from tests.support.metrics import gauge
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.wait import wait_until

zstd = pytest.importorskip("compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd",
                           reason="no zstd decoder installed (pip install -r requirements-optional.txt)")

BODY = b'[{"id": 1, "t": 20.5}, {"id": 2, "t": 21}, {"id": 3, "t": 19.25}]'
RECORDS = [{"id": 1, "t": 20.5}, {"id": 2, "t": 21}, {"id": 3, "t": 19.25}]
#: A skippable frame (RFC 8878 §3.1.2): magic 0x184D2A5?, a 4-byte length, that many bytes the decoder skips.
SKIPPABLE = b"\x5a\x2a\x4d\x18\x03\x00\x00\x00abc"


def streamed(data: bytes, **options: int) -> bytes:
    """``data`` as one frame written by a streaming encoder: no content size, the window its level (or
    ``window_log``) sets."""
    params = {getattr(zstd.CompressionParameter, name): value for name, value in options.items()}
    packer = zstd.ZstdCompressor(options=params or None)
    return packer.compress(data) + packer.flush()


def _inflate(data: bytes, limit: int = 1 << 20, step: int = 1, budget: Budget | None = None) -> bytes:
    inflater = inflater_for("zstd", limit, budget)
    assert isinstance(inflater, ZstdInflater)
    out = b""
    for start in range(0, len(data), step):
        out += inflater.feed(data[start:start + step], len(out))
    inflater.finish()
    return out


# -- in-process ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [1, 5, 1 << 20])
def test_zstd_any_piece_sizes(step: int) -> None:
    assert _inflate(zstd.compress(BODY), step=step) == BODY
    assert _inflate(streamed(BODY), step=step) == BODY
    frames = zstd.compress(BODY[:10]) + SKIPPABLE + streamed(BODY[10:40]) + zstd.compress(BODY[40:])
    assert _inflate(frames, step=step) == BODY
    assert inflater_for("ZSTD", 1) is not None


def test_zstd_many_frames_cost_linear() -> None:
    """1000 frames (the limit) in one piece: each frame gets a small window of the input, not all the rest."""
    frames = b"".join(zstd.compress(b'{"i":%d}\n' % i) for i in range(1000))
    assert _inflate(frames, step=len(frames)).count(b"\n") == 1000


@pytest.mark.parametrize("data, status, needle", [
    (zstd.compress(BODY)[:-3], 400, "the zstd body ends before its compressed frame does"),
    (zstd.compress(BODY)[:3], 400, "the zstd body ends before its compressed frame does"),
    (b"", 400, "the zstd body ends before its compressed frame does"),
    (zstd.compress(BODY) + b"xy", 400, "the zstd body goes on after its last frame with 2 bytes that are not a zstd "
                                       "frame"),
    (zstd.compress(BODY) + b"garbage!", 400, "the body is not valid zstd (Content-Encoding): Unknown frame descriptor"),
    (BODY, 400, "the body is not valid zstd (Content-Encoding)"),
    (zstd.compress(b" " * 2001), 413, "body inflates to over 2000 bytes, the limit (httpServerMaxBodySize; "
                                      "Content-Encoding zstd)"),
    (zstd.compress(b"{}") * 1001, 413, "body has more than 1000 zstd frames; the limit is 1000"),
    (streamed(b"x" * 100, window_log=24), 400, f"the zstd frame asks for a 16777216-byte window; the limit is "
                                               f"{ZSTD_WINDOW_MAX} bytes (8 MiB, RFC 9659)"),
])
def test_zstd_refusals(data: bytes, status: int, needle: str) -> None:
    for step in (1, 7, len(data) or 1):
        with pytest.raises(HttpError, match=re.escape(needle)) as caught:
            _inflate(data, limit=2000, step=step)
        assert caught.value.status == status, (step, caught.value)


def test_zstd_window_counted_in_the_budget() -> None:
    """The window a frame declares, plus the decoder's own buffers, is taken from the budget before the frame is
    decoded, the largest frame's once, and given back by release() once; a window that does not fit is 503."""
    budget = Budget(64 << 20)
    inflater = inflater_for("zstd", 4 << 20, budget)
    assert isinstance(inflater, ZstdInflater)
    small, large = zstd.compress(BODY), streamed(BODY, window_log=22)  # declared: len(BODY), then 4 MiB
    assert inflater.feed(small, 0) == BODY
    assert budget.used == inflater.reserved == len(BODY) + ZSTD_DECODER_BYTES
    assert inflater.feed(large, len(BODY)) == BODY
    assert budget.used == inflater.reserved == (4 << 20) + ZSTD_DECODER_BYTES
    assert inflater.feed(small, 2 * len(BODY)) == BODY
    assert budget.used == (4 << 20) + ZSTD_DECODER_BYTES  # still the largest
    inflater.finish()
    assert inflater.release() == (4 << 20) + ZSTD_DECODER_BYTES and inflater.release() == 0
    full = Budget(4 << 20)
    with pytest.raises(HttpError, match="httpServerMaxBuffered") as caught:
        _inflate(large, budget=full)
    assert caught.value.status == 503 and full.used == 0


def test_zstd_without_a_decoder_is_415() -> None:
    """A python without compression.zstd and backports.zstd: 415 naming the package, and zstd left out of the list
    of encodings served."""
    code = ("import sys; sys.modules['compression.zstd'] = None; sys.modules['backports.zstd'] = None\n"
            "from httppush_plugin.encoding import inflater_for\n"
            "from httppush_plugin.answers import HttpError\n"
            "try:\n    inflater_for('zstd', 100)\nexcept HttpError as exc:\n    print(exc.status, exc)\n"
            "try:\n    inflater_for('br', 100)\nexcept HttpError as exc:\n    print(exc.status, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    zstd_line, br_line = out.splitlines()
    assert zstd_line.startswith("415 Content-Encoding 'zstd' is not supported by this installation: no zstd decoder "
                                "is installed (Python 3.14+, or the backports.zstd package before 3.14)"), out
    assert br_line.endswith("encoded with one of: gzip, deflate"), out


# -- over HTTP, the installed plugin ---------------------------------------------------------------------------

def test_zstd_bodies_decode(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/z"})
    for data in (zstd.compress(BODY), streamed(BODY), zstd.compress(BODY[:20]) + SKIPPABLE + zstd.compress(BODY[20:])):
        reply = push(server_port, "/z", data, headers={"Content-Encoding": "zstd"})
        assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
        assert ch.messages(3) == RECORDS
    ndjson = b"".join(zstd.compress(b'{"id": %d}\n' % i) for i in range(3))  # a frame per line, as a log shipper does
    reply = push(server_port, "/z", ndjson,
                 headers={"Content-Encoding": "zstd", "Content-Type": "application/x-ndjson"})
    assert reply.body == {"accepted": 3, "sources": 1}
    assert ch.messages(3) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert_sentinel_next_on_channels(sender(server_port, "/z", headers={"Content-Encoding": "zstd"}), ch,
                                     body=zstd.compress(b'{"sentinel": "zstd"}'), record={"sentinel": "zstd"})
    assert gauge(server_port, "httppush_buffered_bytes") == 0  # every decoder's window given back once answered


def test_zstd_refusals_over_http(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/z"})
    cases = [
        (zstd.compress(BODY)[:-4], 400, "the zstd body ends before its compressed frame does (Content-Encoding)"),
        (zstd.compress(BODY) + b"garbage!", 400, "Unknown frame descriptor"),
        (streamed(BODY, window_log=25), 400, "asks for a 33554432-byte window; the limit is 8388608 bytes"),
        (b"".join([zstd.compress(b"")] * 1001), 413, "more than 1000 zstd frames"),
        (zstd.compress(b"[" + b"1," * (6 << 20) + b"1]"), 413, "inflates to over 10485760 bytes"),
    ]
    for data, status, needle in cases:
        reply = push(server_port, "/z", data, headers={"Content-Encoding": "zstd"})
        assert reply.status == status and needle in reply.body["error"], reply.body
    assert_sentinel_next_on_channels(sender(server_port, "/z"), ch)  # nothing of any refused body was emitted
    assert gauge(server_port, "httppush_buffered_bytes") == 0  # the decoders' windows given back on every refusal


def _bomb() -> Iterator[bytes]:
    """``BOMB_SIZE`` zeros as one zstd frame, piece by piece (no content size in its header)."""
    packer = zstd.ZstdCompressor(level=3)
    return bomb_pieces(packer.compress, packer.flush)


def test_zstd_bomb_refused_with_bounded_memory(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/z"})
    pushed = push_bomb(server_port, host.process.pid, "/z", "zstd", _bomb())
    answer, peak = pushed.answer, pushed.rss_peak_mb
    print(f"\nzstd bomb: {pushed.sent} compressed bytes sent in {pushed.seconds:.2f} s; plugin RSS "
          f"{pushed.rss_before_mb:.1f} MB before, peak {peak:.1f} MB")
    assert answer.status == 413, answer
    assert "inflates to over 10485760 bytes" in answer.json()["error"]
    assert peak < BOMB_PEAK_RSS_MB, f"the plugin's peak RSS reached {peak:.1f} MB refusing the bomb"
    assert_sentinel_next_on_channels(sender(server_port, "/z"), ch)


def test_zstd_windows_bounded_by_the_budget(make_host: Callable[..., PluginHost], server_port: int) -> None:
    """Clients that each open a zstd frame declaring the largest window (8 MiB) and stall: each window is held in
    the budget (httpServerMaxBuffered, 40 MiB here), so the fifth is 503 with Retry-After, and memory stays bounded
    however many try; once they go, the budget is whole again."""
    host = make_host(server_port, PYHTTPPUSH_SERVER_MAX_BUFFERED=str(40 << 20))
    ch = host.start_source("r1", "s1", {"datasource": "/z"})
    head = streamed(b"x" * 100, window_log=23)[:12]  # the frame's header and the start of its first block
    pid = host.process.pid
    before = rss_mb(pid)
    stalled: list[RawClient] = []
    try:
        for _ in range(4):  # 4 × (8 MiB + the decoder's 256 KiB) = 33 MiB fit in 40
            conn = RawClient(server_port, timeout=10)
            stalled.append(conn)
            conn.send(b"POST /z HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: zstd\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n%X\r\n%s\r\n" % (len(head), head))
        with RawClient(server_port, timeout=10) as fifth:
            fifth.send(b"POST /z HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: zstd\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n%X\r\n%s\r\n" % (len(head), head))
            answer = fifth.read_response(timeout=10)
        assert answer.status == 503 and answer.header("Retry-After"), answer
        assert "httpServerMaxBuffered" in answer.json()["error"], answer
        assert not any(conn.has_data() for conn in stalled)  # the four are still being read
        window = ZSTD_WINDOW_MAX + ZSTD_DECODER_BYTES
        assert gauge(server_port, "httppush_buffered_bytes") == 4 * window
        held = rss_mb(pid)
    finally:
        for conn in stalled:
            conn.close()
    print(f"\nzstd windows: plugin RSS {before:.1f} MB before, {held:.1f} MB with 4 stalled 8 MiB-window frames")
    # the windows are given back when their connections close: a fifth fits again
    wait_until(lambda: gauge(server_port, "httppush_buffered_bytes") == 0, 10, "the windows to be given back")
    reply = push(server_port, "/z", streamed(BODY, window_log=23), headers={"Content-Encoding": "zstd"})
    assert reply.body == {"accepted": 3, "sources": 1}
    assert ch.messages(3) == RECORDS
    assert_sentinel_next_on_channels(sender(server_port, "/z"), ch)
