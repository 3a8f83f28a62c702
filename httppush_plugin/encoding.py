"""``Content-Encoding``: compressed bodies, inflated as they arrive and bounded after inflation.

The connection feeds each piece of a compressed body to an :class:`Inflater` the moment it is read, telling it how
many inflated bytes the body may still grow by (``httpServerMaxBodySize`` less what it holds already). ``zlib``'s
``max_length`` stops inflating one byte past it, so a zip bomb — 10 MB of gzip that inflates to 10 GB — costs at
most the limit in memory before it is answered 413. The compressed bytes count against the same limit.

Example: ``inflater_for("gzip", 1024).feed(gzip.compress(b'{"a": 1}'), 0)`` → ``b'{"a": 1}'``;
``inflater_for("br", 1024)`` raises :class:`UnsupportedEncoding` (415).

``zstd`` (RFC 8878, as a content coding RFC 9659) is served the same way by :class:`ZstdInflater` when a decoder is
installed: Python 3.14's ``compression.zstd``, or ``backports.zstd`` (the same API) before 3.14; without one it is
415 naming what to install. Its decoder holds a window of up to :data:`ZSTD_WINDOW_MAX` bytes (8 MiB, RFC 9659's
limit for zstd in HTTP), which a frame's header declares: that memory is counted in the server's budget while the
body is read (``httpServerMaxBuffered``: 503 when it does not fit), and a frame that asks for more is 400.
"""

from __future__ import annotations

import zlib

from .answers import BadRequest, TooLarge, UnsupportedMediaType
from .budget import Budget

try:  # Python 3.14+
    from compression import zstd as _zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python
    try:
        from backports import zstd as _zstd  # type: ignore[import-not-found,no-redef]
    except ImportError:
        _zstd = None

#: ``Content-Encoding`` values served, and the ``wbits`` each starts ``zlib`` with (``deflate`` is settled by the
#: stream's first two bytes: see :meth:`Inflater._start_deflate`).
ENCODINGS: dict[str, int] = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
#: Most gzip members (streams back to back, RFC 1952 §2.2) one body may hold: each costs a new ``zlib`` stream; a
#: client that compresses its body in pieces makes a few, and no sane one makes a thousand.
MAX_GZIP_MEMBERS = 1000
#: Bytes handed to ``zlib`` at the start of each member (see :meth:`Inflater.feed`).
_FIRST_WINDOW = 256
#: The largest window a zstd frame may ask for (2**23, 8 MiB): RFC 9659 §3 caps zstd in HTTP there.
ZSTD_WINDOW_LOG_MAX = 23
ZSTD_WINDOW_MAX = 1 << ZSTD_WINDOW_LOG_MAX
#: What a zstd decoder holds besides its window (a block's input and output buffers, its tables), counted with it.
ZSTD_DECODER_BYTES = 256 * 1024
#: Means "not encoded" (RFC 9110 §8.4.1).
IDENTITY = "identity"


class UnsupportedEncoding(UnsupportedMediaType):
    """415: a ``Content-Encoding`` the server does not speak."""


def inflater_for(content_encoding: str, limit: int, budget: Budget | None = None) -> Inflater | ZstdInflater | None:
    """The inflater for a request's ``Content-Encoding`` value, for bodies of at most ``limit`` bytes inflated (zstd:
    its decoder's window counted in ``budget``);
    ``None`` for ``identity`` (or nothing); raises :class:`UnsupportedEncoding` for any other, and for a list of
    several (``gzip, gzip``)."""
    name = content_encoding.strip().lower()
    if not name or name == IDENTITY:
        return None
    if name == "zstd":
        if _zstd is None:
            raise UnsupportedEncoding("Content-Encoding 'zstd' is not supported by this installation: no zstd decoder "
                                      "is installed (Python 3.14+, or the backports.zstd package before 3.14); send "
                                      f"the body as is (identity) or encoded with one of: {_supported()}")
        return ZstdInflater(limit, budget)
    if name not in ENCODINGS:
        raise UnsupportedEncoding(f"Content-Encoding {content_encoding.strip()[:100]!r} is not supported; send the "
                                  f"body as is (identity) or encoded with one of: {_supported()}")
    return Inflater(name.removeprefix("x-"), limit)


def _supported() -> str:
    names = [name for name in ENCODINGS if not name.startswith("x-")]
    return ", ".join(names + ["zstd"] if _zstd is not None else names)


class Inflater:
    """One request body's ``zlib`` stream (gzip, deflate). :meth:`feed` each piece as it arrives, :meth:`finish` at
    the end."""

    __slots__ = ("name", "limit", "_zlib", "_head", "_window", "members")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._zlib: zlib._Decompress | None = zlib.decompressobj(ENCODINGS[name]) if name == "gzip" else None
        self._head = b""  # deflate: the first byte, until the second settles zlib or raw
        self.members = 1  # gzip: the members begun so far
        self._window = 1 << 62  # the input handed to zlib at once: all of it, until a second member begins (feed)

    def release(self) -> int:
        """The budget bytes the decoder holds beyond the body, given back by the caller (zlib's: none)."""
        return 0

    def feed(self, data: bytes, held: int) -> bytes:
        """The inflated bytes of ``data``, the body holding ``held`` inflated bytes already; raises :class:`TooLarge`
        once it would grow past ``limit`` or past :data:`MAX_GZIP_MEMBERS` members, and :class:`BadRequest` for a
        corrupt stream."""
        stream = self._zlib
        if stream is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            stream = self._start_deflate(data)
        room = self.limit - held
        out: list[bytes] = []
        # The input is walked by offset, handed to zlib a window at a time: at a member's end zlib copies what is
        # left of its input into ``unused_data``, so the window bounds that copy (handing it all the rest would make
        # a body of many tiny members cost its length squared). From the second member on, the window starts small
        # at each member and doubles while the member goes on: a member costs O(its size), a large one O(log) calls.
        # The first member (most bodies have one) gets all the input at once.
        view, offset, window = memoryview(data), 0, self._window
        while offset < len(data):
            if stream.eof:  # gzip allows several members back to back (RFC 1952 §2.2); deflate one stream
                if self.name != "gzip":
                    raise BadRequest("the deflate body goes on after its compressed stream ends")
                self.members += 1
                if self.members > MAX_GZIP_MEMBERS:
                    raise TooLarge(f"body has more than {MAX_GZIP_MEMBERS} gzip members (streams back to back); "
                                   f"the limit is {MAX_GZIP_MEMBERS} (Content-Encoding gzip)")
                stream = self._zlib = zlib.decompressobj(ENCODINGS["gzip"])
                window = _FIRST_WINDOW
            piece_in = view[offset:offset + window]
            try:
                piece = stream.decompress(piece_in, room + 1)
            except zlib.error as exc:
                raise BadRequest(f"the body is not valid {self.name} (Content-Encoding): {exc}") from None
            room -= len(piece)
            if room < 0:
                raise TooLarge(f"body inflates to over {self.limit} bytes, the limit (httpServerMaxBodySize; "
                               f"Content-Encoding {self.name})")
            if piece:
                out.append(piece)
            # what zlib did not take: left over past a member's end, or held back by max_length (room ran out)
            offset += len(piece_in) - len(stream.unused_data) - len(stream.unconsumed_tail)
            window *= 2
        self._window = window
        return out[0] if len(out) == 1 else b"".join(out)

    def finish(self) -> None:
        """The body is complete: its compressed stream must be too (nothing sent at all is an empty body)."""
        if self._zlib is None and not self._head:
            return
        if self._zlib is None or not self._zlib.eof:
            raise BadRequest(f"the {self.name} body ends before its compressed stream does (Content-Encoding)")

    def _start_deflate(self, head: bytes) -> zlib._Decompress:
        """``deflate`` is meant to be a zlib stream (RFC 9110 §8.4.1.2), but some clients send raw deflate; a zlib
        stream starts with a header whose first byte names method 8 and whose first two bytes are a multiple of 31
        (RFC 1950 §2.2). A raw stream's first byte rarely looks like that: its low bits are a block header."""
        zlib_header = head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0
        self._zlib = stream = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        self._head = b""
        return stream


class ZstdInflater:
    """One request body's zstd frames (RFC 8878 §3: frames back to back, skippable ones included), each decoded by
    a fresh decoder whose window is checked and counted in the budget before it is started. The interface of
    :class:`Inflater`, plus :meth:`release`."""

    __slots__ = ("name", "limit", "members", "reserved", "_budget", "_stream", "_pending", "_window")

    def __init__(self, limit: int, budget: Budget | None) -> None:
        self.name = "zstd"
        self.limit = limit
        self.members = 0  # the frames begun so far
        self.reserved = 0  # budget bytes taken for the decoder's window
        self._budget = budget
        self._stream = None  # the current frame's decoder; None between frames
        self._pending = b""  # the start of a frame whose header is not complete yet
        self._window = 1 << 62  # the input handed to the decoder at once (see Inflater.feed)

    def feed(self, data: bytes, held: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending + data, b""
        room = self.limit - held
        out: list[bytes] = []
        view, offset, window, stream = memoryview(data), 0, self._window, self._stream
        while offset < len(data):
            if stream is None:  # a frame begins: its header says the window it needs
                need = _frame_window(data[offset:offset + _FRAME_HEAD_MAX])
                if need is None:
                    self._pending = bytes(data[offset:])
                    break
                stream = self._start_frame(need)
                window = _FIRST_WINDOW if self.members > 1 else window
            piece_in = view[offset:offset + window]
            try:
                piece = stream.decompress(piece_in, room + 1)
            except _zstd.ZstdError as exc:
                raise BadRequest(f"the body is not valid zstd (Content-Encoding): {_zstd_problem(exc)}") from None
            room -= len(piece)
            if room < 0:
                raise TooLarge(f"body inflates to over {self.limit} bytes, the limit (httpServerMaxBodySize; "
                               "Content-Encoding zstd)")
            if piece:
                out.append(piece)
            if stream.eof:  # what follows the frame is the next one's
                offset += len(piece_in) - len(stream.unused_data)
                stream = None
            else:
                offset += len(piece_in)
            window *= 2
        self._stream, self._window = stream, window
        return out[0] if len(out) == 1 else b"".join(out)

    def finish(self) -> None:
        """As :meth:`Inflater.finish`; a few bytes after the last frame that cannot begin one are named as such."""
        if self._pending and self.members and not _starts_frame(self._pending):
            raise BadRequest(f"the zstd body goes on after its last frame with {len(self._pending)} bytes that are "
                             "not a zstd frame (Content-Encoding)")
        if self.members == 0 or self._stream is not None or self._pending:
            raise BadRequest("the zstd body ends before its compressed frame does (Content-Encoding)")

    def release(self) -> int:
        """The budget bytes taken for the decoder (the caller gives them back), once."""
        reserved, self.reserved = self.reserved, 0
        self._stream = None
        return reserved

    def _start_frame(self, need: int) -> object:
        self.members += 1
        if self.members > MAX_GZIP_MEMBERS:
            raise TooLarge(f"body has more than {MAX_GZIP_MEMBERS} zstd frames; the limit is {MAX_GZIP_MEMBERS} "
                           "(Content-Encoding zstd)")
        if need > ZSTD_WINDOW_MAX:
            raise BadRequest(f"the zstd frame asks for a {need}-byte window; the limit is {ZSTD_WINDOW_MAX} bytes "
                             "(8 MiB, RFC 9659): compress with a smaller window (e.g. zstd without --long)")
        need += ZSTD_DECODER_BYTES if need else 0
        if self._budget is not None and need > self.reserved:  # one decoder at a time: the largest one counts
            if not self._budget.take(need - self.reserved):
                raise self._budget.full()
            self.reserved = need
        return _zstd.ZstdDecompressor(options={_zstd.DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG_MAX})


#: The most bytes a zstd frame header takes up to its window (magic 4, descriptor 1, dictionary id 4, size 8).
_FRAME_HEAD_MAX = 17
_ZSTD_MAGIC = 0xFD2FB528


def _frame_window(head: bytes) -> int | None:
    """The window a zstd frame starting with ``head`` needs (RFC 8878 §3.1.1.1): its Window_Descriptor, or for a
    single-segment frame its content size; 0 for a skippable frame or bytes that are no frame (the decoder then names
    the problem); None while ``head`` is too short to tell."""
    if len(head) < 5:
        return None if len(head) < 4 or int.from_bytes(head[:4], "little") == _ZSTD_MAGIC else 0
    if int.from_bytes(head[:4], "little") != _ZSTD_MAGIC:
        return 0
    descriptor = head[4]
    if not descriptor & 0x20:  # Window_Descriptor follows: exponent and mantissa
        if len(head) < 6:
            return None
        base = 1 << (10 + (head[5] >> 3))
        return base + (base >> 3) * (head[5] & 7)
    start = 5 + (0, 1, 2, 4)[descriptor & 3]  # after the Dictionary_ID
    size_bytes = (1, 2, 4, 8)[descriptor >> 6]
    if len(head) < start + size_bytes:
        return None
    return int.from_bytes(head[start:start + size_bytes], "little") + (256 if size_bytes == 2 else 0)


def _starts_frame(head: bytes) -> bool:
    """Whether ``head`` can begin a zstd frame (magic 0xFD2FB528) or a skippable one (0x184D2A5?), little-endian."""
    if _ZSTD_MAGIC.to_bytes(4, "little").startswith(head[:4]):
        return True
    return head[0] & 0xF0 == 0x50 and b"\x2a\x4d\x18".startswith(head[1:4])


def _zstd_problem(exc: Exception) -> str:
    text = str(exc).removeprefix("Unable to decompress Zstandard data: ")
    if "too much memory" in text:  # the frame's window is over window_log_max (single-segment frames are checked too)
        text += f" (its window is over {ZSTD_WINDOW_MAX} bytes, the limit: RFC 9659)"
    return text
